"""`testbed bench link`: how faithful is the emulated link? Measured, next to references.

Tools nobody here wrote (iperf3 for throughput and loss, ping for RTT) plus our own timestamped
UDP probe (kernel receive timestamps) for one-way delay and delivered bytes per window. Each
number is printed beside what the spec and physics say it should be, as a ratio or an error.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from testbed.bench.metrics import binomial_interval, bytes_per_window, fifo_floor_ns, quantiles_ms
from testbed.config import LinkDef, LinkSpec, TopologySpec
from testbed.config.traces import load_trace
from testbed.errors import TestbedError, UnavailableError
from testbed.net.ledger import session_members
from testbed.net.network import Network
from testbed.net.shaper import Backend
from testbed.procstat import clock_ticks_per_s, read_stat
from testbed.shaping.backends import choose_backend, make_backend

Say = Callable[[str], None]
TRACES_DIR = Path(__file__).resolve().parents[2] / "topologies" / "traces"
# Real cellular uplink recordings (Mahimahi's), when the shared folder sits beside the checkout.
SHARED_TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces" / "mahimahi"
REAL_TRACES = ("TMobile-LTE-short.up", "Verizon-LTE-short.up")


def default_traces() -> list[Path]:
    shipped = sorted(TRACES_DIR.glob("*.trace"))
    real = [SHARED_TRACES / n for n in REAL_TRACES if (SHARED_TRACES / n).exists()]
    return shipped + real


PING_BYTES = 84
IPERF_PAYLOAD = 1400


def _topology(uplink: LinkSpec, downlink: LinkSpec | None = None) -> TopologySpec:
    return TopologySpec(
        name="bench",
        hosts=("sender", "receiver"),
        links=(LinkDef("path", ("sender", "receiver"), uplink, downlink or uplink),),
        seed=1,
        source="<bench>",
    )


def _emu_stats(net: Network) -> dict[str, Any]:
    assert net.info is not None
    path = Path(net.info.links["path"]["uplink"]["stats"])
    for _ in range(100):
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.02)
    return {}


def _shaper_cpu_s(net: Network) -> float:
    """CPU seconds used so far by the processes that shape the links (emulators or UML)."""
    pids: list[int] = []
    for e in net.ledger.entries():
        what = str(e.get("what", ""))
        if e["kind"] != "process" or not what.startswith(("emulator", "user-mode-linux")):
            continue
        if e.get("session"):
            pids += [p for p, _ in session_members(int(e["pid"]), int(e["start_ticks"]))]
        elif e.get("pid"):
            pids.append(int(e["pid"]))
    stats = [read_stat(pid) for pid in pids]
    return sum(st.cpu_ticks for st in stats if st is not None) / clock_ticks_per_s()


def warm_path(net: Network) -> None:
    """Resolve neighbours on every hop both ways before anything is measured.

    Under netem the routers' own ARP requests cross the lossy qdisc: one lost request stalls the
    path for the 1 s ARP retry, and a probe started then loses everything queued behind it. ping
    with a deadline keeps sending until two replies came back (or 5 s passed).
    """
    for a, b in (("sender", "receiver"), ("receiver", "sender")):
        net.run_in(a, ["ping", "-c", "2", "-i", "0.05", "-w", "5", net.address(b)], check=False)


class Case:
    """One topology up for the duration of a with-block, on the chosen backend."""

    def __init__(
        self, backend: str | Backend, run: str, uplink: LinkSpec, down: LinkSpec | None = None
    ):
        self.net = Network(
            _topology(uplink, down),
            make_backend(backend) if isinstance(backend, str) else backend,
            run=run,
            log_dir=Path(tempfile.mkdtemp(prefix="tb-bench-")),
            seed=1,
        )
        self.emu: dict[str, Any] = {}
        self.cpu = math.nan

    def __enter__(self) -> Network:
        self.net.start()
        warm_path(self.net)
        self._t0 = time.monotonic()
        self._cpu0 = _shaper_cpu_s(self.net)
        return self.net

    def __exit__(self, *exc: object) -> None:
        self.cpu = (_shaper_cpu_s(self.net) - self._cpu0) / max(time.monotonic() - self._t0, 1e-9)
        self.net.stop()
        if self.net.backend.name == "emu":
            self.emu = _emu_stats(self.net)
        shutil.rmtree(self.net.log_dir, ignore_errors=True)

    def lateness(self) -> str:
        if not self.emu:
            return ""
        late = self.emu["lateness_us"]
        return (f"; emulator release lateness p50 {late['p50']:.0f} us, p99 {late['p99']:.0f} us,"
                f" {self.emu['stalls_over_1ms']} >1 ms")  # fmt: skip


# --- measurements ----------------------------------------------------------------------------


def ping_rtt_ms(net: Network, count: int) -> dict[str, float]:
    out = net.run_in(
        "sender",
        ["ping", "-n", "-q", "-c", str(count), "-i", "0.02", net.address("receiver")],
        timeout=count * 0.1 + 30,
    ).stdout
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    if not m:
        raise TestbedError(f"ping printed no RTT summary: {out.strip()[-200:]}")
    mn, avg, mx, mdev = (float(x) for x in m.groups())
    return {"min": mn, "avg": avg, "max": mx, "mdev": mdev}


def iperf3_udp(
    net: Network, rate_mbps: float, seconds: int, in_image: bool = False
) -> dict[str, Any]:
    """Receiver-side result of an iperf3 UDP run: payload Mbps (middle intervals) and loss.
    in_image: a container receiver runs its image's iperf3 server."""
    server = net.popen(
        "receiver",
        ["iperf3", "-s", "-1", "-J", "-p", "5201"],
        in_image=in_image,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # the server is ready when its port answers
            probe = net.run_in(
                "receiver", ["sh", "-c", "ss -Hltn 'sport = :5201' | grep -q ."], check=False
            )
            if probe.returncode == 0:
                break
            time.sleep(0.05)
        res = net.run_in(
            "sender",
            [
                "iperf3",
                "-c",
                net.address("receiver"),
                "-p",
                "5201",
                "-u",
                "-b",
                f"{rate_mbps}M",
                "-l",
                str(IPERF_PAYLOAD),
                "-t",
                str(seconds),
                "-J",
                "--get-server-output",
            ],
            timeout=seconds + 60,
        )
    finally:
        server.kill()
        server.wait()
    data = json.loads(res.stdout)
    srv = data["server_output_json"]
    intervals = [iv["sum"] for iv in srv["intervals"]]
    middle = intervals[1:-1] or intervals
    mbps = sum(iv["bytes"] for iv in middle) * 8 / sum(iv["seconds"] for iv in middle) / 1e6
    total = srv["end"]["sum"]
    cpu = data.get("end", {}).get("cpu_utilization_percent", {})
    return {
        "cpu": {"sender_pct": cpu.get("host_total"), "receiver_pct": cpu.get("remote_total")},
        "payload_mbps": mbps,
        "ip_mbps": mbps * (IPERF_PAYLOAD + 28) / IPERF_PAYLOAD,
        "lost": float(total["lost_packets"]),
        "packets": float(total["packets"]),
    }


def probe(net: Network, rate_mbps: float, payload: int, seconds: float) -> np.ndarray:
    """Run the UDP probe; rows (seq, tx_ns, rx_ns, ip_bytes), in send order."""
    warm_path(net)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.npy"
        recv = net.popen(
            "receiver",
            [
                sys.executable,
                "-m",
                "testbed.bench.probe",
                "recv",
                "--out",
                str(out),
                "--max-s",
                str(seconds + 60),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert recv.stdout is not None
            if recv.stdout.readline().strip() != "ready":
                raise TestbedError("probe receiver did not start")
            net.run_in(
                "sender",
                [
                    sys.executable,
                    "-m",
                    "testbed.bench.probe",
                    "send",
                    "--dst",
                    net.address("receiver"),
                    "--rate-mbps",
                    str(rate_mbps),
                    "--payload",
                    str(payload),
                    "--duration-s",
                    str(seconds),
                ],
                timeout=seconds + 60,
            )
            recv.wait(timeout=90)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        rows = np.load(out)
    ordered: np.ndarray = rows[np.argsort(rows[:, 0])]
    return ordered


# --- the benchmark -----------------------------------------------------------------------------


def _fmt(q: dict[str, float]) -> str:
    return f"p50 {q['p50']:.3f}  p99 {q['p99']:.3f}  max {q['max']:.3f} ms"


def bench_backend(
    backend: str, run: str, quick: bool, rates: list[float], say: Say, traces: list[Path]
) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend}
    secs = 4 if quick else 10
    # 1. 10 Mbps / 30 ms / 0 %: ping RTT, iperf3 throughput at 12 offered, probe OWD at 2.
    spec = LinkSpec(rate_mbps=10, delay_ms=30, queue_packets=200)
    case = Case(backend, run, spec)
    with case as net:
        rtt = ping_rtt_ms(net, 50 if quick else 200)
        ip3 = iperf3_udp(net, 12, secs)
        rows = probe(net, 2, 1200, secs)
    ser_ms = PING_BYTES * 8 / 10_000
    ref_rtt = 60 + 2 * ser_ms
    floor = fifo_floor_ns(rows[:, 1], rows[:, 3], 10, 30e6)
    owd_err = quantiles_ms(rows[:, 2] - floor)
    say(f"[{backend}] 10 Mbps / 30 ms / 0%   (link queue 200 packets)")
    say(
        f"  ping RTT          measured avg {rtt['avg']:.3f} (min {rtt['min']:.3f}, max {rtt['max']:.3f}) ms"
        f"   reference {ref_rtt:.3f} ms   error {rtt['avg'] - ref_rtt:+.3f} ms"
    )
    say(
        f"  iperf3 UDP 12M    received {ip3['ip_mbps']:.3f} Mbps (IP bytes; {ip3['payload_mbps']:.3f} payload)"
        f"   reference 10.000   ratio {ip3['ip_mbps'] / 10:.4f}"
    )
    say(
        f"  probe OWD 2 Mbps  error vs floor (30 ms + 1228 B/10 Mbps): {_fmt(owd_err)}"
        f"   (n={owd_err['n']}{case.lateness()}; shaper CPU {100 * case.cpu:.0f}% of a core)"
    )
    out["rate10"] = {
        "ping_rtt_ms": rtt,
        "ref_rtt_ms": ref_rtt,
        "iperf3": ip3,
        "owd_error_ms": owd_err,
        "emu": case.emu,
    }

    # 2. 10 Mbps / 30 ms / 5 % bernoulli: iperf3's loss count vs the binomial interval.
    case = Case(
        backend,
        run,
        LinkSpec(rate_mbps=10, delay_ms=30, loss_pct=5, queue_packets=200),
        LinkSpec(rate_mbps=10, delay_ms=30),
    )
    with case as net:
        ip3 = iperf3_udp(net, 5, secs)
    n = int(ip3["packets"])
    lo, hi = binomial_interval(0.05, n)
    frac = ip3["lost"] / n if n else math.nan
    inside = lo <= frac <= hi
    say(f"[{backend}] 10 Mbps / 30 ms / 5% bernoulli")
    say(
        f"  iperf3 UDP 5M     lost {int(ip3['lost'])}/{n} = {100 * frac:.2f}%   "
        f"95% binomial interval [{100 * lo:.2f}, {100 * hi:.2f}]%   {'inside' if inside else 'OUTSIDE'}"
    )
    out["loss5"] = {
        "lost": ip3["lost"],
        "packets": n,
        "fraction": frac,
        "interval": [lo, hi],
        "inside": inside,
    }

    # 3. Traces: delivered bytes per 100 ms window vs the trace's opportunities.
    out["traces"] = []
    if backend != "emu":
        say(
            f"[{backend}] traces: not measured: netem has no time-varying rate (the emu backend follows traces)"
        )
        traces = []
    for trace_path in traces:
        trace = load_trace(trace_path)
        peak = (
            max(
                trace.capacity_bytes(t, t + 100_000_000)
                for t in range(0, trace.period_ms * 1_000_000, 100_000_000)
            )
            * 8
            / 0.1
            / 1e6
        )
        seconds = 6 if quick else 20
        case = Case(
            backend,
            run,
            LinkSpec(trace=str(trace_path), queue_packets=100),
            LinkSpec(rate_mbps=100),
        )
        with case as net:
            assert net.info is not None
            start_real = net.info.links["path"]["uplink"]["start_real_ns"]
            rows = probe(net, peak * 1.5, 1400, seconds)
        t_rel = rows[:, 2] - start_real
        first = (int(t_rel.min()) // 100_000_000 + 2) * 100_000_000
        last = (int(t_rel.max()) // 100_000_000 - 1) * 100_000_000
        got = bytes_per_window(t_rel, rows[:, 3], first, last, 100_000_000)
        cap = np.array(
            [
                trace.capacity_bytes(first + k * 100_000_000, first + (k + 1) * 100_000_000)
                for k in range(len(got))
            ],
            dtype=np.float64,
        )
        ok = cap > 0
        err = np.abs(got[ok] / cap[ok] - 1)
        total_err = got.sum() / cap.sum() - 1
        within = float(np.mean(err <= 0.02))
        say(
            f"[{backend}] trace {trace_path.name} (mean {trace.mean_mbps:.2f} Mbps, offered {peak * 1.5:.1f})"
        )
        say(
            f"  bytes per 100 ms  |error| median {100 * np.median(err):.2f}%  p95 {100 * np.percentile(err, 95):.2f}%"
            f"  windows within 2%: {100 * within:.0f}%   total {100 * total_err:+.2f}%  ({len(got)} windows;"
            f" one 1428 B packet = {100 * 1428 / np.median(cap[ok]):.1f}% of a median window)"
        )
        out["traces"].append(
            {
                "trace": trace_path.name,
                "median_err": float(np.median(err)),
                "p95_err": float(np.percentile(err, 95)),
                "within_2pct": within,
                "total_err": float(total_err),
            }
        )

    # 4. Highest rate with p99 one-way delay error <= 0.5 ms (probe offered at 90% of rate).
    out["rates"] = []
    best = 0.0
    for rate in rates:
        case = Case(backend, run, LinkSpec(rate_mbps=rate, delay_ms=10, queue_packets=10000))
        with case as net:
            rows = probe(net, rate * 0.9, 1400, 3 if quick else 6)
        floor = fifo_floor_ns(rows[:, 1], rows[:, 3], rate, 10e6)
        q = quantiles_ms(rows[:, 2] - floor)
        sent = rows[-1, 1] - rows[0, 1]
        offered = rows[:, 3].sum() * 8 / (sent / 1e9) / 1e6 if sent > 0 else math.nan
        cpu = case.cpu
        sustained = q["p99"] <= 0.5
        best = rate if sustained and rate > best else best
        say(
            f"[{backend}] {rate:g} Mbps, offered {offered:.1f}: OWD error vs FIFO floor {_fmt(q)}"
            f"  shaper CPU {100 * cpu:.0f}% of a core  {'OK' if sustained else 'over 0.5 ms'}"
        )
        out["rates"].append(
            {
                "rate_mbps": rate,
                "offered_mbps": offered,
                "owd_error_ms": q,
                "emu_cpu": cpu,
                "ok": sustained,
            }
        )
    say(f"[{backend}] highest rate with p99 delay error <= 0.5 ms: {best:g} Mbps")
    out["max_rate_mbps"] = best
    return out


def run_link_bench(
    backends: list[str], run: str, quick: bool, rates_mbps: list[float], say: Say
) -> list[dict[str, Any]]:
    for tool in ("iperf3", "ping", "ss"):
        if shutil.which(tool) is None:
            raise UnavailableError(f"{tool} is not installed; run `make setup`")
    results: list[dict[str, Any]] = []
    for backend in backends:
        try:
            chosen, _ = choose_backend(backend, run)
        except UnavailableError as e:
            say(f"[{backend}] not measured: {e}")
            results.append({"backend": backend, "unavailable": str(e)})
            continue
        traces = default_traces()
        if quick:
            traces = traces[:3]
        results.append(bench_backend(chosen, run, quick, rates_mbps, say, traces))
    measured = [r for r in results if "rate10" in r]
    if measured:
        say("")
        say("side by side (10 Mbps / 30 ms unless noted; errors vs the physical floor, ms):")
        say(f"{'backend':<10} {'thr ratio':>9} {'RTT err':>8} {'OWD p50':>8} {'OWD p99':>8} {'OWD max':>8}"
            f" {'loss 5%':>8} " + " ".join(f"{f'{r:g}M p50/p99/CPU':>20}" for r in rates_mbps))  # fmt: skip
        for r in measured:
            r10 = r["rate10"]
            owd = r10["owd_error_ms"]
            by_rate = {x["rate_mbps"]: x for x in r["rates"]}
            cols = " ".join(
                f"{by_rate[x]['owd_error_ms']['p50']:>6.3f}/{by_rate[x]['owd_error_ms']['p99']:.3f}/"
                f"{100 * by_rate[x]['emu_cpu']:.0f}%".rjust(20)
                for x in rates_mbps
            )
            say(f"{r['backend']:<10} {r10['iperf3']['ip_mbps'] / 10:>9.4f} "
                f"{r10['ping_rtt_ms']['avg'] - r10['ref_rtt_ms']:>+8.3f} {owd['p50']:>8.3f} {owd['p99']:>8.3f}"
                f" {owd['max']:>8.3f} {100 * r['loss5']['fraction']:>7.2f}% {cols}")  # fmt: skip
    return results
