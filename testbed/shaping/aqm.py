"""Queue disciplines, pure and time-injected: droptail, drophead, CoDel, PIE, FQ-CoDel.

Each follows its RFC's pseudocode and, where the RFC leaves a choice open, what the Linux qdisc
does (said at the spot). Times are ns in the caller's clock; nothing here reads a clock or
touches a packet's bytes: a discipline says which packets leave, which it drops and which it
marks CE (Packet.ce), and the emulator acts on that.

  enqueue(now, pkt) -> [(packet, event)]   what it dropped on arrival (maybe not pkt itself)
  dequeue(now) -> (packet or None, [(packet, event)])   the next to send, and what it dropped
                                                         to find it
The link's limits (queue_packets / queue_bytes / queue_ms) are checked by Limits.full().
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.config.queues import QueueSpec

DROP_QUEUE = "drop_queue"  # the queue was full (its limit)
DROP_AQM = "drop_aqm"  # the discipline chose to drop (CoDel's schedule, PIE's probability)
MTU_BYTES = 1500  # CoDel's "maxpacket" and PIE's "2 MTU" floor, in IP bytes (the links' MTU)
NS_PER_MS = 1_000_000


@dataclass(eq=False)
class Packet:
    seq: int
    arrival_ns: int  # its enqueue time: sojourn = dequeue time - arrival_ns
    size: int
    flow: int = 0  # a hash of the 5-tuple (fq_codel's classifier)
    ect: bool = False  # ECN-capable transport (ECT(0) or ECT(1))
    ce: bool = False  # marked Congestion Experienced by the discipline
    queued: bool = False  # it entered a queue (a drop then says how long it waited)


@dataclass
class Limits:
    """The link's limits on what waits. wait_ns(now, backlog_bytes): how long that backlog
    would take to leave the link from now (queue_ms compares it)."""

    packets: int | None
    bytes: int | None
    queue_ns: int | None
    wait_ns: Callable[[int, int], int] = field(default=lambda now, b: 0)

    def full(self, now: int, q_packets: int, q_bytes: int, size: int) -> bool:
        return (
            (self.packets is not None and q_packets + 1 > self.packets)
            or (self.bytes is not None and q_bytes + size > self.bytes)
            or (self.queue_ns is not None and self.wait_ns(now, q_bytes) > self.queue_ns)
        )


class Fifo:
    """A FIFO with its packet and byte counts."""

    def __init__(self) -> None:
        self.q: deque[Packet] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.q)

    def push(self, p: Packet) -> None:
        p.queued = True
        self.q.append(p)
        self.bytes += p.size

    def pop(self) -> Packet | None:
        if not self.q:
            return None
        p = self.q.popleft()
        self.bytes -= p.size
        return p


Drops = list[tuple[Packet, str]]


class DropTail:
    """Drop the arriving packet when the queue is full."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.fifo = Fifo()

    @property
    def packets(self) -> int:
        return len(self.fifo)

    @property
    def bytes(self) -> int:
        return self.fifo.bytes

    def enqueue(self, now: int, pkt: Packet) -> Drops:
        if self.limits.full(now, len(self.fifo), self.fifo.bytes, pkt.size):
            return [(pkt, DROP_QUEUE)]
        self.fifo.push(pkt)
        return []

    def dequeue(self, now: int) -> tuple[Packet | None, Drops]:
        return self.fifo.pop(), []


class DropHead(DropTail):
    """Drop from the head (the oldest) until the arriving packet fits (Mahimahi's drophead)."""

    def enqueue(self, now: int, pkt: Packet) -> Drops:
        dropped: Drops = []
        fifo = self.fifo
        while fifo.q and self.limits.full(now, len(fifo), fifo.bytes, pkt.size):
            head = fifo.pop()
            assert head is not None
            dropped.append((head, DROP_QUEUE))
        if self.limits.full(now, len(fifo), fifo.bytes, pkt.size):  # alone it does not fit
            return [*dropped, (pkt, DROP_QUEUE)]
        fifo.push(pkt)
        return dropped


