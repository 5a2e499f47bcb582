"""`testbed bench link --load`: the emulator under load: CPU per direction, precision, overload.

Per rate, one link (rate R, 30 ms, the default 1,000-packet queue) and three measurements:
the timestamped probe at 0.9 R (one-way delay error against the FIFO floor), iperf3 UDP at 1.2 R
(delivered, with every packet the emulator wrote accounted for at the receiver: its UDP layer
got it, or dropped it at iperf3's socket buffer), and the CPU of each direction's emulator.
Then the overload case: offered 2x the highest rate that kept its precision, with the release
lateness of what was delivered, the recovery time once the load stops, and a clean stop.

References measured in the same run: the platform's own cost of one timer wake-up (a plain
process that sleeps and wakes; an emulator releasing each packet on time pays about
packets/s x that), iperf3's own CPU, and what the spec says.
"""

from __future__ import annotations

import math
import resource
import select
import time
from collections.abc import Callable
from typing import Any

from testbed.bench.link import Case, iperf3_udp, probe
from testbed.bench.metrics import fifo_floor_ns, quantiles_ms
from testbed.config import LinkSpec
from testbed.net.network import Network
from testbed.procstat import clock_ticks_per_s, read_stat
from testbed.shaping.ceiling import PRECISE_P99_MS
from testbed.shaping.emu import EmuBackend

Say = Callable[[str], None]
DEFAULT_RATES = (2.0, 10.0, 100.0, 300.0, 600.0, 1000.0)
PROBE_MAX_MBPS = 300.0  # the probe sender is Python: past this it is the limit, not the link
SMALL_PACKET_RATE = 2.0  # at this rate and below the probe sends 200-byte packets (as Mahimahi's)
FULL_RATE = 0.97  # the link delivered this share of its rate: it kept up
RECOVERED_MS = 1.0  # recovered: a ping's RTT within this of the unloaded one


