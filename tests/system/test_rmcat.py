"""The RMCAT suite end to end, shortened: a capacity step, two flows, TCP competition (12 s each,
real aiortc endpoints, emulators, captures, iperf3), judged by `testbed report --rmcat`; the
metrics are checked against what the link logs and captures say independently."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from testbed.analysis.rmcat import analyse_cell, case_of
from testbed.shaping.linklog import read_header, read_link_log
from tests.conftest import ROOT
from tests.system.conftest import run_cli

TOPO = ROOT / "topologies"
STREAM = ("stream: {stack: aiortc, abr: remb, abr_params: {min_mbps: 0.15, max_mbps: 1.5}, fps: 30,"
          " bitrate_mbps: 0.15, duration_s: 12, warmup_s: 0, drain_s: 1,"
          " audio: {codec: opus, bitrate_kbps: 20}{extra}}\nrepetitions: 1\nseed: 1\n")  # fmt: skip
CASES = {
    "step": (f"name: step\ntopology: {TOPO / 'rmcat-path.yaml'}\nrmcat: {{case: \"5.1\"}}\n"
             "set:\n  uplink.schedule: {at_end: hold, segments: [{duration_ms: 6000, rate_mbps: 2},"
             " {duration_ms: 6000, rate_mbps: 0.5}]}\n" + STREAM.replace("{extra}", ", sender: a, receiver: b")),
    "two": (f"name: two\ntopology: {TOPO / 'rmcat-dumbbell.yaml'}\nrmcat: {{case: \"5.4\", bottleneck: neck.uplink}}\n"
            "set:\n  neck.uplink.rate_mbps: 2\n  sessions:\n    - {name: f1, sender: s1, receiver: r1}\n"
            "    - {name: f2, sender: s2, receiver: r2, start_s: 4, stop_s: 12}\n" + STREAM.replace("{extra}", "")),
    "tcp": (f"name: tcp\ntopology: {TOPO / 'rmcat-dumbbell.yaml'}\nrmcat: {{case: \"5.6\", bottleneck: neck.uplink}}\n"
            "set:\n  neck.uplink.rate_mbps: 2\n  neck.downlink.rate_mbps: 2\n  sessions:\n"
            "    - {name: media, sender: s1, receiver: r1}\n"
            "  cross_traffic: [{name: bulk, from: s5, to: r5, kind: tcp, cc: cubic, start_s: 2, stop_s: 11}]\n"
            + STREAM.replace("{extra}", "")),
}  # fmt: skip


def _cell(out: Path) -> Path:
    cells = [p for p in (out / "cells").iterdir() if (p / "cell.json").exists()]
    assert len(cells) == 1, cells
    return cells[0]


def test_three_shortened_cases_are_measured_and_judged(run: str, tmp_path: Path) -> None:
    root = tmp_path / "rmcat"
    for name, text in CASES.items():
        exp = tmp_path / f"{name}.yaml"
        exp.write_text(text)
        res = run_cli("run", str(exp), "-o", str(root / name), "--name", run, timeout=400)
        assert res.returncode == 0, res.stdout + res.stderr
    table = tmp_path / "rmcat.csv"
    report = run_cli("report", str(root), "--rmcat", "--csv", str(table), timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "scorecard" in report.stdout and "aiortc remb" in report.stdout
    rows = list(csv.DictReader(table.open()))
    by_case = {r["case"]: [x for x in rows if x["case"] == r["case"]] for r in rows}
    assert set(by_case) == {"5.1", "5.4", "5.6"}
    assert all(r["verdict"] in ("pass", "fail") for r in rows)

    # the step: one capacity event, where the link log puts the schedule's change
    step = _cell(root / "step")
    frames = pd.read_parquet(step / "frames.parquet")
    origin = int(frames.sent_first_ns.min())
    start = read_header(step / "link-path-uplink.log")["start_mono_ns"]
    change_s = 6.0 + (start - origin) / 1e9
    spec = case_of(root / "step")
    assert spec is not None
    analysed = analyse_cell(step, spec)
    caps = [t for t, what, _ in analysed["events"] if what.startswith("capacity")]
    assert len(caps) == 1 and abs(caps[0] - change_s) <= 1.0, (caps, change_s)
    # loss before repair counts the media packets the bottleneck dropped (RTCP too may drop)
    wire = pd.read_parquet(step / "wire.parquet")
    media = wire[wire.direction == "media"]
    lost = int(media.recv_ns.isna().sum())
    log = read_link_log(step / "link-path-uplink.log")
    drops = int(log.event.astype(str).str.startswith("drop").sum())
    assert lost <= drops <= lost + 5, (lost, drops)
    video = media[media["class"] == "video"]
    flow = analysed["flows"]["flow"]
    assert flow["loss_before_repair_pct"] == 100 * video.recv_ns.isna().mean()
    assert (wire.direction == "feedback").sum() > 0 and flow["feedback_overhead_pct"] > 0
    assert (video.recv_ns.dropna() >= video.sent_ns[video.recv_ns.notna()]).all()

    two = {r["flow"]: r for r in by_case["5.4"]}
    assert set(two) == {"f1", "f2"}
    assert 0.5 <= float(two["f1"]["jain_min"]) <= 1.0
    assert 0 < float(two["f1"]["utilisation"]) < 1.5
    tcp = by_case["5.6"][0]
    assert float(tcp["tcp_mbps"]) > 0.3 and float(tcp["tcp_share"]) > 0.15, tcp
    plot = run_cli("plot", str(root), "--rmcat", "-o", str(tmp_path / "figs"), timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert len(list((tmp_path / "figs").glob("*.png"))) == 3


def test_a_case_that_does_not_apply_runs_nothing_and_says_na(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "na.yaml"
    exp.write_text(f"name: na\ntopology: {TOPO / 'rmcat-path.yaml'}\n"
                   'rmcat: {case: "6.1", not_applicable: {aiortc: "no priorities here"}}\n'
                   + STREAM.replace("{extra}", ", sender: a, receiver: b"))  # fmt: skip
    out = tmp_path / "na"
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "not run (RFC 8867 6.1 does not apply): aiortc: no priorities here" in res.stdout
    assert not any((out / "cells").glob("*/cell.json"))
    report = run_cli("report", str(out), "--rmcat")
    assert report.returncode == 0, report.stderr
    assert "6.1 aiortc remb: n.a. — aiortc: no priorities here" in report.stdout
    assert json.loads((out / "run.json").read_text())["experiment"] == "na"
