"""LinkSpec -> kernel netem parameters. Pure: the groundwork of the netem backend (issue 3).

One netem qdisc does what the emu backend does, in the same order: loss at enqueue (Bernoulli or
`gemodel`), a droptail limit, then `rate` (serialization) and `delay` (+ jitter). netem's rate
counts the frame length (IP + 14 bytes of Ethernet header); packet_overhead -14 makes it count
IP bytes, like the emulator. Units differ by layer: pyroute2 takes microseconds and percentages;
the tc CLI takes strings with units. pyroute2 cannot express `loss gemodel`: that needs tc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from testbed.config import LinkSpec
from testbed.errors import UnavailableError

ETHERNET_HEADER = 14
SMALLEST_PACKET = 100  # bytes: sizes the in-flight part of netem's limit generously


@dataclass(frozen=True)
class NetemParams:
    delay_us: int
    jitter_us: int
    loss_pct: float
    gemodel_pct: tuple[float, float, float, float] | None  # p, r, 1-h, 1-k
    rate_bps: int | None
    packet_overhead: int
    limit_packets: int

    def pyroute2_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for pyroute2's `tc('add', 'netem', ...)`."""
        if self.gemodel_pct is not None:
            raise ValueError("pyroute2 cannot express loss gemodel: use tc_args()")
        kw: dict[str, Any] = {"delay": self.delay_us, "limit": self.limit_packets}
        if self.jitter_us:
            kw["jitter"] = self.jitter_us
        if self.loss_pct:
            kw["loss"] = self.loss_pct
        if self.rate_bps:
            kw["rate"] = f"{self.rate_bps}bit"
            kw["packet_overhead"] = self.packet_overhead
        return kw

    def tc_args(self) -> list[str]:
        """The same as `tc qdisc add dev IF root netem ARGS...`."""
        args = ["delay", f"{self.delay_us}us"]
        if self.jitter_us:
            args += [f"{self.jitter_us}us", "distribution", "normal"]
        if self.gemodel_pct is not None:
            args += ["loss", "gemodel", *(f"{v:g}%" for v in self.gemodel_pct)]
        elif self.loss_pct:
            args += ["loss", "random", f"{self.loss_pct:g}%"]
        if self.rate_bps:
            args += ["rate", f"{self.rate_bps}bit", str(self.packet_overhead)]
        return [*args, "limit", str(self.limit_packets)]


def segment_specs(spec: LinkSpec) -> list[tuple[float, LinkSpec]]:
    """A scheduled direction as (duration_ms, the constant spec of that segment). An outage
    (rate 0) becomes loss 100%: netem computes a packet's departure when it enqueues it, so a
    near-zero rate would stall every packet queued in the outage long after it ends."""
    if spec.schedule is None:
        return [(float("inf"), spec)]
    out = []
    for seg in spec.schedule.segments:
        outage = seg.rate_mbps == 0
        out.append((seg.duration_ms, replace(
            spec, schedule=None, rate_mbps=None if outage else seg.rate_mbps, delay_ms=seg.delay_ms,
            jitter_ms=seg.jitter_ms, loss_pct=100.0 if outage else seg.loss_pct,
            gilbert_elliott=None if outage else seg.gilbert_elliott,
        )))  # fmt: skip
    return out


def netem_params(spec: LinkSpec) -> NetemParams:
    """Translate one direction; what netem cannot do is an UnavailableError saying what can.
    A scheduled direction: its first segment (segment_specs gives every one)."""
    if spec.schedule is not None:
        return netem_params(segment_specs(spec)[0][1])
    if spec.trace is not None:
        raise UnavailableError(
            "the netem backend cannot follow a Mahimahi trace (netem has no time-varying rate); "
            "use --backend emu for trace links"
        )
    if not spec.queue.is_default or spec.queue_ms is not None or spec.ecn:
        raise UnavailableError(
            "the netem backend builds only netem's own droptail queue in packets: queue "
            f"{spec.queue.discipline}, queue_ms and ecn run on --backend emu (the kernel's "
            "codel/pie/fq_codel stages are not built: user-mode-linux, where they would run here, "
            "does not boot on this host)"
        )
    if spec.queue_bytes is not None:
        raise UnavailableError(
            "netem limits its queue in packets, not bytes: use queue_packets, or --backend emu"
        )
    ge = spec.gilbert_elliott
    gemodel = (ge.p_pct, ge.r_pct, ge.loss_bad_pct, ge.loss_good_pct) if ge is not None else None
    rate_bps = round(spec.rate_mbps * 1e6) if spec.rate_mbps else None
    # netem's limit counts every packet it holds, also those only waiting out the delay
    # (Mininet issue #1129: too small a limit collapses throughput on long links)
    hold_s = (spec.delay_ms + 4 * spec.jitter_ms) / 1000
    in_flight = math.ceil((rate_bps or 1e9) * hold_s / (8 * SMALLEST_PACKET))
    queue = spec.queue_packets if spec.queue_packets is not None else 100_000
    return NetemParams(
        delay_us=round(spec.delay_ms * 1000),
        jitter_us=round(spec.jitter_ms * 1000),
        loss_pct=spec.loss_pct,
        gemodel_pct=gemodel,
        rate_bps=rate_bps,
        packet_overhead=-ETHERNET_HEADER,
        limit_packets=queue + in_flight,
    )
