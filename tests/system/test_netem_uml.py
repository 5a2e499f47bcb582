"""Kernel netem, for real, inside a user-mode-linux router (this kernel has no sch_netem)."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest

from testbed.bench.link import iperf3_udp, probe
from testbed.bench.metrics import binomial_interval
from testbed.config import LinkDef, LinkSpec, TopologySpec
from testbed.net.ledger import Ledger, process_start_ticks, session_members
from testbed.net.network import Network
from testbed.shaping.backends import make_backend
from testbed.shaping.uml import uml_available, uml_why_not
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

pytestmark = pytest.mark.skipif(not uml_available(), reason=str(uml_why_not()))


def topo(up: LinkSpec, down: LinkSpec | None = None) -> TopologySpec:
    link = LinkDef("path", ("sender", "receiver"), up, down or up)
    return TopologySpec("t", ("sender", "receiver"), (link,), seed=1)


def test_ping_rtt_matches_the_spec(run: str) -> None:
    with Network(
        topo(LinkSpec(rate_mbps=10, delay_ms=15)), make_backend("netem-uml"), run=run
    ) as net:
        net.run_in("sender", ["ping", "-c", "3", "-i", "0.05", net.address("receiver")])  # ARP
        out = net.run_in(
            "sender", ["ping", "-n", "-q", "-c", "30", "-i", "0.02", net.address("receiver")]
        ).stdout
    mn, avg = (float(x) for x in re.search(r"= ([\d.]+)/([\d.]+)/", out).groups())  # type: ignore[union-attr]
    # UML is an ordinary process: when the CPU is shared its timers run a little late
    assert 30.0 <= mn <= 31.0 and avg == pytest.approx(30.1, abs=2.0)


def test_loss_inside_binomial_interval(run: str) -> None:
    spec = LinkSpec(rate_mbps=50, loss_pct=5)
    with Network(topo(spec, LinkSpec(rate_mbps=50)), make_backend("netem-uml"), run=run) as net:
        # ~490 packets/s: UML is an ordinary process, and its tap queue drops what it cannot read
        rows = probe(net, 4, 1000, 4.0)
    sent = int(4.0 * 4e6 / (1028 * 8))
    lost = 1 - len(rows) / sent
    lo, hi = binomial_interval(0.05, sent, z=3.3)
    gaps = np.diff(np.concatenate(([-1], rows[:, 0], [sent]))) - 1
    assert lo <= lost <= hi, f"lost {lost:.3f}; longest run of lost packets {gaps.max()}"


def test_rate_within_one_percent(run: str) -> None:
    spec = LinkSpec(rate_mbps=10, delay_ms=10, queue_packets=100)
    with Network(topo(spec), make_backend("netem-uml"), run=run) as net:
        res = iperf3_udp(net, 12, 4)
    assert res["ip_mbps"] == pytest.approx(10, rel=0.01)


def test_kill_9_of_uml_then_clean(run: str) -> None:
    up = run_cli("up", str(ROOT / "topologies" / "p2p.yaml"), "--backend", "netem", "--name", run)
    assert up.returncode == 0, up.stderr
    (entry,) = [e for e in Ledger(run).entries() if e.get("session")]
    family = session_members(entry["pid"], entry["start_ticks"])
    assert len(family) >= 2  # UML runs helper processes
    os.kill(entry["pid"], signal.SIGKILL)
    assert run_cli("clean").returncode == 0
    assert namespaces_of(run) == []
    assert not any(process_start_ticks(p) == t for p, t in family)
