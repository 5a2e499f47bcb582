"""Routed topologies on real namespaces: router hosts forward, static routes follow the shortest
paths, a bottleneck carries exactly the flows that cross it."""

from __future__ import annotations

import re
from pathlib import Path

from testbed.config import LinkDef, LinkSpec, TopologySpec, load_topology
from testbed.net.network import Network
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_link_log
from tests.conftest import ROOT


def line_topology() -> TopologySpec:
    """a - l1 - r1 - l2 - r2 - l3 - b: one-way delays 3, 7, 11 ms out and 2, 4, 6 ms back."""
    links = tuple(
        LinkDef(f"l{i + 1}", ends, LinkSpec(delay_ms=up), LinkSpec(delay_ms=down))
        for i, (ends, up, down) in enumerate(
            [(("a", "r1"), 3, 2), (("r1", "r2"), 7, 4), (("r2", "b"), 11, 6)]
        )
    )
    return TopologySpec("line", ("a", "r1", "r2", "b"), links, seed=1, forwarding=("r1", "r2"))


def test_ping_across_three_links_takes_the_sum_of_their_delays(run: str) -> None:
    with Network(line_topology(), make_backend("emu"), run=run) as net:
        assert net.info is not None
        out = net.run_in("a", ["ping", "-n", "-c", "20", "-i", "0.05", net.address("b")]).stdout
        back = net.run_in("b", ["ping", "-n", "-c", "5", "-i", "0.05", net.address("a")]).stdout
        routes = {(n, d): v for n, d, v in net.info.routes}
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    assert len(rtts) == 20 and "5 received" in back
    # 3 + 7 + 11 out, 2 + 4 + 6 back: 33 ms; the emulators add microseconds
    assert min(rtts) >= 33.0 and sorted(rtts)[10] < 34.5, rtts
    assert routes[("host:a", "10.77.5.0/24")] == "10.77.0.254"  # b's subnet, via l1's router
    assert routes[("host:r1", "10.77.5.0/24")] == "10.77.2.254"  # via l2's router


def test_the_bottleneck_carries_the_flows_that_cross_it_and_no_other(run: str) -> None:
    topo = load_topology(ROOT / "topologies" / "dumbbell.yaml",
                         ["a2.uplink.delay_ms=1", "a2.downlink.delay_ms=1",
                          "a3.uplink.delay_ms=1", "a3.downlink.delay_ms=1"])  # fmt: skip
    counts = {("s1", "r1"): 7, ("s2", "r2"): 5, ("s1", "s2"): 9, ("r2", "r3"): 4}
    with Network(topo, make_backend("emu"), run=run) as net:
        for (src, dst), n in counts.items():
            res = net.run_in(src, ["ping", "-n", "-c", str(n), "-i", "0.02", net.address(dst)])
            assert f"{n} received" in res.stdout
        logs = Path(net.log_dir)

    def delivered(link: str, direction: str) -> int:
        df = read_link_log(logs / f"link-{link}-{direction}.log")
        return int((df.event == "deliver").sum())

    crossing = counts[("s1", "r1")] + counts[("s2", "r2")]
    assert delivered("neck", "uplink") == crossing  # the requests, left -> right
    assert delivered("neck", "downlink") == crossing  # the replies
    assert delivered("a1", "uplink") == counts[("s1", "r1")] + counts[("s1", "s2")]
    assert delivered("a3", "uplink") == 0  # s3 sent nothing, nothing crossed a3
    assert delivered("b3", "uplink") == counts[("r2", "r3")]  # right -> r3: the requests


def test_up_shows_the_paths_of_a_routed_topology(run: str) -> None:
    from tests.system.conftest import namespaces_of, run_cli

    up = run_cli("up", str(ROOT / "topologies" / "parking-lot.yaml"), "--name", run)
    try:
        assert up.returncode == 0, up.stderr
        assert "path src <-> dst: asrc > n1 > n2 > n3 > adst" in up.stdout
        ping = run_cli("exec", "--name", run, "src", "--", "sh", "-c",
                       "ping -c 2 -i 0.1 -n $TB_ADDR_DST")  # fmt: skip
        assert "2 received" in ping.stdout, ping.stdout + ping.stderr
    finally:
        run_cli("down", "--name", run)
    assert namespaces_of(run) == []