class CoDelState:
    """RFC 8289's per-queue variables and its dequeue (section 5.4), with ECN as Linux does it:
    where it would drop an ECT packet it marks it CE and sends it instead."""

    def __init__(self, target_ns: int, interval_ns: int, ecn: bool) -> None:
        self.target = target_ns
        self.interval = interval_ns
        self.ecn = ecn
        self.first_above_time = 0
        self.drop_next = 0
        self.count = 0
        self.lastcount = 0
        self.dropping = False

    def control_law(self, t: int) -> int:
        return t + round(self.interval / math.sqrt(self.count))

    def _dodequeue(
        self, now: int, pop: Callable[[], Packet | None], backlog: Callable[[], int]
    ) -> tuple[Packet | None, bool]:
        p = pop()
        if p is None:
            self.first_above_time = 0
            return None, False
        sojourn = now - p.arrival_ns
        # Linux compares the whole qdisc's backlog with the MTU (RFC: "maxpacket")
        if sojourn < self.target or backlog() <= MTU_BYTES:
            self.first_above_time = 0
            return p, False
        if self.first_above_time == 0:
            self.first_above_time = now + self.interval
            return p, False
        return p, now >= self.first_above_time

    def dequeue(
        self, now: int, pop: Callable[[], Packet | None], backlog: Callable[[], int]
    ) -> tuple[Packet | None, Drops]:
        dropped: Drops = []
        p, ok_to_drop = self._dodequeue(now, pop, backlog)
        if p is None:
            self.dropping = False
            return None, dropped
        if self.dropping:
            if not ok_to_drop:
                self.dropping = False
            while self.dropping and now >= self.drop_next:
                self.count += 1
                if self.ecn and p.ect:
                    p.ce = True
                    self.drop_next = self.control_law(self.drop_next)
                    return p, dropped
                dropped.append((p, DROP_AQM))
                p, ok_to_drop = self._dodequeue(now, pop, backlog)
                if p is None:
                    self.dropping = False
                    return None, dropped
                if not ok_to_drop:
                    self.dropping = False
                else:
                    self.drop_next = self.control_law(self.drop_next)
        elif ok_to_drop:
            if self.ecn and p.ect:
                p.ce = True
            else:
                dropped.append((p, DROP_AQM))
                p, ok_to_drop = self._dodequeue(now, pop, backlog)
            self.dropping = True
            delta = self.count - self.lastcount
            recent = delta > 1 and now - self.drop_next < 16 * self.interval
            self.count = delta if recent else 1
            self.lastcount = self.count
            self.drop_next = self.control_law(now)
        return p, dropped


class CoDel(DropTail):
    """RFC 8289: a FIFO whose dequeue drops (or marks) while the sojourn stays above target."""

    def __init__(self, limits: Limits, spec: QueueSpec, ecn: bool) -> None:
        super().__init__(limits)
        self.state = CoDelState(round(spec.get("target_ms") * NS_PER_MS),
                                round(spec.get("interval_ms") * NS_PER_MS), ecn)  # fmt: skip

    def dequeue(self, now: int) -> tuple[Packet | None, Drops]:
        return self.state.dequeue(now, self.fifo.pop, lambda: self.fifo.bytes)


MAX_PROB = 1.0


