"""The emulator under load, on real links: every packet's fate is true, overload is graceful.

Real namespaces, the real compiled emulator, iperf3 and ping; the pure model is the reference
the link log is replayed through.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from testbed.bench.link import iperf3_udp, warm_path
from testbed.config import LinkDef, LinkSpec, TopologySpec
from testbed.net.network import Network
from testbed.procstat import read_stat
from testbed.shaping import emucore
from testbed.shaping.emu import EmuBackend
from testbed.shaping.replay import replay_link_log

pytestmark = pytest.mark.skipif(not emucore.available(), reason=emucore.WHY_NOT)


def topo(up: LinkSpec) -> TopologySpec:
    link = LinkDef("path", ("sender", "receiver"), up, LinkSpec(rate_mbps=100, delay_ms=5))
    return TopologySpec("t", ("sender", "receiver"), (link,), seed=3)


def ip_in_receives(net: Network) -> int:
    lines = net.run_in("receiver", ["cat", "/proc/net/snmp"]).stdout.splitlines()
    rows = [line.split() for line in lines if line.startswith("Ip:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["InReceives"])


@pytest.mark.parametrize("loop", ["compiled", "python"])
def test_the_log_replays_through_the_pure_model_exactly(run: str, loop: str) -> None:
    # loss, a short queue overflowing and jitter: every kind of fate, on real arrivals
    spec = LinkSpec(rate_mbps=20, delay_ms=10, jitter_ms=1, loss_pct=3, queue_packets=40)
    with Network(topo(spec), EmuBackend(loop=loop), run=run) as net:
        warm_path(net)
        iperf3_udp(net, 30, 2)
        log = Path(net.log_dir) / "link-path-uplink.log"
    r = replay_link_log(log)
    assert r.events.get("drop_queue", 0) > 100 and r.events.get("drop_loss", 0) > 50, r.events
    assert (r.event_mismatches, r.release_mismatches) == (0, 0), f"first at seq {r.first_mismatch}"


def test_every_delivered_packet_reaches_the_receiver_host(run: str) -> None:
    # "deliver" means written and accepted by the kernel: the receiver's IP layer counts each
    with Network(topo(LinkSpec(rate_mbps=50, delay_ms=5)), EmuBackend(), run=run) as net:
        warm_path(net)
        iperf3_udp(net, 60, 2)
        time.sleep(0.2)  # the last releases
        received = ip_in_receives(net)
        assert net.info is not None
        stats_path = Path(net.info.links["path"]["uplink"]["stats"])
    stats = json.loads(stats_path.read_text())
    assert stats["write_error"] == 0 and stats["drop_memory"] == 0
    assert stats["deliver"] == received, (stats["deliver"], received)
    assert stats["arrival_stamps"]["own_clock"] <= 2, stats["arrival_stamps"]


def test_overload_drops_at_the_queue_and_recovers(run: str) -> None:
    # twice the link's rate for 3 s: it delivers its rate, stays timely, recovers, stops cleanly
    rate = 150.0
    spec = LinkSpec(rate_mbps=rate, delay_ms=5)
    with Network(topo(spec), EmuBackend(), run=run) as net:
        warm_path(net)
        iperf3_udp(net, 2 * rate, 3)
        ended = time.monotonic()
        recovered = None
        while time.monotonic() - ended < 3 and recovered is None:
            res = net.run_in(
                "sender", ["ping", "-c", "1", "-W", "1", net.address("receiver")], check=False
            )
            if res.returncode == 0 and "time=" in res.stdout:
                rtt = float(res.stdout.split("time=")[1].split()[0])
                recovered = time.monotonic() - ended if rtt < 10 + 3 else None
        assert net.info is not None
        stats_path = Path(net.info.links["path"]["uplink"]["stats"])
        pid = net.info.links["path"]["uplink"]["pid"]
    stats = json.loads(stats_path.read_text())  # written on a clean stop only
    assert recovered is not None and recovered < 1.0, f"no recovery within 1 s: {stats}"
    fates = ("deliver", "drop_queue", "drop_loss", "write_error", "drop_memory", "held_at_stop")
    assert sum(stats[f] for f in fates) == stats["packets_in"], stats  # every packet, one fate
    capacity = rate * 1e6 * 3 / (1428 * 8)  # packets the link can carry in iperf3's 3 s
    assert stats["packets_in"] > 1.3 * capacity, f"iperf3 did not overload the link: {stats}"
    assert stats["drop_queue"] > 0.1 * stats["packets_in"], stats  # dropped at its queue
    assert stats["deliver"] > 0.8 * capacity, (capacity, stats)  # while delivering its rate
    st = read_stat(pid)  # gone, or a zombie its parent (this process) has not reaped yet
    assert st is None or st.state == "Z", st


def test_the_topology_sets_the_emulator_tick(run: str) -> None:
    import dataclasses

    from testbed.bench.link import probe

    spec = LinkSpec(rate_mbps=10, delay_ms=5)
    topology = dataclasses.replace(topo(spec), emulator_tick_us=2000.0)
    with Network(topology, EmuBackend(), run=run) as net:
        rows = probe(net, 2, 200, 1.0)
        assert net.info is not None
        stats_path = Path(net.info.links["path"]["uplink"]["stats"])
    stats = json.loads(stats_path.read_text())
    assert stats["timing"]["release_tick_us"] == 2000.0
    late = stats["lateness_us"]
    # 1,000 packets/s against at most one release wake-up per 2 ms: most releases wait for a tick
    assert late["p50"] > 300, late
    assert len(rows) > 900
