"""`testbed bench queues`: the queue disciplines on a real link, measured with real traffic.

1. One TCP cubic flow (iperf3, nobody here wrote it) over 10 Mbps / 20 ms for each discipline:
   droptail 1000 packets, droptail 300 ms, CoDel, PIE, FQ-CoDel (the AQMs with and without
   ECN): the queueing delay the link log records (sojourn; for a FIFO link, the wait before its
   serialization), iperf3's throughput and retransmissions, the link's drops and CE marks.
   References printed beside: the link's capacity and each discipline's target.
2. The emulator's CPU per direction (its own process, from /proc) with FQ-CoDel against
   droptail, at 10 and 100 Mbps offered 1.2x the rate by iperf3 UDP.

The kernel's own codel / pie / fq_codel, the natural reference, cannot run here: this kernel
lacks them (probed) and user-mode-linux does not boot on this host (testbed doctor).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.bench.link import iperf3_udp, warm_path
from testbed.config import LinkDef, LinkSpec, TopologySpec
from testbed.config.queues import parse_queue
from testbed.net.network import Network
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_link_log

Say = Callable[[str], None]
WARMUP_NS = 2_000_000_000  # slow start: queueing delay counted after it


@dataclass(frozen=True)
class QueueCase:
    label: str
    queue: str
    queue_packets: int | None = 1000
    queue_ms: float | None = None
    ecn: bool = False

    def spec(self, rate_mbps: float, delay_ms: float) -> LinkSpec:
        return LinkSpec(rate_mbps=rate_mbps, delay_ms=delay_ms, queue_packets=self.queue_packets,
                        queue_ms=self.queue_ms, ecn=self.ecn,
                        queue=parse_queue(self.queue, "bench", "queue"))  # fmt: skip


TCP_CASES = (
    QueueCase("droptail 1000 pkts", "droptail"),
    QueueCase("droptail 300 ms", "droptail", queue_packets=None, queue_ms=300),
    QueueCase("codel", "codel"),
    QueueCase("codel + ecn", "codel", ecn=True),
    QueueCase("pie", "pie"),
    QueueCase("pie + ecn", "pie", ecn=True),
    QueueCase("fq_codel", "fq_codel"),
    QueueCase("fq_codel + ecn", "fq_codel", ecn=True),
)
TARGET_MS = {"codel": 5.0, "pie": 15.0, "fq_codel": 5.0}


def _topology(uplink: LinkSpec, downlink: LinkSpec) -> TopologySpec:
    link = LinkDef("path", ("sender", "receiver"), uplink, downlink)
    return TopologySpec("bench", ("sender", "receiver"), (link,), seed=1, source="<bench>")


def _up(up: LinkSpec, down: LinkSpec, run: str) -> Network:
    net = Network(_topology(up, down), make_backend("emu"), run=run,
                  log_dir=Path(tempfile.mkdtemp(prefix="tb-bench-")))  # fmt: skip
    net.start()
    return net


def _uplink_stats(log_dir: Path) -> dict[str, Any]:
    path = log_dir / "link-path-uplink.stats.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _queueing_ms(log_dir: Path) -> dict[str, float]:
    df = read_link_log(log_dir / "link-path-uplink.log")
    d = df[(df.event == "deliver") & (df.arrival_ns > WARMUP_NS)]
    rate = df.attrs["header"]["spec"]["rate_mbps"]
    if "sojourn_ns" in d:
        wait = d.sojourn_ns.astype(float)
    else:  # FIFO: link exit less arrival less the packet's own serialization
        wait = (d.link_exit_ns - d.arrival_ns).astype(float) - d.bytes * 8000.0 / rate
    q = wait.quantile([0.5, 0.95, 0.99]) / 1e6
    ecn = df.ecn.astype(str) if "ecn" in df else None
    return {"p50": float(q.iloc[0]), "p95": float(q.iloc[1]), "p99": float(q.iloc[2]),
            "drops": int(df.event.astype(str).str.startswith("drop_").sum()),
            "marks": int((ecn == "ce").sum()) if ecn is not None else 0}  # fmt: skip


def tcp_case(case: QueueCase, seconds: int, run: str) -> dict[str, Any]:
    """One cubic flow through the case's uplink; the link log's figures and iperf3's."""
    net = _up(case.spec(10, 20), LinkSpec(rate_mbps=10, delay_ms=20), run)
    log_dir = Path(net.log_dir)
    try:
        warm_path(net)
        for host in ("sender", "receiver"):  # these hosts' own (namespaced) sysctl
            net.run_in(host, ["sysctl", "-q", "-w", f"net.ipv4.tcp_ecn={int(case.ecn)}"])
        server = net.popen("receiver", ["iperf3", "-s", "-1", "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.3)
            out = net.run_in("sender", ["iperf3", "-c", net.address("receiver"), "-p", "5201",
                                        "-t", str(seconds), "-C", "cubic", "-J"],
                             timeout=seconds + 60).stdout  # fmt: skip
        finally:
            server.wait(timeout=30)
    finally:
        net.stop()
    end = json.loads(out)["end"]
    row = {"case": case.label, "mbps": end["sum_received"]["bits_per_second"] / 1e6,
           "retransmits": end["sum_sent"]["retransmits"], **_queueing_ms(log_dir),
           "emulator_cpu_pct": 100 * _cpu_share(_uplink_stats(log_dir))}  # fmt: skip
    shutil.rmtree(log_dir, ignore_errors=True)
    return row


def _cpu_share(stats: dict[str, Any]) -> float:
    return float(stats.get("cpu_s", 0.0)) / max(float(stats.get("duration_s", 1.0)), 1e-9)


def cpu_case(queue: str, rate_mbps: float, seconds: int, run: str) -> dict[str, Any]:
    """The uplink emulator's CPU share while iperf3 UDP offers 1.2x its rate."""
    spec = QueueCase(queue, queue).spec(rate_mbps, 10)
    net = _up(spec, LinkSpec(rate_mbps=rate_mbps, delay_ms=10), run)
    log_dir = Path(net.log_dir)
    try:
        warm_path(net)
        udp = iperf3_udp(net, 1.2 * rate_mbps, seconds)
    finally:
        net.stop()
    stats = _uplink_stats(log_dir)
    shutil.rmtree(log_dir, ignore_errors=True)
    late = stats.get("lateness_us", {})
    return {"queue": queue, "rate_mbps": rate_mbps, "cpu_pct": 100 * _cpu_share(stats),
            "delivered_mbps": udp["ip_mbps"], "packets_in": stats.get("packets_in"),
            "lateness_p99_us": late.get("p99"), "loop": stats.get("timing", {}).get("loop")}  # fmt: skip


def run_queue_bench(seconds: int, run: str, say: Say) -> dict[str, Any]:
    say(f"1. one TCP cubic flow, 10 Mbps / 20 ms one way, {seconds} s (queueing delay after "
        f"{WARMUP_NS // 10**9} s; reference: capacity 10 Mbps, each AQM's target)")  # fmt: skip
    say(f"  {'queue':<20} {'Mbps':>6} {'retr':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'drops':>6} {'marks':>6} {'target':>7} {'emu cpu':>8}")  # fmt: skip
    tcp = []
    for case in TCP_CASES:
        r = tcp_case(case, seconds, run)
        tcp.append(r)
        target = TARGET_MS.get(case.queue)
        say(f"  {case.label:<20} {r['mbps']:6.2f} {r['retransmits']:5d} {r['p50']:7.1f} "
            f"{r['p95']:7.1f} {r['p99']:7.1f} {r['drops']:6d} {r['marks']:6d} "
            f"{(f'{target:g} ms' if target else '-'):>7} {r['emulator_cpu_pct']:7.1f}%")  # fmt: skip
    say("2. the uplink emulator's CPU, iperf3 UDP offered 1.2x the rate (reference: droptail, "
        "the compiled FIFO loop)")  # fmt: skip
    cpu = []
    for rate in (10.0, 100.0):
        for queue in ("droptail", "fq_codel", "codel"):
            r = cpu_case(queue, rate, seconds, run)
            cpu.append(r)
            say(f"  {rate:5.0f} Mbps {queue:<9} cpu {r['cpu_pct']:5.1f}% of a core, "
                f"{r['packets_in']} packets in, delivered {r['delivered_mbps']:.1f} Mbps, "
                f"release lateness p99 {r['lateness_p99_us']} us ({r['loop']})")  # fmt: skip
    say(
        "  no kernel reference: this kernel has no sch_codel/sch_pie/sch_fq_codel and "
        "user-mode-linux does not boot here (testbed doctor)"
    )
    return {"tcp": tcp, "cpu": cpu, "seconds": seconds}