class Pie(DropTail):
    """RFC 8033 (as Linux's sch_pie runs it: queue delay from timestamps, the probability
    updated every tupdate, a burst allowance, de-randomized drops). Drops happen on arrival.
    ECN: an ECT packet that would be dropped is marked instead while the probability is at most
    10% (the RFC's and Linux's threshold)."""

    ECN_MAX_PROB = 0.1

    def __init__(self, limits: Limits, spec: QueueSpec, ecn: bool, rng: random.Random,
                 start_ns: int) -> None:  # fmt: skip
        super().__init__(limits)
        self.target = round(spec.get("target_ms") * NS_PER_MS)
        self.tupdate = round(spec.get("tupdate_ms") * NS_PER_MS)
        self.alpha = spec.get("alpha")  # per second of delay
        self.beta = spec.get("beta")
        self.max_burst = round(spec.get("max_burst_ms") * NS_PER_MS)
        self.ecn = ecn
        self.rng = rng
        self.prob = 0.0
        self.accu_prob = 0.0
        self.qdelay = 0  # the last dequeued packet's sojourn (0 when the queue emptied)
        self.qdelay_old = 0
        self.burst_time = self.max_burst
        self.dq_tstamp: int | None = None
        self.next_update = start_ns + self.tupdate

    def _update_to(self, now: int) -> None:
        """Run the periodic probability update for every tupdate tick up to now."""
        while self.next_update <= now:
            self._calculate_probability()
            self.next_update += self.tupdate

    def _calculate_probability(self) -> None:
        qdelay, qdelay_old = self.qdelay, self.qdelay_old
        update_prob = not (qdelay == 0 and len(self.fifo) != 0)
        alpha, beta = self.alpha, self.beta
        if self.prob < MAX_PROB / 10:  # RFC 8033 4.2: smaller steps while the probability is low
            alpha /= 2
            beta /= 2
            power = 100
            while self.prob < MAX_PROB / power and power <= 1_000_000:
                alpha /= 4
                beta /= 4
                power *= 10
        delta = alpha * (qdelay - self.target) / 1e9 + beta * (qdelay - qdelay_old) / 1e9
        if delta > MAX_PROB / 50 and self.prob >= MAX_PROB / 10:
            delta = MAX_PROB / 50  # steps of at most 2%
        if qdelay > 250 * NS_PER_MS:
            delta += MAX_PROB / 50  # high delay: ramp up quickly
        self.prob += delta
        if self.prob > MAX_PROB:
            self.prob = MAX_PROB
            update_prob = False
        elif self.prob < 0:
            self.prob = 0.0
        if qdelay == 0 and qdelay_old == 0 and update_prob:
            self.prob -= self.prob / 64  # decay while the queue stays empty
        if qdelay < self.target / 2 and qdelay_old < self.target / 2 and self.prob == 0:
            self.burst_time = self.max_burst  # a new measurement cycle
            self.dq_tstamp = None
            self.accu_prob = 0.0
        self.qdelay_old = qdelay

    def _drop_early(self, size: int) -> bool:
        if self.burst_time > 0:
            return False
        if self.qdelay < self.target / 2 and self.prob < MAX_PROB / 5:
            return False
        if self.fifo.bytes < 2 * MTU_BYTES:
            return False
        if self.prob == 0:
            self.accu_prob = 0.0
        self.accu_prob += self.prob
        if self.accu_prob < 0.85:
            return False
        if self.accu_prob >= 8.5:
            return True
        if self.rng.random() < self.prob:
            self.accu_prob = 0.0
            return True
        return False

    def enqueue(self, now: int, pkt: Packet) -> Drops:
        self._update_to(now)
        if self.limits.full(now, len(self.fifo), self.fifo.bytes, pkt.size):
            self.accu_prob = 0.0
            return [(pkt, DROP_QUEUE)]
        if self._drop_early(pkt.size):
            if self.ecn and pkt.ect and self.prob <= self.ECN_MAX_PROB:
                pkt.ce = True
            else:
                self.accu_prob = 0.0
                return [(pkt, DROP_AQM)]
        self.fifo.push(pkt)
        return []

    def dequeue(self, now: int) -> tuple[Packet | None, Drops]:
        self._update_to(now)
        p = self.fifo.pop()
        if p is None:
            return None, []
        self.qdelay = now - p.arrival_ns if self.fifo.q else 0
        dtime = 0 if self.dq_tstamp is None else now - self.dq_tstamp
        self.dq_tstamp = now
        if dtime and self.burst_time > 0:
            self.burst_time = max(0, self.burst_time - dtime)
        return p, []


