"""The link model: pure, time-injected, deterministic for a seed. No sockets, no clocks.

A packet offered at now_ns goes through, in this order (as Mahimahi and the issue have it):
  loss model -> droptail queue -> rate or trace delivery opportunities -> delay (+ jitter).
With a schedule (testbed.config.schedule), the segment in force when the packet arrives sets
its loss and delay, and the link serializes at each segment's rate as time passes (rate 0: an
outage; the backlog waits and the queue drops what does not fit).
Because the link is FIFO and the trace is known in advance, each accepted packet's release
time is fixed the moment it arrives; the emulator process only has to hold it until then.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from testbed.config import GilbertElliottSpec, LinkSpec, ScheduleSpec, Segment
from testbed.config.traces import OPPORTUNITY_BYTES, Trace

DELIVER = "deliver"
DROP_LOSS = "drop_loss"
DROP_QUEUE = "drop_queue"
NEVER_NS = 1 << 62  # a packet behind an outage that never ends


@dataclass(frozen=True)
class Verdict:
    """What happens to one packet. Times are in the caller's clock (ns); -1 when dropped."""

    event: str
    link_exit_ns: int
    release_ns: int


def fill_opportunities(index: int, left: int, size: int) -> tuple[int, int]:
    """Put `size` bytes into trace opportunities from `index` (with `left` bytes free there):
    the opportunity that takes the last byte, and what is left of it."""
    while size > left:
        size -= left
        index += 1
        left = OPPORTUNITY_BYTES
    return index, left - size


def serialize_on_schedule(schedule: ScheduleSpec, start_ns: int, t: float, size: int) -> float:
    """When `size` bytes started at t (ns) have left a link following `schedule` from start_ns:
    each segment at its rate (None: at once; 0: an outage, nothing leaves until it ends)."""
    bits = size * 8.0
    while True:
        rel = max(0.0, t - start_ns)
        seg = schedule.at(rel)
        end = start_ns + schedule.boundary_after(rel)
        if seg.rate_mbps is None:
            return t
        if seg.rate_mbps == 0:
            if end == float("inf"):
                return float(NEVER_NS)
            t = end
            continue
        per_ns = seg.rate_mbps * 1e-3  # bits per ns
        if t + bits / per_ns <= end:
            return t + bits / per_ns
        bits -= (end - t) * per_ns
        t = end


class LossModel(Protocol):
    def lost(self) -> bool: ...


class NoLoss:
    def lost(self) -> bool:
        return False


class BernoulliLoss:
    """Each packet independently lost with probability loss_pct / 100."""

    def __init__(self, loss_pct: float, rng: random.Random) -> None:
        self.p = loss_pct / 100.0
        self.rng = rng

    def lost(self) -> bool:
        return self.rng.random() < self.p


class GilbertElliottLoss:
    """Loss decided in the state the packet finds, then the state moves (netem's order)."""

    def __init__(self, spec: GilbertElliottSpec, rng: random.Random) -> None:
        self.p = spec.p_pct / 100.0
        self.r = spec.r_pct / 100.0
        self.loss_bad = spec.loss_bad_pct / 100.0
        self.loss_good = spec.loss_good_pct / 100.0
        self.rng = rng
        self.bad = False

    def lost(self) -> bool:
        rng = self.rng
        lost = rng.random() < (self.loss_bad if self.bad else self.loss_good)
        if self.bad:
            if rng.random() < self.r:
                self.bad = False
        elif rng.random() < self.p:
            self.bad = True
        return lost


def make_loss_model(spec: LinkSpec, rng: random.Random) -> LossModel:
    if spec.gilbert_elliott is not None:
        return GilbertElliottLoss(spec.gilbert_elliott, rng)
    if spec.loss_pct > 0:
        return BernoulliLoss(spec.loss_pct, rng)
    return NoLoss()


