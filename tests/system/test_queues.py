"""Queue disciplines on real links: real TCP (iperf3, cubic), ping, captures (tcpdump + scapy).

CoDel holds a saturating TCP flow's sojourn near its target where droptail fills its buffer;
FQ-CoDel keeps a sparse flow (ping) out of a bulk flow's queue; with ECN, CoDel marks the TCP
flow's packets CE (seen in the receiver's capture) and drops none of them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from testbed.bench.link import iperf3_udp, warm_path
from testbed.config import LinkDef, LinkSpec, TopologySpec
from testbed.config.queues import parse_queue
from testbed.net.network import Network
from testbed.shaping.backends import make_backend
from testbed.shaping.emu import EmuBackend
from testbed.shaping.linklog import read_link_log
from testbed.shaping.replay import replay_link_log
from tests.system.conftest import namespaces_of, run_cli

SECONDS = 6


def topology(queue: str, ecn: bool = False, queue_packets: int = 1000) -> TopologySpec:
    up = LinkSpec(rate_mbps=10, delay_ms=20, queue=parse_queue(queue, "test", "queue"),
                  queue_packets=queue_packets, ecn=ecn)  # fmt: skip
    link = LinkDef("path", ("sender", "receiver"), up, LinkSpec(rate_mbps=10, delay_ms=20))
    return TopologySpec("t", ("sender", "receiver"), (link,), seed=1)


def bulk_tcp(net: Network, seconds: int) -> dict[str, float]:
    """iperf3 cubic from sender to receiver; its receiver-side rate and sender retransmits."""
    server = net.popen("receiver", ["iperf3", "-s", "-1", "-p", "5201"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.3)
        out = net.run_in("sender", ["iperf3", "-c", net.address("receiver"), "-p", "5201", "-t",
                                    str(seconds), "-C", "cubic", "-J"], timeout=seconds + 30)  # fmt: skip
    finally:
        server.wait(timeout=10)
    end = json.loads(out.stdout)["end"]
    return {"mbps": end["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"]["retransmits"]}  # fmt: skip


def late_sojourn_ms(log_path: Path, q: float) -> float:
    """A quantile of the delivered packets' time in the queue, past the first second."""
    df = read_link_log(log_path)
    d = df[(df.event == "deliver") & (df.arrival_ns > 1_000_000_000)]
    if "sojourn_ns" in d:
        wait = d.sojourn_ns.astype(float)
    else:  # a FIFO link's log: link exit - arrival, less the packet's own serialization
        wait = (d.link_exit_ns - d.arrival_ns).astype(float) - d.bytes * 800.0
    return float(wait.quantile(q)) / 1e6


def test_codel_keeps_tcps_sojourn_near_target_where_droptail_builds_a_queue(run: str) -> None:
    results = {}
    for queue in ("droptail", "codel"):
        with Network(topology(queue), make_backend("emu"), run=run) as net:
            tcp = bulk_tcp(net, SECONDS)
            log = Path(net.log_dir) / "link-path-uplink.log"
        results[queue] = (tcp, late_sojourn_ms(log, 0.5), late_sojourn_ms(log, 0.95))
    (tail_tcp, tail_p50, _), (codel_tcp, codel_p50, codel_p95) = (
        results["droptail"],
        results["codel"],
    )
    assert tail_p50 > 100, results  # cubic fills a 1000-packet buffer: hundreds of ms
    assert codel_p50 < 5 and codel_p95 < 25, results  # target 5 ms
    assert codel_tcp["mbps"] > 7.5 and tail_tcp["mbps"] > 8.5, results