def wake_cost(samples: int = 2000, sleep_us: int = 200) -> dict[str, float]:
    """CPU and lateness of one timer sleep-and-wake of a plain process (the platform's floor)."""
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    late = []
    for _ in range(samples):
        t0 = time.monotonic_ns()
        select.select([], [], [], sleep_us / 1e6)
        late.append((time.monotonic_ns() - t0) / 1000 - sleep_us)
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
    late.sort()
    return {
        "cpu_us_per_wake": cpu / samples * 1e6,
        "late_p50_us": late[len(late) // 2],
        "late_p99_us": late[int(len(late) * 0.99)],
    }


def backend_for(loop: str) -> EmuBackend:
    """compiled, python (the reference loop), or tickN: the compiled loop with an N us tick."""
    if loop.startswith("tick"):
        return EmuBackend(loop="compiled", release_tick_us=float(loop[4:]))
    return EmuBackend(loop=loop)


def valid_loop(loop: str) -> bool:
    return loop in ("compiled", "python") or (loop.startswith("tick") and loop[4:].isdigit())


def _cpu_s(pid: int) -> float:
    st = read_stat(pid)
    return st.cpu_ticks / clock_ticks_per_s() if st is not None else math.nan


def receiver_counters(net: Network) -> dict[str, int]:
    """The receiver host's IP and UDP counters (its namespace is new: they count from zero)."""
    lines = net.run_in("receiver", ["cat", "/proc/net/snmp"]).stdout.splitlines()
    out: dict[str, int] = {}
    for proto in ("Ip:", "Udp:"):
        rows = [line.split()[1:] for line in lines if line.startswith(proto)]
        out.update({proto + k: int(v) for k, v in zip(rows[0], rows[1], strict=True)})
    return out


def link_delivered_mbps(
    ip3: dict[str, Any], before: dict[str, int], after: dict[str, int]
) -> float:
    """What the link delivered during iperf3: iperf3's own rate (its middle intervals) scaled up
    by the datagrams the receiver host got but iperf3 could not take (its socket buffer full)."""
    received = after["Ip:InReceives"] - before["Ip:InReceives"]
    dropped = after["Udp:RcvbufErrors"] - before["Udp:RcvbufErrors"]
    taken = max(received - dropped, 1)
    return float(ip3["ip_mbps"]) * received / taken


class LoadCase(Case):
    """One link up; CPU of each direction's emulator between mark() and cpu_since_mark()."""

    def __init__(self, run: str, loop: str, spec: LinkSpec) -> None:
        super().__init__(
            backend_for(loop), run, spec, LinkSpec(rate_mbps=spec.rate_mbps, delay_ms=spec.delay_ms)
        )
        self.stop_s = math.nan

    def __enter__(self) -> LoadCase:  # type: ignore[override]
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        t0 = time.monotonic()
        super().__exit__(*exc)  # stops the link, then reads the uplink's stats
        self.stop_s = time.monotonic() - t0

    @property
    def stats(self) -> dict[str, Any]:
        return self.emu

    def pids(self) -> dict[str, int]:
        assert self.net.info is not None
        return {d: int(self.net.info.links["path"][d]["pid"]) for d in ("uplink", "downlink")}

    def mark(self) -> None:
        self._mark_t = time.monotonic()
        self._mark_cpu = {d: _cpu_s(p) for d, p in self.pids().items()}

    def cpu_since_mark(self) -> dict[str, float]:
        span = max(time.monotonic() - self._mark_t, 1e-9)
        return {d: (_cpu_s(p) - self._mark_cpu[d]) / span for d, p in self.pids().items()}


def measure_rate(run: str, loop: str, rate: float, secs: float) -> dict[str, Any]:
    spec = LinkSpec(rate_mbps=rate, delay_ms=30)
    payload = 172 if rate <= SMALL_PACKET_RATE else 1400
    probe_rate = min(0.9 * rate, PROBE_MAX_MBPS) if rate > SMALL_PACKET_RATE else rate
    iperf_secs = max(2, round(secs))
    with LoadCase(run, loop, spec) as case:
        case.mark()
        rows = probe(case.net, probe_rate, payload, secs)
        probe_cpu = case.cpu_since_mark()
        before = receiver_counters(case.net)
        case.mark()
        ip3 = iperf3_udp(case.net, 1.2 * rate, iperf_secs)
        iperf_cpu = case.cpu_since_mark()
        time.sleep(0.1)  # the last releases (30 ms)
        after = receiver_counters(case.net)
    floor = fifo_floor_ns(rows[:, 1], rows[:, 3], rate, 30e6)
    err = quantiles_ms(rows[:, 2] - floor)
    sent = rows[-1, 1] - rows[0, 1]
    offered = rows[:, 3].sum() * 8 / (sent / 1e9) / 1e6 if sent > 0 else math.nan
    link_mbps = link_delivered_mbps(ip3, before, after)
    return {
        "loop": loop,
        "rate_mbps": rate,
        "probe": {"offered_mbps": offered, "payload": payload, "owd_error_ms": err},
        "cpu_probe": probe_cpu,
        "iperf3": ip3,
        "cpu_iperf3": iperf_cpu,
        "iperf3_own_cpu": ip3.get("cpu", {}),
        "receiver": {
            "ip_in_receives": after["Ip:InReceives"],
            "udp_rcvbuf_errors": after["Udp:RcvbufErrors"],
            "link_mbps_during_iperf3": link_mbps,
        },
        "emulator": case.stats,
        "ok": err["p99"] <= PRECISE_P99_MS,
        "full_rate": link_mbps >= FULL_RATE * rate,
    }


def overload(run: str, loop: str, rate: float, secs: float) -> dict[str, Any]:
    """Offered 2x `rate` for `secs`: delivered, release lateness, recovery, a clean stop."""
    with LoadCase(run, loop, LinkSpec(rate_mbps=rate, delay_ms=5)) as case:
        net = case.net
        base = _ping_ms(net)
        before = receiver_counters(net)
        case.mark()
        ip3 = iperf3_udp(net, 2 * rate, max(2, round(secs)))
        cpu = case.cpu_since_mark()
        t_end = time.monotonic()
        link_mbps = link_delivered_mbps(ip3, before, receiver_counters(net))
        recovery = math.nan
        while time.monotonic() - t_end < 5:
            rtt = _ping_ms(net)
            if rtt is not None and base is not None and rtt <= base + RECOVERED_MS:
                recovery = time.monotonic() - t_end
                break
    st = case.stats
    return {
        "loop": loop,
        "rate_mbps": rate,
        "offered_mbps": 2 * rate,
        "delivered_mbps": link_mbps,  # at the receiver host's IP layer
        "iperf3_mbps": ip3["ip_mbps"],
        "cpu": cpu,
        "lateness_us": st.get("lateness_us"),
        "shed_s": (st.get("wake") or {}).get("shed_s"),
        "drop_queue": st.get("drop_queue"),
        "deliver": st.get("deliver"),
        "recovery_s": recovery,
        "stop_s": case.stop_s,
        "stopped_cleanly": bool(st),
    }


def _iperf_cpu(cpu: dict[str, float | None]) -> str:
    if cpu.get("sender_pct") is None:
        return ""
    return (
        f"; iperf3's own CPU: sender {cpu['sender_pct']:.0f}%, receiver {cpu['receiver_pct']:.0f}%"
    )


def _ping_ms(net: Network) -> float | None:
    out = net.run_in(
        "sender", ["ping", "-n", "-c", "1", "-W", "1", net.address("receiver")], check=False
    ).stdout
    for part in out.split():
        if part.startswith("time="):
            return float(part[5:])
    return None


def run_load_bench(
    run: str, loops: list[str], rates: list[float], quick: bool, say: Say
) -> dict[str, Any]:
    secs = 3.0 if quick else 6.0
    floor = wake_cost()
    say(
        f"platform: one timer sleep-and-wake costs {floor['cpu_us_per_wake']:.1f} us of CPU and lands "
        f"p50 {floor['late_p50_us']:.0f} / p99 {floor['late_p99_us']:.0f} us late (a plain process, now)"
    )
    out: dict[str, Any] = {"wake_floor": floor, "rates": [], "overload": []}
    for loop in loops:
        best = full = 0.0
        for rate in rates:
            r = measure_rate(run, loop, rate, secs)
            out["rates"].append(r)
            e, st = r["probe"]["owd_error_ms"], r["emulator"]
            acc = r["receiver"]
            say(
                f"[{loop}] {rate:g} Mbps: probe {r['probe']['offered_mbps']:.1f} Mbps of "
                f"{r['probe']['payload'] + 28} B, OWD error p50 {e['p50']:.3f} p99 {e['p99']:.3f} "
                f"max {e['max']:.3f} ms, CPU up {100 * r['cpu_probe']['uplink']:.1f}% "
                f"(wake floor x pps {100 * floor['cpu_us_per_wake'] * 1e-6 * e['n'] / secs:.1f}%)"
            )
            say(
                f"    iperf3 {1.2 * rate:g} offered: the link delivered {acc['link_mbps_during_iperf3']:.1f}"
                f" Mbps, iperf3 got {r['iperf3']['ip_mbps']:.1f}; CPU up "
                f"{100 * r['cpu_iperf3']['uplink']:.0f}% down {100 * r['cpu_iperf3']['downlink']:.0f}%;"
                f" packets written by the emulator {st.get('deliver')}, received by the receiver host"
                f" {acc['ip_in_receives']} ({acc['udp_rcvbuf_errors']} of them dropped at iperf3's full"
                " socket buffer)" + _iperf_cpu(r["iperf3_own_cpu"])
            )
            best = rate if r["ok"] and rate > best else best
            full = rate if r["full_rate"] and rate > full else full
        say(f"[{loop}] highest rate with p99 delay error <= {PRECISE_P99_MS} ms: {best:g} Mbps;"
            f" highest the link delivered at >= {100 * FULL_RATE:.0f}% of: {full:g} Mbps")  # fmt: skip
        out.setdefault("max_rate_mbps", {})[loop] = best
        out.setdefault("full_rate_mbps", {})[loop] = full
        ceiling = full or min(rates)
        o = overload(run, loop, ceiling, secs)
        out["overload"].append(o)
        late = o["lateness_us"] or {}
        say(
            f"[{loop}] overload: {ceiling:g} Mbps offered {o['offered_mbps']:g}: the link delivered "
            f"{o['delivered_mbps']:.1f} Mbps (iperf3 got {o['iperf3_mbps']:.1f}), CPU up {100 * o['cpu']['uplink']:.0f}%, release lateness "
            f"p50 {late.get('p50')} p99 {late.get('p99')} us, recovered in "
            f"{1000 * o['recovery_s']:.0f} ms, stopped in {o['stop_s']:.2f} s"
            f" ({'cleanly' if o['stopped_cleanly'] else 'NOT cleanly: no stats written'})"
        )
    return out