class LinkModel:
    """One direction of an emulated link. Feed it packets with offer(); it never reads a clock.

    start_ns: the time the link (and its trace) started, in the caller's clock.
    """

    def __init__(
        self, spec: LinkSpec, seed: int, start_ns: int = 0, trace: Trace | None = None
    ) -> None:
        if spec.trace is not None and trace is None:
            raise ValueError("spec has a trace: pass the loaded Trace")
        self.spec = spec
        self.start_ns = start_ns
        self.trace = trace if spec.trace is not None else None
        # Separate streams: the loss pattern does not depend on jitter, nor on queue drops.
        self.loss = make_loss_model(spec, random.Random(seed))
        self._jitter_rng = random.Random(seed + 0x5EED)
        self._ns_per_byte = 8_000.0 / spec.rate_mbps if spec.rate_mbps else 0.0
        self._delay_ns = round(spec.delay_ms * 1e6)
        self._jitter_ns = spec.jitter_ms * 1e6
        self._busy_until = float(start_ns)  # rate mode: when the link finishes its backlog
        self._opp_index = -1  # trace mode: the opportunity being filled, and its bytes left
        self._opp_left = 0
        self._queue: deque[tuple[int, int]] = deque()  # (link exit ns, bytes) not yet sent
        self._queue_bytes = 0
        self._last_release = start_ns
        self._queue_ns = round(spec.queue_ms * 1e6) if spec.queue_ms is not None else None
        self.schedule = spec.schedule
        if self.schedule is not None:
            self._rng = random.Random(seed)  # the scheduled loss models draw from one stream
            self._ge_bad = False

    # --- shared with the queue-discipline model (queue_link.py) -----------------------------
    def lost_at(self, now_ns: int) -> bool:
        """Whether a packet arriving at now_ns is lost (draws from the loss stream)."""
        if self.schedule is not None:
            return self._lost_scheduled(self.segment_at(now_ns))
        return self.loss.lost()

    def delay_at(self, now_ns: int) -> int:
        """The delay (+ jitter) of a packet that arrived at now_ns, in ns."""
        if self.schedule is not None:
            seg = self.segment_at(now_ns)
            delay_ms, jitter_ms = seg.delay_ms, seg.jitter_ms
        else:
            delay_ms, jitter_ms = self.spec.delay_ms, self.spec.jitter_ms
        return self._jittered(round(delay_ms * 1e6), jitter_ms * 1e6)

    # --- queue occupancy -----------------------------------------------------------------
    def _drain(self, now_ns: int) -> None:
        q = self._queue
        while q and q[0][0] <= now_ns:
            self._queue_bytes -= q.popleft()[1]

    def queued_packets(self, now_ns: int) -> int:
        self._drain(now_ns)
        return len(self._queue)

    def queued_bytes(self, now_ns: int) -> int:
        self._drain(now_ns)
        return self._queue_bytes

    # --- the link ------------------------------------------------------------------------
    def _link_exit_rate(self, now_ns: int, size: int) -> int:
        start = max(float(now_ns), self._busy_until)
        self._busy_until = start + size * self._ns_per_byte
        return round(self._busy_until)

    def _link_exit_trace(self, now_ns: int, size: int) -> int:
        trace = self.trace
        assert trace is not None
        rel = now_ns - self.start_ns
        if self._opp_index < 0 or trace.opportunity_ns(self._opp_index) < rel:
            # The link went idle: unused opportunities are gone; start at the next one.
            self._opp_index = trace.first_index_at_or_after(max(rel, 0))
            self._opp_left = OPPORTUNITY_BYTES
        self._opp_index, self._opp_left = fill_opportunities(self._opp_index, self._opp_left, size)
        return self.start_ns + trace.opportunity_ns(self._opp_index)

    # --- a schedule --------------------------------------------------------------------------
    def segment_at(self, now_ns: int) -> Segment:
        assert self.schedule is not None
        return self.schedule.at(max(0, now_ns - self.start_ns))

    def _lost_scheduled(self, seg: Segment) -> bool:
        """The segment's loss: Gilbert-Elliott (its state carries across segments) or Bernoulli."""
        rng = self._rng
        ge = seg.gilbert_elliott
        if ge is not None:
            lost = rng.random() < (ge.loss_bad_pct if self._ge_bad else ge.loss_good_pct) / 100
            if self._ge_bad:
                if rng.random() < ge.r_pct / 100:
                    self._ge_bad = False
            elif rng.random() < ge.p_pct / 100:
                self._ge_bad = True
            return lost
        return seg.loss_pct > 0 and rng.random() < seg.loss_pct / 100

    def _link_exit_schedule(self, now_ns: int, size: int) -> int:
        """Serialize `size` bytes from when the link is free, at each segment's rate in turn."""
        assert self.schedule is not None
        t = max(float(now_ns), self._busy_until)
        self._busy_until = serialize_on_schedule(self.schedule, self.start_ns, t, size)
        return round(self._busy_until)

    def _jittered(self, delay_ns: int, jitter_ns: float) -> int:
        """A packet's delay with its jitter drawn (none drawn without jitter)."""
        if not jitter_ns:
            return delay_ns
        return max(0, round(delay_ns + self._jitter_rng.gauss(0.0, jitter_ns)))

    def initial_state(self) -> dict[str, object]:
        """This model's constants and random streams before its first packet, as the compiled
        model (testbed/shaping/_emucore.c) takes them: it then gives the same verdicts."""
        if self.schedule is not None:
            raise ValueError("a link with a schedule keeps the pure model")
        loss = self.loss
        ge = loss if isinstance(loss, GilbertElliottLoss) else None
        return {
            "start_ns": self.start_ns,
            "ns_per_byte": self._ns_per_byte,
            "delay_ns": self._delay_ns,
            "jitter_ns": self._jitter_ns,
            "queue_packets": self.spec.queue_packets,
            "queue_bytes": self.spec.queue_bytes,
            "queue_ns": self._queue_ns,
            "loss_kind": 2 if ge else 1 if isinstance(loss, BernoulliLoss) else 0,
            "p": loss.p if isinstance(loss, BernoulliLoss | GilbertElliottLoss) else 0.0,
            "r": ge.r if ge else 0.0,
            "loss_bad": ge.loss_bad if ge else 0.0,
            "loss_good": ge.loss_good if ge else 0.0,
            # NoLoss draws nothing: any stream will do
            "loss_state": getattr(loss, "rng", self._jitter_rng).getstate(),
            "jitter_state": self._jitter_rng.getstate(),
            "opportunities_ms": list(self.trace.opportunities_ms) if self.trace else None,
        }

    def offer(self, now_ns: int, size: int) -> Verdict:
        """A packet of `size` IP bytes arrives at now_ns. Calls must come in time order."""
        if self.schedule is not None:
            return self._offer_scheduled(now_ns, size)
        if self.loss.lost():
            return Verdict(DROP_LOSS, -1, -1)
        if not self._admit(now_ns, size):
            return Verdict(DROP_QUEUE, -1, -1)
        if self.trace is not None:
            exit_ns = self._link_exit_trace(now_ns, size)
        elif self._ns_per_byte:
            exit_ns = self._link_exit_rate(now_ns, size)
        else:
            exit_ns = now_ns
        self._queue.append((exit_ns, size))
        self._queue_bytes += size
        delay = self._jittered(self._delay_ns, self._jitter_ns)
        # FIFO: jitter never reorders packets (a packet waits for the one before it).
        release = max(exit_ns + delay, self._last_release)
        self._last_release = release
        return Verdict(DELIVER, exit_ns, release)

    def _admit(self, now_ns: int, size: int) -> bool:
        """Droptail: is there room in the queue for this packet?"""
        spec = self.spec
        self._drain(now_ns)
        return not (
            (spec.queue_packets is not None and len(self._queue) >= spec.queue_packets)
            or (spec.queue_bytes is not None and self._queue_bytes + size > spec.queue_bytes)
            or (self._queue_ns is not None and self._wait_ns(now_ns) > self._queue_ns)
        )

    def _wait_ns(self, now_ns: int) -> float:
        """How long a packet arriving now waits before the link starts sending it."""
        if self.trace is not None:
            rel = now_ns - self.start_ns
            if self._opp_index < 0 or self.trace.opportunity_ns(self._opp_index) < rel:
                return 0.0  # the link is idle
            first = self._opp_index if self._opp_left else self._opp_index + 1
            return float(self.trace.opportunity_ns(first) - rel)
        return max(0.0, self._busy_until - now_ns)

    def _offer_scheduled(self, now_ns: int, size: int) -> Verdict:
        seg = self.segment_at(now_ns)
        if self._lost_scheduled(seg):
            return Verdict(DROP_LOSS, -1, -1)
        if not self._admit(now_ns, size):
            return Verdict(DROP_QUEUE, -1, -1)
        exit_ns = self._link_exit_schedule(now_ns, size)
        self._queue.append((exit_ns, size))
        self._queue_bytes += size
        delay = self._jittered(round(seg.delay_ms * 1e6), seg.jitter_ms * 1e6)
        release = max(exit_ns + delay, self._last_release)
        self._last_release = release
        return Verdict(DELIVER, exit_ns, release)
