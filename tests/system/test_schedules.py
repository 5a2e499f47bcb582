"""Links that change, for real: an emulated outage and rate step under a session, a TCP flow
sharing the bottleneck, netem following a schedule in user-mode-linux, the trace commands."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from testbed.bench.link import Case, probe
from testbed.config import load_topology, parse_link_spec
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_header
from testbed.shaping.uml import uml_available, uml_why_not
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

SHIPPED = ROOT / "topologies" / "traces" / "opennetlab"  # copies of three of OpenNetLab's series

TOPO = """name: sched
hosts: [sender, receiver]
links:
  - name: path
    between: [sender, receiver]
    uplink:
      delay_ms: 30
      schedule:
        at_end: hold
        segments:
          - {duration_ms: 2500, rate_mbps: 10}
          - {duration_ms: 1000, rate_mbps: 0}
          - {duration_ms: 5000, rate_mbps: 6, delay_ms: 50}
    downlink: {rate_mbps: 10, delay_ms: 30}
cross_traffic:
  - {name: bulk, from: sender, to: receiver, kind: tcp, cc: reno, start_s: 3.5, stop_s: 5.5}
"""


def test_a_session_over_an_outage_and_a_tcp_flow(run: str, tmp_path: Path) -> None:
    topo_file = tmp_path / "t.yaml"
    topo_file.write_text(TOPO)
    topo = load_topology(topo_file)
    spec = parse_stream({"bitrate_mbps": 1.0, "duration_s": 6.0, "nack": "retry"}, "test")
    out = tmp_path / "cell"
    res = run_stream(topo, spec, out, make_backend("emu"), "test", run=run, seed=2)
    f = res.frames[res.frames.status != "not_sent"].copy()
    start = json.loads((out / "link-path-uplink.stats.json").read_text())
    assert start["packets_in"] > 0
    # the outage: frames sent in it complete only after it, so their latency is long
    ts = pd.read_csv(out / "timeseries.csv")
    outage = ts[ts.capacity_mbps == 0]
    assert len(outage) >= 1 and (ts.capacity_mbps.dropna().isin([10.0, 0.0, 6.0])).all()
    assert set(ts.sched_delay_ms.dropna()) <= {30.0, 50.0}
    # frames sent well inside the outage (2.5-3.5 s after the emulator started) wait for its end
    link_start = read_header(out / "link-path-uplink.log")["start_mono_ns"]
    sent_at = f.sent_first_ns.astype("float64") - link_start
    slow = f[(sent_at > 2.6e9) & (sent_at < 3.2e9)]
    assert len(slow) and (slow.latency_ns.dropna() > 200e6).all(), slow.latency_ns.tolist()
    assert (f.latency_ns.dropna().min()) >= 30e6
    # the TCP flow got through the same bottleneck and is in the cell and its time series
    flows = json.loads((out / "cell.json").read_text())["cross_traffic"]
    assert flows["bulk"]["cc"] == "reno" and (out / "cross-bulk.json").exists()
    assert ts.cross_bulk_mbps.max() > 0.5, ts.cross_bulk_mbps.tolist()
    assert namespaces_of(run) == []


@pytest.mark.skipif(not uml_available(), reason=str(uml_why_not()))
def test_netem_follows_a_schedule_in_user_mode_linux(run: str) -> None:
    spec = parse_link_spec({"queue_packets": 100, "schedule": {"at_end": "loop", "segments": [
        {"duration_ms": 1500, "rate_mbps": 8, "delay_ms": 10},
        {"duration_ms": 1500, "rate_mbps": 8, "delay_ms": 60}]}}, "t", "links.path.uplink", Path("."))  # fmt: skip
    flat = replace(spec, schedule=None, rate_mbps=None, delay_ms=0)
    with Case("netem-uml", run, spec, flat) as net:
        assert net.info is not None
        console = Path(net.info.links["path"]["uplink"]["console"])
        rows = probe(net, 0.5, 200, 4.0)
        text = console.read_text()
    owd = (rows[:, 2] - rows[:, 1]) / 1e6
    # both segments' delays (UML is an ordinary process: a busy machine adds stalls on top)
    near10, near60 = ((owd > 9) & (owd < 14)).mean(), ((owd > 59) & (owd < 66)).mean()
    assert near10 > 0.3 and near60 > 0.3 and owd.min() > 9, (near10, near60, owd.min())
    changes = [int(m) for m in re.findall(r"TB-SEG eth1 \d+ (\d+)", text)]
    assert len(changes) >= 2
    assert namespaces_of(run) == []


def test_trace_commands(tmp_path: Path) -> None:
    res = run_cli("trace", "show", str(SHIPPED / "4G_700kbps.json"), "-o", str(tmp_path / "t.pdf"))
    assert res.returncode == 0, res.stderr
    assert "capacity mean 0.679 Mbps" in res.stdout and (tmp_path / "t.png").exists()
    conv = run_cli("trace", "convert", str(SHIPPED / "4G_700kbps.json"), "--to", "mahimahi", "-o",
                   str(tmp_path / "t.trace"))  # fmt: skip
    assert conv.returncode == 0, conv.stderr
    again = run_cli("trace", "show", str(tmp_path / "t.trace"), "-o", str(tmp_path / "u.pdf"))
    assert "capacity mean 0.679 Mbps" in again.stdout, again.stdout
    rtt = tmp_path / "rtt.json"  # as OpenNetLab's rtt-trace_rtt_pattern_3.json
    rtt.write_text('{"uplink": {"trace_pattern": [{"duration": 2000, "capacity": 1000, "loss": 0, '
                   '"rtt": 200, "jitter": 0}]}}')  # fmt: skip
    sched = run_cli(
        "trace", "convert", str(rtt), "--to", "schedule", "-o", str(tmp_path / "s.yaml")
    )
    assert sched.returncode == 0
    shown = run_cli("trace", "show", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "s.pdf"))
    assert shown.returncode == 0 and "mean delay 100.0 ms" in shown.stdout, shown.stdout
    ambiguous = tmp_path / "loss.json"  # as OpenNetLab's loss-trace_loss_0dot1.json
    ambiguous.write_text(
        '{"uplink": {"trace_pattern": [{"duration": 200, "capacity": 1000, "loss": 0.1}]}}'
    )
    bad = run_cli("trace", "show", str(ambiguous))
    assert bad.returncode == 2 and "trace_loss_unit" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
