"""Several media sessions in one cell, on a routed dumbbell: real aiortc endpoints, captures,
emulators. Two flows share the bottleneck, the later one joins when told, each has its own
tables, and their packets add up to what the bottleneck delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import errors
from testbed.config import load_topology
from testbed.rtc.capture import read_pcap
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_link_log
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of

DUMBBELL = ROOT / "topologies" / "dumbbell.yaml"
TWO = ("sessions=[{name: a, sender: s1, receiver: r1},"
       " {name: b, sender: s2, receiver: r2, start_s: 4}]")  # fmt: skip


def test_two_flows_share_the_bottleneck_and_add_up_to_its_log(run: str, tmp_path: Path) -> None:
    topo = load_topology(DUMBBELL, [TWO, "a2.uplink.delay_ms=15", "a2.downlink.delay_ms=15"])
    spec = parse_stream({"bitrate_mbps": 1.0, "duration_s": 8.0}, "test")
    result = run_stream(topo, spec, tmp_path, make_backend("emu"), "test", run=run, seed=3)
    assert namespaces_of(run) == []
    cell = json.loads((tmp_path / "cell.json").read_text())
    assert set(cell["sessions"]) == {"a", "b"}
    addr = {"s1": "10.77.0.1", "s2": "10.77.2.1", "r1": "10.77.9.1", "r2": "10.77.11.1"}
    carried = 0
    for name, (snd, rcv) in {"a": ("s1", "r1"), "b": ("s2", "r2")}.items():
        folder = tmp_path / "sessions" / name
        summary = cell["sessions"][name]["summary"]
        assert summary["frames"] == 240 and summary["complete"] == 240, summary
        rows = read_pcap(folder / "receiver.pcap")
        carried += sum(1 for r in rows if r[1] == addr[snd] and r[2] == addr[rcv])
        assert cell["sessions"][name]["path"]["hops"][1] == ["neck", "uplink"]
    # everything the two senders sent their receivers crossed the bottleneck, and nothing else
    neck = read_link_log(tmp_path / "link-neck-uplink.log")
    assert carried == int((neck.event == "deliver").sum())
    # b's endpoints started 4 s after a connected, as told; its first frame followed its own
    # start-up and connection (a busy host makes the start-up longer: not the orchestrator's)
    frames = result.frames
    first = frames.groupby("session").sent_first_ns.min()
    b = cell["sessions"]["b"]
    assert 4.0 <= b["started_s"] < 4.3, b["started_s"]
    assert 4.0e9 < first["b"] - first["a"] < 4.0e9 + (b["connect_s"] + 3) * 1e9, (first, b)
    sharing = cell["sharing"]
    assert sharing["jain"] > 0.95 and sharing["capacity_mbps"] == 4
    assert [c["event"] for c in sharing["convergence"]] == ["join b", "leave a"]
    series = (tmp_path / "timeseries.csv").read_text().splitlines()[0]
    assert "a_mbps" in series and "b_mbps" in series and "utilisation" in series


def test_a_session_that_cannot_start_fails_the_cell_naming_it(run: str, tmp_path: Path) -> None:
    bad = ("sessions=[{name: a, sender: s1, receiver: r1}, {name: late, sender: s2, "
           "receiver: r2, start_s: 1, stream: {connect_timeout_s: 0.001}}]")  # fmt: skip
    topo = load_topology(DUMBBELL, [bad])
    spec = parse_stream({"bitrate_mbps": 0.5, "duration_s": 4.0}, "test")
    with pytest.raises(errors.TestbedError, match="session late failed"):
        run_stream(topo, spec, tmp_path, make_backend("emu"), "test", run=run, seed=3)
    assert namespaces_of(run) == []
