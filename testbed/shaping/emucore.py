"""The compiled emulator core (_emucore.c): the model it runs, and its loop.

The pure model (model.LinkModel) stays the reference: the compiled Model draws from the same
CPython Mersenne Twister streams (their state is handed over, not re-seeded) and follows the
same steps, so a test can hold the two side by side packet for packet. A link with a schedule
keeps the pure model: the compiled loop calls its offer() for each packet.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from testbed.config import LinkSpec
from testbed.config.traces import Trace
from testbed.shaping.model import LinkModel
from testbed.shaping.queue_link import QueueLinkModel

try:
    from testbed.shaping import _emucore  # type: ignore[attr-defined]
except ImportError as e:  # not built: `make setup` (pip install -e .) compiles it
    _emucore = None
    WHY_NOT = f"the compiled emulator core is not built ({e}); run `make setup`"
else:
    WHY_NOT = ""


def available() -> bool:
    return _emucore is not None


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
    """The model the loop runs: compiled when it can be, the pure one for schedules. The
    compiled one starts from a fresh pure model's state (LinkModel.initial_state)."""
    reference = LinkModel(spec, seed=seed, start_ns=start_ns, trace=trace)
    if _emucore is None or spec.schedule is not None:
        return reference
    return _emucore.Model(reference.initial_state())


class LoopIo(NamedTuple):
    """What both compiled loops run on: the link's TUN, the arrival-stamp socket (-1: none),
    the model, the log's fd, the link's start (CLOCK_MONOTONIC ns), and the stop flag a signal
    handler sets (stop[0])."""

    tun_fd: int
    stamp_fd: int
    model: Any
    log_fd: int
    start_ns: int
    stop: list[int]


def run_loop(io: LoopIo, wake_quantile: float, lookahead: int, tick_ns: int = 0) -> dict[str, Any]:
    """The compiled loop until stop[0] is set (by a signal handler); its counters."""
    assert _emucore is not None, WHY_NOT
    stats: dict[str, Any] = _emucore.run(
        *io,
        quantile=wake_quantile,
        lookahead_ns=lookahead,
        tick_ns=tick_ns,
    )
    return stats


def make_queue_model(spec: LinkSpec, seed: int, start_ns: int, trace: Trace | None) -> Any:
    """A link with a queue discipline: compiled (_emucore.QModel) when it can be, the pure
    QueueLinkModel for schedules; the compiled one starts from the pure one's state."""
    reference = QueueLinkModel(spec, seed=seed, start_ns=start_ns, trace=trace)
    if _emucore is None or spec.schedule is not None:
        return reference
    return _emucore.QModel(reference.initial_state())


def run_queue_loop(io: LoopIo, lookahead: int) -> dict[str, Any]:
    """The compiled loop of a queue-discipline link until stop[0] is set; its counters."""
    assert _emucore is not None, WHY_NOT
    stats: dict[str, Any] = _emucore.run_queue(*io, lookahead_ns=lookahead)
    return stats
