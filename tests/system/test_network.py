"""Real namespaces, a real emulated link, real traffic: the link does what its spec says."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from testbed.bench.link import iperf3_udp, probe
from testbed.bench.metrics import binomial_interval
from testbed.config import LinkDef, LinkSpec, TopologySpec, load_topology
from testbed.config.traces import load_trace
from testbed.net.network import Network
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_link_log
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of


def topo(up: LinkSpec, down: LinkSpec | None = None) -> TopologySpec:
    link = LinkDef("path", ("sender", "receiver"), up, down or up)
    return TopologySpec("t", ("sender", "receiver"), (link,), seed=1)


def test_p2p_hosts_addresses_and_delay(run: str) -> None:
    spec = load_topology(
        ROOT / "topologies" / "p2p.yaml", ["uplink.delay_ms=5", "downlink.delay_ms=5"]
    )
    with Network(spec, make_backend("emu"), run=run) as net:
        assert sorted(namespaces_of(run)) == sorted(
            f"{run}-{n}" for n in ("sender", "receiver", "path")
        )
        out = net.run_in(
            "sender", ["ping", "-n", "-c", "20", "-i", "0.02", net.address("receiver")]
        ).stdout
        mn, avg, _mx = (float(x) for x in re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", out).groups())  # type: ignore[union-attr]
        assert mn >= 10.0, "RTT below 2 x one-way delay: the delay is not applied"
        assert avg < 12.0, f"RTT {avg} ms far above 10 ms"
        env = net.run_in(
            "receiver", ["sh", "-c", "echo $TB_ADDR_SENDER $TB_ADDR_RECEIVER"]
        ).stdout.split()
        assert env == [net.address("sender"), net.address("receiver")]
        log_dir = Path(net.log_dir)
    log = read_link_log(log_dir / "link-path-uplink.log")
    assert (log.event == "deliver").sum() >= 20
    delivered = log[log.event == "deliver"]
    assert ((delivered.sched_ns - delivered.arrival_ns) >= 5_000_000).all()


def test_no_route_between_host_and_outside(run: str) -> None:
    with Network(topo(LinkSpec(rate_mbps=10)), make_backend("emu"), run=run) as net:
        routes = net.run_in("sender", ["ip", "-4", "route"]).stdout
        assert "default" not in routes


def test_rate_limit_holds_under_overload(run: str) -> None:
    with Network(
        topo(LinkSpec(rate_mbps=10, delay_ms=10, queue_packets=100)), make_backend("emu"), run=run
    ) as net:
        res = iperf3_udp(net, 12, 3)
    assert res["ip_mbps"] == pytest.approx(10, rel=0.02)


def test_bernoulli_loss_inside_binomial_interval(run: str) -> None:
    spec = LinkSpec(rate_mbps=50, loss_pct=5, queue_packets=None)
    with Network(topo(spec, LinkSpec()), make_backend("emu"), run=run) as net:
        rows = probe(net, 8, 500, 2.0)
    sent = 2.0 * 8e6 / (528 * 8)
    lost = 1 - len(rows) / int(sent)
    lo, hi = binomial_interval(0.05, int(sent), z=3.3)
    assert lo <= lost <= hi


def test_trace_link_follows_the_trace(run: str) -> None:
    path = ROOT / "topologies" / "traces" / "const-5.trace"
    trace = load_trace(path)
    with Network(
        topo(LinkSpec(trace=str(path), queue_packets=50), LinkSpec()), make_backend("emu"), run=run
    ) as net:
        assert net.info is not None
        start = net.info.links["path"]["uplink"]["start_real_ns"]
        rows = probe(net, 8, 1400, 2.5)
    t = rows[:, 2] - start
    lo, hi = int(t.min()) + 200_000_000, int(t.max()) - 100_000_000
    got = rows[(t >= lo) & (t < hi), 3].sum()
    assert got == pytest.approx(trace.capacity_bytes(lo, hi), rel=0.03)


def test_two_topologies_up_at_once(run: str) -> None:
    other = run[:-1] + ("x" if run[-1] != "x" else "y")
    a = Network(topo(LinkSpec(delay_ms=1)), make_backend("emu"), run=run)
    b = Network(topo(LinkSpec(delay_ms=1)), make_backend("emu"), run=other)
    with a, b:
        for net in (a, b):
            net.run_in("sender", ["ping", "-c", "1", "-W", "2", net.address("receiver")])
    assert namespaces_of(other) == []


def test_build_failure_undoes_everything(run: str) -> None:
    # a host namespace that already exists makes the build fail half-way
    subprocess.run(["ip", "netns", "add", f"{run}-receiver"], check=True)
    try:
        net = Network(topo(LinkSpec()), make_backend("emu"), run=run)
        with pytest.raises(Exception, match="already exists"):
            net.start()
        assert namespaces_of(run) == [f"{run}-receiver"]  # only the one we made by hand
    finally:
        subprocess.run(["ip", "netns", "del", f"{run}-receiver"], check=True)


def test_dead_emulator_blackholes_instead_of_bypassing(run: str) -> None:
    import os
    import signal

    with Network(topo(LinkSpec(delay_ms=20)), make_backend("emu"), run=run) as net:
        assert net.info is not None
        net.run_in("sender", ["ping", "-c", "1", "-W", "2", net.address("receiver")])
        os.kill(net.info.links["path"]["uplink"]["pid"], signal.SIGKILL)
        res = net.run_in(
            "sender",
            ["ping", "-c", "3", "-i", "0.1", "-W", "1", net.address("receiver")],
            check=False,
        )
        assert res.returncode != 0 and " 0 received" in res.stdout


def test_arrivals_carry_kernel_timestamps(run: str) -> None:
    import json

    with Network(topo(LinkSpec(rate_mbps=10, delay_ms=5)), make_backend("emu"), run=run) as net:
        assert net.info is not None
        stats_path = net.info.links["path"]["uplink"]["stats"]
        probe(net, 1, 1000, 0.5)
    stats = json.loads(Path(stats_path).read_text())
    assert stats["arrival_stamps"]["kernel"] >= 50
    assert stats["arrival_stamps"]["own_clock"] <= 1


def test_gilbert_elliott_loss_is_bursty_on_a_real_link(run: str) -> None:
    from testbed.config import GilbertElliottSpec

    ge = GilbertElliottSpec(p_pct=2, r_pct=25)  # mean loss 7.4%, mean burst 4 packets
    spec = LinkSpec(rate_mbps=50, gilbert_elliott=ge, queue_packets=None)
    with Network(topo(spec, LinkSpec()), make_backend("emu"), run=run) as net:
        rows = probe(net, 8, 500, 3.0)
    sent = int(3.0 * 8e6 / (528 * 8))
    got = set(rows[:, 0].tolist())
    lost = [seq not in got for seq in range(sent)]
    mean = sum(lost) / sent
    assert 0.04 < mean < 0.12
    bursts = sum(1 for a, b in itertools.pairwise(lost) if a and not b)
    assert sum(lost) / max(bursts, 1) > 2.5, "losses should come in bursts (mean 4)"


def test_jitter_delays_vary_but_never_reorder(run: str) -> None:
    spec = LinkSpec(rate_mbps=50, delay_ms=20, jitter_ms=3, queue_packets=None)
    with Network(topo(spec, LinkSpec()), make_backend("emu"), run=run) as net:
        rows = probe(net, 4, 500, 2.0)
    owd_ms = (rows[:, 2] - rows[:, 1]) / 1e6
    assert owd_ms.std() > 1.0 and owd_ms.min() > 5
    arrival_order = rows[:, 0][rows[:, 2].argsort(kind="stable")]
    assert (arrival_order == sorted(arrival_order)).all()
