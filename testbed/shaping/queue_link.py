"""A link direction whose queue has a discipline (testbed.shaping.aqm): pure, time-injected.

The FIFO model (model.LinkModel) fixes each packet's release when it arrives. An AQM decides at
dequeue time (CoDel) or serves flows out of arrival order (FQ-CoDel), so here the link is a
discrete-event server: a packet waits in the discipline until the link is free, the discipline
picks what leaves (dropping or marking on the way), and only then is its link exit and release
known. The emulator offers packets in arrival order and calls advance(now) as time passes;
both return Outcomes, each packet's fate exactly once.

Order (as the FIFO model): loss on arrival -> the discipline (with the link's limits) -> the
link's capacity (rate, trace or schedule) -> delay (+ jitter, FIFO: never reordering).
Sojourn = dequeue time - arrival: the time a packet waited in the queue, not being sent. A packet
dropped after it was queued (CoDel at dequeue, drophead, FQ-CoDel's overflow) has the time it
waited until then; one dropped on arrival has none (-1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from testbed.config import LinkSpec
from testbed.config.schedule import ScheduleSpec
from testbed.config.traces import OPPORTUNITY_BYTES, Trace
from testbed.shaping.aqm import Limits, Packet, make_discipline
from testbed.shaping.model import (
    DELIVER,
    DROP_LOSS,
    LinkModel,
    fill_opportunities,
    serialize_on_schedule,
)

DISCIPLINE_CODES = {"drophead": 1, "codel": 2, "pie": 3, "fq_codel": 4}  # _emuqueue.c's D_*


@dataclass(frozen=True)
class Outcome:
    """One packet's fate. Times in the caller's clock (ns); -1 where there is none."""

    seq: int
    event: str
    link_exit_ns: int = -1
    release_ns: int = -1
    sojourn_ns: int = -1
    ce: bool = False


class RateServer:
    """A constant rate (or none: ns_per_byte 0)."""

    def __init__(self, rate_mbps: float | None) -> None:
        self.ns_per_byte = 8_000.0 / rate_mbps if rate_mbps else 0.0
        self.free = float("-inf")

    def free_at(self) -> float:
        return self.free

    def wake(self, now: int) -> None:
        """A packet arrives at an empty queue: an idle link starts now."""
        self.free = max(self.free, float(now))

    def serve(self, t: int, size: int) -> int:
        self.free = t + size * self.ns_per_byte
        return round(self.free)

    def wait(self, now: int, backlog: int) -> int:
        return round(max(0.0, self.free - now) + backlog * self.ns_per_byte)


class TraceServer:
    """Mahimahi delivery opportunities of OPPORTUNITY_BYTES each; unused ones are lost."""

    def __init__(self, trace: Trace, start_ns: int) -> None:
        self.trace = trace
        self.start = start_ns
        self.index = -1
        self.left = 0

    def _opp(self, index: int) -> int:
        return self.start + self.trace.opportunity_ns(index)

    def free_at(self) -> float:
        if self.index < 0:
            return float("-inf")
        return self._opp(self.index if self.left else self.index + 1)

    def wake(self, now: int) -> None:
        if self.free_at() < now:
            self.index = self.trace.first_index_at_or_after(now - self.start)
            self.left = OPPORTUNITY_BYTES

    def serve(self, t: int, size: int) -> int:
        if not self.left:
            self.index += 1
            self.left = OPPORTUNITY_BYTES
        self.index, self.left = fill_opportunities(self.index, self.left, size)
        return self._opp(self.index)

    def wait(self, now: int, backlog: int) -> int:
        index, left = self.index, self.left
        if self.free_at() < now:
            index, left = self.trace.first_index_at_or_after(now - self.start), OPPORTUNITY_BYTES
        # the new packet's first byte goes in the opportunity holding byte `backlog` onward
        start = index if backlog < left else index + 1 + (backlog - left) // OPPORTUNITY_BYTES
        return max(0, self._opp(start) - now)


class ScheduleServer:
    """Each segment's rate in turn (None: unlimited; 0: an outage, nothing leaves)."""

    def __init__(self, schedule: ScheduleSpec, start_ns: int) -> None:
        self.schedule = schedule
        self.start = start_ns
        self.free = float("-inf")

    def free_at(self) -> float:
        return self.free

    def wake(self, now: int) -> None:
        self.free = max(self.free, float(now))

    def serve(self, t: int, size: int) -> int:
        self.free = serialize_on_schedule(self.schedule, self.start, float(t), size)
        return round(self.free)

    def wait(self, now: int, backlog: int) -> int:
        return round(
            serialize_on_schedule(self.schedule, self.start, max(float(now), self.free), backlog)
            - now
        )


