"""The RMCAT suite's pure parts: the rmcat key, every case file, and the metrics checked against
values computed by hand from a synthetic record (a cell folder written here, no network)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.analysis.rmcat import analyse_cell, convergence, oscillations, verdict
from testbed.analysis.rmcatcell import crosses
from testbed.config.rmcat import CASES, parse_rmcat
from testbed.config.traffic import parse_flows
from testbed.errors import ConfigError
from testbed.experiment.spec import load_experiment
from testbed.net.traffic import download_plan
from testbed.shaping.linklog import write_header

ROOT = Path(__file__).resolve().parents[2]
CASE_FILES = sorted((ROOT / "experiments" / "rmcat").glob("*.yaml"))
S = 1_000_000_000
ORIGIN = 1_000 * S


def test_every_case_of_the_rfc_has_a_file_and_every_file_loads() -> None:
    cases = set()
    for path in CASE_FILES:
        exp = load_experiment(path)
        assert exp.rmcat is not None, path
        cases.add(exp.rmcat.case.case)
        labels = {(c.stream.stack, c.stream.abr) for c in exp.configs}
        assert {("aiortc", "remb"), ("chromium", "gcc"), ("aiortc", "budget"),
                ("chromium", "budget"), ("chromium", "accuracy_cap")} <= labels, path  # fmt: skip
    assert cases == set(CASES)
    both_ways = [p.stem for p in CASE_FILES if p.stem.endswith("-udp")]
    assert sorted(both_ways) == ["5.1-udp", "5.2-udp", "5.3-udp"]  # the RFC asks both for 5.1-5.3


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASE = """name: t
topology: {topo}
stream: {{duration_s: 30, sender: a, receiver: b}}
"""


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('rmcat: {case: "9.9"}\n', "rmcat.case", "valid: 5.1"),
    ('rmcat: {case: "5.1", criteria: {happiness: 1}}\n', "rmcat.criteria.happiness", "no such metric"),
    ('rmcat: {case: "5.1", criteria: {jain_min: 0.9}}\n', "rmcat.criteria.jain_min", "has no criterion"),
    ('rmcat: {case: "5.1"}\nset:\n  uplink.schedule: {at_end: hold, segments: [{duration_ms: 20000, rate_mbps: 1}, '
     '{duration_ms: 20000, rate_mbps: 2}, {duration_ms: 5000, rate_mbps: 1}]}\n',
     "uplink.schedule", "changes at 40 s, beyond the test's 30 s"),
    ('rmcat: {case: "5.1"}\nset:\n  uplink.schedule: {segments: [{duration_ms: 20000, rate_mbps: 1}]}\n',
     "uplink.schedule", "at_end: hold"),
    ('rmcat: {case: "5.6"}\nset:\n  cross_traffic: [{name: late, from: a, to: b, kind: tcp, start_s: 45}]\n',
     "cross_traffic.late.start_s", "45 s: the test ends at 30 s"),
    ('rmcat: {case: "5.1", bottleneck: nowhere.uplink}\n', "rmcat.bottleneck", "no such link"),
    ('rmcat: {case: "5.4"}\nset:\n  sessions: [{name: f1, sender: a, receiver: b}, {name: f2, sender: a, '
     'receiver: b, start_s: 10}]\n', "sessions.f2.stop_s", "streams until 40 s, after the test's 30 s"),
])  # fmt: skip
def test_bad_case_files_are_one_line_naming_the_key(tmp_path: Path, extra: str, key: str,
                                                    words: str) -> None:  # fmt: skip
    topo = _write(tmp_path / "t.yaml", "name: t\nhosts: [a, b]\nlinks:\n  - {name: path, between: [a, b], "
                  "uplink: {rate_mbps: 1}, downlink: {rate_mbps: 1}}\n")  # fmt: skip
    exp = _write(tmp_path / "e.yaml", BASE.format(topo=topo) + extra)
    with pytest.raises(ConfigError) as e:
        load_experiment(exp)
    assert key in e.value.key and words in e.value.message, str(e.value)


def test_a_criterion_override_and_an_added_one() -> None:
    spec = parse_rmcat(
        {"case": "5.1", "criteria": {"convergence_max_s": 30, "tcp_mbps": {"min": 1}}}, "x"
    )
    assert spec is not None
    assert spec.case.criterion("convergence_max_s").threshold == 30  # type: ignore[union-attr]
    assert spec.case.criterion("tcp_mbps").op == ">="  # type: ignore[union-attr]


def test_short_tcp_flows_follow_the_rfc_model() -> None:
    flows = parse_flows([{"name": "s0", "from": "a", "to": "b", "kind": "tcp_short", "start_on": True},
                         {"name": "s1", "from": "a", "to": "b", "kind": "tcp_short", "start_on": False}],
                        ("a", "b"), "t")  # fmt: skip
    on, off = (download_plan(f, 3000.0) for f in flows)
    assert on[0][0] == 0 and off[0][0] > 0  # ON starts at once, OFF after an idle time
    sizes = np.array([b for _, b in on + off])
    assert sizes.min() >= 30_000 and sizes.max() <= 50_000
    idle = np.array([i for i, _ in on[1:] + off[1:]])
    assert 8 < idle.mean() < 12  # exponential, mean 10 s (~600 draws)
    with pytest.raises(ConfigError, match="only a tcp_short flow"):
        parse_flows(
            [{"name": "x", "from": "a", "to": "b", "kind": "tcp", "size_kb": [1, 2]}],
            ("a", "b"),
            "t",
        )


def test_a_flow_crosses_the_links_between_its_hosts() -> None:
    links = {"a1": {"between": ["s1", "left"]}, "neck": {"between": ["left", "right"]},
             "b1": {"between": ["right", "r1"]}}  # fmt: skip
    assert crosses(links, "s1", "r1") == {("a1", "uplink"), ("neck", "uplink"), ("b1", "uplink")}
    assert ("neck", "downlink") in crosses(links, "r1", "s1")


def _frames(session: str, t0: float, t1: float, mbps: list[tuple[float, float]]) -> pd.DataFrame:
    """10 frames a second from t0 to t1; mbps: (from_s, rate) pieces; 60 ms latency."""
    t = np.round(np.arange(t0, t1, 0.1), 1)
    rate = np.array([next(r for a, r in reversed(mbps) if a <= x + 1e-9) for x in t])
    return pd.DataFrame({"session": session, "sent_first_ns": (ORIGIN + t * S).astype("int64"),
                         "wire_bytes": (rate * 1e6 / 8 * 0.1).astype("int64"), "rtx_bytes": 0,
                         "fec_bytes": 0, "latency_ns": 60_000_000, "status": "complete"})  # fmt: skip


def _synthetic_cell(cell: Path) -> None:
    """Two flows on a bottleneck of 2 Mbps that drops to 1 Mbps at 20 s; f2 joins at 10 s.
    f1: 1.0 Mbps, then 0.6 from 20 s; f2: 1.0, then 0.4 from 20 s. 40 s."""
    frames = pd.concat([_frames("f1", 0, 40, [(0, 1.0), (20, 0.6)]),
                        _frames("f2", 10, 40, [(10, 1.0), (20, 0.4)])])  # fmt: skip
    cell.mkdir(parents=True)
    frames.to_parquet(cell / "frames.parquet")
    sched = {"segments": [{"duration_ms": 20000, "rate_mbps": 2.0}, {"duration_ms": 20000, "rate_mbps": 1.0}],
             "at_end": "hold"}  # fmt: skip
    sessions = {n: {"path": {"link": "neck", "direction": "uplink"}, "stream": {"abr": "remb"},
                    "stack": {"label": "aiortc"}, "folder": f"sessions/{n}"} for n in ("f1", "f2")}  # fmt: skip
    meta = {"sessions": sessions, "cross_traffic": {}, "params": {},
            "topology": {"links": {"neck": {"between": ["l", "r"], "uplink": {"rate_mbps": 2.0, "schedule": sched},
                                            "downlink": {"rate_mbps": 2.0}}}}}  # fmt: skip
    (cell / "cell.json").write_text(json.dumps(meta))
    # f1's wire: 400 video packets of 1000 B, 50 ms; 4 originals lost, 3 of them repaired by RTX
    sent = ORIGIN + np.arange(400) * S // 10
    recv = pd.array(sent + 50_000_000, dtype="Int64")
    recv[[10, 20, 30, 40]] = pd.NA
    video = pd.DataFrame({"direction": "media", "class": "video", "ssrc": 1, "seq": np.arange(400),
                          "ip_bytes": 1000, "sent_ns": sent, "recv_ns": recv})  # fmt: skip
    rtx = pd.DataFrame({"direction": "media", "class": "rtx", "ssrc": 2, "seq": [0, 1, 2],
                        "ip_bytes": 1000, "sent_ns": sent[[10, 20, 30]] + 10**8,
                        "recv_ns": pd.array(sent[[10, 20, 30]] + 2 * 10**8, dtype="Int64")})  # fmt: skip
    rtcp = pd.DataFrame({"direction": "feedback", "class": "rtcp", "ip_bytes": [100] * 40,
                         "sent_ns": sent[::10], "recv_ns": pd.array([None] * 40, dtype="Int64")})  # fmt: skip
    folder = cell / "sessions" / "f1"
    (folder / "sender").mkdir(parents=True)
    pd.concat([video, rtx, rtcp]).to_parquet(folder / "wire.parquet")
    pd.DataFrame({"kind": "rtx", "ssrc": 2, "seq": [0, 1, 2], "original_seq": pd.array([10, 20, 30], dtype="Int64")}
                 ).to_parquet(folder / "sender" / "packets.parquet")  # fmt: skip
    # the bottleneck's log: 100 packets of 1000 B at 2 Mbps (4 ms each), queued 0..99 ms
    with open(cell / "link-neck-uplink.log", "w") as f:
        write_header(f, {"link": "neck", "direction": "uplink", "start_mono_ns": ORIGIN})
        for i in range(100):
            arrival = i * 10**8
            f.write(
                f"{i}\t{arrival}\t1000\tdeliver\t{arrival + (4 + i) * 10**6}\t{arrival}\t{arrival}\tk\n"
            )


def test_metrics_of_a_synthetic_record_match_the_hand_computed_values(tmp_path: Path) -> None:
    cell = tmp_path / "cells" / "c1"
    _synthetic_cell(cell)
    spec = parse_rmcat({"case": "5.2"}, "x")
    assert spec is not None
    row = analyse_cell(cell, spec)
    assert [e[1].split()[0] for e in row["events"]] == ["join", "capacity"]
    assert [e[0] for e in row["events"]] == [10.0, 20.0]
    f1, f2, c = row["flows"]["f1"], row["flows"]["f2"], row["cell"]
    # f1 after the join: 1.0 of a 1.0 share -> 2 s (the 2 s mean's floor); after the drop: 0.6
    # of a 0.5 share, above 1.1x: never. f2: 2 s and 2 s (0.4 of 0.5 is within [0.6, 1.1]).
    assert f1["convergence_s"] == [2.0, math.inf] and f2["convergence_s"] == [2.0, 2.0]
    assert c["jain_min"] == pytest.approx(1.0 / (2 * (0.6**2 + 0.4**2)))  # 30-40 s: 0.6 vs 0.4
    assert c["utilisation"] == pytest.approx((10 * 0.5 + 30 * 1.0) / 40)
    assert f1["rate_mbps"] == pytest.approx((20 * 1.0 + 20 * 0.6) / 40)
    assert f1["loss_before_repair_pct"] == pytest.approx(1.0)  # 4 of 400
    assert f1["loss_after_repair_pct"] == pytest.approx(0.25)  # 1 of 400 never arrived
    assert f1["packet_delay_p50_ms"] == pytest.approx(50.0)
    assert f1["feedback_overhead_pct"] == pytest.approx(100 * 4000 / 403_000)
    assert f1["frame_delay_p95_ms"] == pytest.approx(60.0)
    assert c["queue_delay_p95_ms"] == pytest.approx(np.percentile(np.arange(100), 95))
    assert f1["starved_share"] == 0.0 and f1["oscillations_per_min"] == 0.0
    assert row["verdict"] == "fail"  # f1 never converged after the drop
    assert any("convergence_max_s (f1) = never" in r for r in row["reasons"])


def test_oscillation_counts_swings_between_the_watermarks() -> None:
    fair = pd.Series([1.0] * 8)
    assert oscillations(pd.Series([0.4, 1.2, 0.8, 0.3, 1.0, 1.3, 1.2, 0.45]), fair) == 4
    assert oscillations(pd.Series([0.8] * 8), fair) == 0


def test_convergence_needs_the_rate_to_stay_in_the_band() -> None:
    rate = pd.Series([0.2, 0.2, 0.2, 0.9, 0.9, 1.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    fair = pd.Series([1.0] * 12)
    # in the band from second 7 on (the 2 s mean at 5 and 6 includes 1.5)
    assert convergence(rate, fair, [2.0], [(0.0, 12.0)], 12.0) == [6.0]


def test_not_applicable_is_said_not_passed() -> None:
    spec = parse_rmcat({"case": "6.1", "not_applicable": {"aiortc": "no priorities"}}, "x")
    assert spec is not None
    v = verdict(spec, {"f1": {}}, {"jain_min": 1.0}, {"aiortc"})
    assert v.result == "n.a." and "no priorities" in v.reasons[0]
    ecn = parse_rmcat({"case": "6.2"}, "x")
    assert (
        ecn is not None and verdict(ecn, {}, {"ecn_capable_pct": 0.0}, {"aiortc"}).result == "n.a."
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)  # fmt: skip


def test_only_cuts_the_grid_and_a_value_it_lacks_is_one_line() -> None:
    case = str(CASE_FILES[CASE_FILES.index(ROOT / "experiments" / "rmcat" / "5.1.yaml")])
    plan = _cli(
        "run", case, "--dry-run", "--only", "stream.stack=aiortc", "--only", "stream.abr=remb"
    )
    assert plan.returncode == 0, plan.stderr
    assert "2 cell(s) to run" in plan.stdout  # the two one-way delays
    bad = _cli("run", case, "--dry-run", "--only", "stream.abr=nothing")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--only" in bad.stderr and "no configuration" in bad.stderr