def ping_ms(net: Network, count: int) -> list[float]:
    out = net.run_in("sender", ["ping", "-n", "-c", str(count), "-i", "0.1", "-s", "100",
                                net.address("receiver")], timeout=count + 30).stdout  # fmt: skip
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def test_fq_codel_keeps_a_sparse_flow_out_of_a_bulk_flows_queue(run: str) -> None:
    p95 = {}
    for queue in ("droptail", "fq_codel"):
        with Network(topology(queue), make_backend("emu"), run=run) as net:
            server = net.popen("receiver", ["iperf3", "-s", "-1", "-p", "5201"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            client = net.popen("sender", ["iperf3", "-c", net.address("receiver"), "-p", "5201",
                                          "-t", str(SECONDS + 2), "-C", "cubic"],
                               stdout=subprocess.DEVNULL)  # fmt: skip
            try:
                time.sleep(2)  # the bulk flow's queue builds
                rtts = sorted(ping_ms(net, 10 * SECONDS - 10))
            finally:
                client.wait(timeout=SECONDS + 30)
                server.wait(timeout=10)
        assert len(rtts) > 20
        p95[queue] = rtts[int(0.95 * (len(rtts) - 1))]
    # the path's RTT is 40 ms; under droptail the ping waits behind the bulk flow's queue
    assert p95["droptail"] > 100, p95
    assert p95["fq_codel"] < 50, p95


def test_ecn_marks_reach_the_receiver_and_no_ect_packet_is_dropped(
    run: str, tmp_path: Path
) -> None:
    from scapy.all import IP, TCP, rdpcap  # type: ignore[attr-defined]

    pcap = tmp_path / "receiver.pcap"
    with Network(topology("codel", ecn=True), make_backend("emu"), run=run) as net:
        for host in ("sender", "receiver"):  # namespaced sysctl: these hosts only
            net.run_in(host, ["sysctl", "-q", "-w", "net.ipv4.tcp_ecn=1"])
        cap = net.popen("receiver", ["tcpdump", "-i", "any", "-n", "-s", "64", "-U", "-w",
                                     str(pcap), "tcp", "port", "5201"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1.0)
        try:
            tcp = bulk_tcp(net, SECONDS)
        finally:
            time.sleep(0.5)
            cap.terminate()
            cap.wait(timeout=10)
        log_path = Path(net.log_dir) / "link-path-uplink.log"
    log = read_link_log(log_path)
    ect = log[log.ecn.astype(str).isin(["ect", "ce"])]
    assert len(ect) > 1000
    assert (ect.event == "deliver").all(), ect.event.value_counts()  # marked, never dropped
    marked_in_log = int((log.ecn.astype(str) == "ce").sum())
    assert marked_in_log > 0
    to_receiver = [p for p in rdpcap(str(pcap))
                   if IP in p and TCP in p and p[TCP].dport == 5201]  # fmt: skip
    ce = [p[IP] for p in to_receiver if p[IP].tos & 3 == 3]
    assert len(ce) == marked_in_log, (len(ce), marked_in_log, tcp)
    for ip in ce:  # marked in place with a valid header checksum
        again = ip.copy()
        del again.chksum
        assert IP(bytes(again)).chksum == ip.chksum
    assert tcp["retransmits"] == 0


@pytest.mark.parametrize(
    ("queue", "loop"),
    [("codel", "compiled"), ("pie", "compiled"), ("fq_codel", "compiled"),
     ("drophead", "compiled"), ("codel", "python"), ("fq_codel", "python")],
)  # fmt: skip
def test_a_queue_links_log_replays_through_the_pure_model_exactly(
    run: str, queue: str, loop: str
) -> None:
    # UDP at 1.5x the rate, 1% loss, jitter: drops by the discipline and by loss, on real arrivals
    up = LinkSpec(rate_mbps=20, delay_ms=10, jitter_ms=1, loss_pct=1,
                  queue=parse_queue(queue, "test", "queue"), queue_packets=200)  # fmt: skip
    link = LinkDef("path", ("sender", "receiver"), up, LinkSpec(rate_mbps=100, delay_ms=5))
    spec = TopologySpec("t", ("sender", "receiver"), (link,), seed=3)
    with Network(spec, EmuBackend(loop=loop), run=run) as net:
        warm_path(net)
        iperf3_udp(net, 30, 2)
        log = Path(net.log_dir) / "link-path-uplink.log"
    r = replay_link_log(log)
    dropped = r.events.get("drop_queue" if queue == "drophead" else "drop_aqm", 0)
    assert dropped > 20 and r.events.get("drop_loss", 0) > 10, r.events
    assert (r.event_mismatches, r.release_mismatches) == (0, 0), f"first at seq {r.first_mismatch}"


P2P = str(Path(__file__).resolve().parents[2] / "topologies" / "p2p.yaml")


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (
            ["uplink.queue=red"],
            "uplink.queue.discipline: 'red' is unknown queue discipline; valid:",
        ),
        (["uplink.queue={discipline: codel, alpha: 1}"], "not a parameter of codel"),
        (["uplink.queue={discipline: pie, target_ms: -1}"], "out of range; valid: (0, 10000]"),
        (["uplink.rate_mbps=null", "uplink.queue_ms=300"], "a queue in ms needs a capacity"),
        (["uplink.ecn=true"], "droptail never marks"),
        (["backend=netem", "uplink.queue=codel"], "--backend emu"),
    ],
)
def test_bad_queue_input_is_one_line_exit_2_and_nothing_is_made(
    run: str, sets: list[str], says: str
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    res = run_cli("up", P2P, "--name", run, *args)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert namespaces_of(run) == []
    if "queue=codel" in sets[-1]:  # and the link the emulator would run is described
        ok = run_cli("up", P2P, "--name", run, "--set", "uplink.queue=codel")
        assert ok.returncode == 0 and "codel (target_ms=5 interval_ms=100)" in ok.stdout, ok.stderr
        down = run_cli("down", "--name", run)
        assert "AQM drops" in down.stdout, down.stdout