Server = RateServer | TraceServer | ScheduleServer


class QueueLinkModel:
    """One direction with a queue discipline. offer() and advance() in time order."""

    def __init__(self, spec: LinkSpec, seed: int, start_ns: int = 0,
                 trace: Trace | None = None) -> None:  # fmt: skip
        # the FIFO model's loss and jitter streams, so the same seed loses the same packets
        self.base = LinkModel(spec, seed=seed, start_ns=start_ns, trace=trace)
        self.spec = spec
        self.server: Server
        if self.base.trace is not None:
            self.server = TraceServer(self.base.trace, start_ns)
        elif spec.schedule is not None:
            self.server = ScheduleServer(spec.schedule, start_ns)
        else:
            self.server = RateServer(spec.rate_mbps)
        queue_ns = round(spec.queue_ms * 1e6) if spec.queue_ms is not None else None
        limits = Limits(spec.queue_packets, spec.queue_bytes, queue_ns, self.server.wait)
        rng = random.Random(seed + 0xA0)  # PIE's drops
        self._pie_state = rng.getstate()
        self.queue = make_discipline(spec.queue, limits, spec.ecn, rng, start_ns)
        self._last_release = start_ns
        self.now = start_ns

    def initial_state(self) -> dict[str, object]:
        """The constants and random streams before the first packet, as the compiled model
        (_emucore.QModel, testbed/shaping/_emuqueue.c) takes them; it then gives the same
        outcomes. A link with a schedule keeps this model."""
        state = self.base.initial_state()
        q = self.spec.queue
        params = dict(q.params)
        state.update(
            discipline=DISCIPLINE_CODES[q.discipline],
            ecn=int(self.spec.ecn),
            target_ns=round(params.get("target_ms", 0) * 1e6),
            interval_ns=round(params.get("interval_ms", 0) * 1e6),
            tupdate_ns=round(params.get("tupdate_ms", 0) * 1e6),
            max_burst_ns=round(params.get("max_burst_ms", 0) * 1e6),
            alpha=params.get("alpha", 0.0),
            beta=params.get("beta", 0.0),
            flows=int(params.get("flows", 1)),
            quantum=int(params.get("quantum_bytes", 1514)),
            pie_state=self._pie_state,
        )
        return state

    @property
    def backlog_packets(self) -> int:
        return self.queue.packets

    def next_dequeue_ns(self) -> float | None:
        """When the link next takes a packet from the queue (None: the queue is empty)."""
        return self.server.free_at() if self.queue.packets else None

    def offer(self, now_ns: int, seq: int, size: int, flow: int = 0, ect: bool = False,
              ) -> list[Outcome]:  # fmt: skip
        """A packet of `size` IP bytes arrives; the fates decided up to now (its own if it is
        lost or dropped on arrival, and those of packets the link took before it arrived)."""
        out = self.advance(now_ns)
        if self.base.lost_at(now_ns):
            out.append(Outcome(seq, DROP_LOSS))
            return out
        was_empty = not self.queue.packets
        pkt = Packet(seq, now_ns, size, flow, ect)
        out += [Outcome(p.seq, event, sojourn_ns=now_ns - p.arrival_ns if p.queued else -1)
                for p, event in self.queue.enqueue(now_ns, pkt)]  # fmt: skip
        if was_empty and self.queue.packets:
            self.server.wake(now_ns)
        out += self.advance(now_ns)
        return out

    def advance(self, now_ns: int) -> list[Outcome]:
        """Every dequeue the link makes up to now_ns, in order."""
        out: list[Outcome] = []
        self.now = max(self.now, now_ns)
        while self.queue.packets:
            t = self.server.free_at()
            if t > now_ns:
                break
            t_ns = round(t)
            pkt, dropped = self.queue.dequeue(t_ns)
            out += [Outcome(p.seq, event, sojourn_ns=t_ns - p.arrival_ns) for p, event in dropped]
            if pkt is None:
                break
            exit_ns = self.server.serve(t_ns, pkt.size)
            release = max(exit_ns + self.base.delay_at(pkt.arrival_ns), self._last_release)
            self._last_release = release
            out.append(Outcome(pkt.seq, DELIVER, exit_ns, release, t_ns - pkt.arrival_ns, pkt.ce))
        return out