class FqCoDel:
    """RFC 8290: flows hashed into buckets, each a CoDel queue, served by deficit round robin
    with new flows first. On overflow it drops from the head of the fattest flow (by bytes), up
    to half its backlog or 64 packets (Linux's drop_batch), as the kernel does."""

    DROP_BATCH = 64

    def __init__(self, limits: Limits, spec: QueueSpec, ecn: bool) -> None:
        self.limits = limits
        self.quantum = int(spec.get("quantum_bytes"))
        self.n_flows = int(spec.get("flows"))
        self.target = round(spec.get("target_ms") * NS_PER_MS)
        self.interval = round(spec.get("interval_ms") * NS_PER_MS)
        self.ecn = ecn
        self.queues: dict[int, Fifo] = {}
        self.codel: dict[int, CoDelState] = {}
        self.deficit: dict[int, int] = {}
        self.new_flows: deque[int] = deque()
        self.old_flows: deque[int] = deque()
        self.packets = 0
        self.bytes = 0

    def bucket(self, pkt: Packet) -> int:
        return pkt.flow % self.n_flows

    def _active(self, b: int) -> bool:
        return b in self.new_flows or b in self.old_flows

    def enqueue(self, now: int, pkt: Packet) -> Drops:
        b = self.bucket(pkt)
        q = self.queues.get(b)
        if q is None:
            q = self.queues[b] = Fifo()
            self.codel[b] = CoDelState(self.target, self.interval, self.ecn)
        full = self.limits.full(now, self.packets, self.bytes, pkt.size)
        q.push(pkt)
        self.packets += 1
        self.bytes += pkt.size
        if not self._active(b):
            self.new_flows.append(b)
            self.deficit[b] = self.quantum
        return self._drop_from_fattest() if full else []

    def _drop_from_fattest(self) -> Drops:
        # the first of the largest by bucket index, as the kernel scans its buckets
        fattest = max(sorted(self.queues), key=lambda k: self.queues[k].bytes)
        q = self.queues[fattest]
        threshold = q.bytes // 2
        dropped: Drops = []
        length = 0
        while q.q and len(dropped) < self.DROP_BATCH:
            p = q.pop()
            assert p is not None
            self.packets -= 1
            self.bytes -= p.size
            length += p.size
            dropped.append((p, DROP_QUEUE))
            if length >= threshold:
                break
        return dropped

    def dequeue(self, now: int) -> tuple[Packet | None, Drops]:
        dropped: Drops = []
        while True:
            head = self.new_flows if self.new_flows else self.old_flows
            if not head:
                return None, dropped
            b = head[0]
            if self.deficit[b] <= 0:
                self.deficit[b] += self.quantum
                head.popleft()
                self.old_flows.append(b)
                continue
            q = self.queues[b]

            def pop(q: Fifo = q) -> Packet | None:
                p = q.pop()
                if p is not None:
                    self.packets -= 1
                    self.bytes -= p.size
                return p

            p, drops = self.codel[b].dequeue(now, pop, lambda: self.bytes)
            dropped += drops
            if p is None:
                head.popleft()
                if head is self.new_flows and self.old_flows:
                    self.old_flows.append(b)  # a pass through the old flows first
                continue
            self.deficit[b] -= p.size
            return p, dropped


Discipline = DropTail | FqCoDel


def make_discipline(spec: QueueSpec, limits: Limits, ecn: bool, rng: random.Random,
                    start_ns: int) -> Discipline:  # fmt: skip
    name = spec.discipline
    if name == "droptail":
        return DropTail(limits)
    if name == "drophead":
        return DropHead(limits)
    if name == "codel":
        return CoDel(limits, spec, ecn)
    if name == "pie":
        return Pie(limits, spec, ecn, rng, start_ns)
    if name == "fq_codel":
        return FqCoDel(limits, spec, ecn)
    raise ValueError(f"unknown queue discipline {name!r}")
