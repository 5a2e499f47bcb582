"""The compiled emulator core (_emucore.c), and how the pure model's spec becomes its input.

The pure model (model.LinkModel) stays the reference: the compiled Model draws from the same
CPython Mersenne Twister streams (their state is handed over, not re-seeded) and follows the
same steps, so a test can hold the two side by side packet for packet. A link with a schedule
keeps the pure model: the compiled loop calls its offer() for each packet.
"""

from __future__ import annotations

import random
from typing import Any

from testbed.config import LinkSpec
from testbed.config.traces import Trace
from testbed.shaping.model import LinkModel

try:
    from testbed.shaping import _emucore  # type: ignore[attr-defined]
except ImportError as e:  # not built: `make setup` (pip install -e .) compiles it
    _emucore = None
    WHY_NOT = f"the compiled emulator core is not built ({e}); run `make setup`"
else:
    WHY_NOT = ""

JITTER_SEED_OFFSET = 0x5EED  # as LinkModel: the jitter stream is the loss stream's seed + this


def available() -> bool:
    return _emucore is not None


def model_params(spec: LinkSpec, seed: int, start_ns: int, trace: Trace | None) -> dict[str, Any]:
    """The compiled Model's input for a link without a schedule: LinkModel's state at start."""
    if spec.schedule is not None:
        raise ValueError("a link with a schedule keeps the pure model")
    ge = spec.gilbert_elliott
    params: dict[str, Any] = {
        "start_ns": start_ns,
        "ns_per_byte": 8_000.0 / spec.rate_mbps if spec.rate_mbps else 0.0,
        "delay_ns": round(spec.delay_ms * 1e6),
        "jitter_ns": spec.jitter_ms * 1e6,
        "queue_packets": spec.queue_packets,
        "queue_bytes": spec.queue_bytes,
        "loss_kind": 2 if ge is not None else 1 if spec.loss_pct > 0 else 0,
        "p": ge.p_pct / 100 if ge else spec.loss_pct / 100.0,
        "r": ge.r_pct / 100 if ge else 0.0,
        "loss_bad": ge.loss_bad_pct / 100 if ge else 0.0,
        "loss_good": ge.loss_good_pct / 100 if ge else 0.0,
        "loss_state": random.Random(seed).getstate(),
        "jitter_state": random.Random(seed + JITTER_SEED_OFFSET).getstate(),
        "opportunities_ms": list(trace.opportunities_ms) if spec.trace and trace else None,
    }
    return params


JITTER_SIGMAS = 6  # a jittered delay below delay - 6 sigma: about once in 10^9 packets


def lookahead_ns(spec: LinkSpec) -> int:
    """The least delay a packet can get on this link: how long after arrival it may be read.

    Serialization only adds to it; jitter takes off up to JITTER_SIGMAS of its sigma. A packet
    read later than its release is released at once and counted (read_late in the stats).
    """
    parts = spec.schedule.segments if spec.schedule is not None else (spec,)
    least = min(p.delay_ms - JITTER_SIGMAS * p.jitter_ms for p in parts)
    return max(0, round(least * 1e6))


def make_model(spec: LinkSpec, seed: int, start_ns: int, trace: Trace | None) -> Any:
    """The model the loop runs: compiled when it can be, the pure one for schedules."""
    if _emucore is None or spec.schedule is not None:
        return LinkModel(spec, seed=seed, start_ns=start_ns, trace=trace)
    return _emucore.Model(model_params(spec, seed, start_ns, trace))


def run_loop(
    tun_fd: int,
    stamp_fd: int,
    model: Any,
    log_fd: int,
    start_ns: int,
    stop: list[int],
    wake_quantile: float,
    lookahead: int,
    tick_ns: int = 0,
) -> dict[str, Any]:
    """The compiled loop until stop[0] is set (by a signal handler); its counters."""
    assert _emucore is not None, WHY_NOT
    stats: dict[str, Any] = _emucore.run(
        tun_fd,
        stamp_fd,
        model,
        log_fd,
        start_ns,
        stop,
        quantile=wake_quantile,
        lookahead_ns=lookahead,
        tick_ns=tick_ns,
    )
    return stats
