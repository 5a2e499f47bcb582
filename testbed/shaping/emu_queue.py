"""The emulator's loop for a link with a queue discipline (CoDel, PIE, FQ-CoDel, drophead).

The FIFO loops (emu_process.Emulator and the compiled one) know each packet's release when it
arrives. Here the discipline decides when the link takes a packet (QueueLinkModel), so the loop
holds arrivals by sequence number until their fate comes back, wakes for the link's next
dequeue as well as for releases, marks CE in the packet's own bytes when the discipline says
so, and logs each packet's sojourn and ECN state (link log v3).

A dequeue at time T must see every packet that arrived before T: the loop reads the TUN until it
is empty, then advances the model only to the time it started reading.
"""

from __future__ import annotations

import array
import os
import resource
import select
import time
from collections import deque
from typing import Any

from testbed.shaping.emu_io import (
    COARSE_NS,
    DRAIN_BATCH,
    MAX_BLOCK_NS,
    MAX_SPIN_PPS,
    SPIN_BUDGET,
    SPIN_MAX_NS,
    SPIN_MIN_NS,
    SPIN_PAD_NS,
    STALL_NS,
    WINDOW_NS,
    ArrivalStamps,
)
from testbed.shaping.ippkt import ecn_bits, flow_hash, set_ce
from testbed.shaping.model import DELIVER
from testbed.shaping.queue_link import Outcome, QueueLinkModel

READ_BYTES = 65536
Held = tuple[bytearray, int, str, int, int]  # packet, arrival, stamp, flow, ecn bits


class QueueEmulator:
    """The loop. Everything time-related reads CLOCK_MONOTONIC in ns."""

    def __init__(self, fd: int, model: QueueLinkModel, log: Any, start_ns: int,
                 stop: list[int], stamps: ArrivalStamps | None = None) -> None:  # fmt: skip
        self.fd = fd
        self.model = model
        self.log = log
        self.start_ns = start_ns
        self.stop = stop
        self.stamps = stamps
        self.packets_in = 0
        self.counts = {"deliver": 0, "drop_loss": 0, "drop_queue": 0, "drop_aqm": 0,
                       "write_error": 0, "held_at_stop": 0, "ecn_marked": 0}  # fmt: skip
        self.lateness_ns = array.array("q")
        self.sojourn_ns = array.array("q")
        self.held: dict[int, Held] = {}
        # (release, seq, packet, arrival, link exit, sojourn, ecn, stamp, flow)
        self.releases: deque[tuple[int, int, bytearray, int, int, int, str, str, int]] = deque()

    def _ecn_word(self, bits: int, ce: bool) -> str:
        return "ce" if ce else ("ect" if bits else "")

    def _settle(self, outcomes: list[Outcome]) -> None:
        """Each packet's fate: queued for release (marked if said so), or logged as dropped."""
        start = self.start_ns
        for o in outcomes:
            pkt, arrival, stamp, flow, bits = self.held.pop(o.seq)
            if o.event == DELIVER:
                if o.ce and set_ce(pkt):
                    self.counts["ecn_marked"] += 1
                self.sojourn_ns.append(o.sojourn_ns)
                self.releases.append((o.release_ns, o.seq, pkt, arrival, o.link_exit_ns,
                                      o.sojourn_ns, self._ecn_word(bits, o.ce), stamp, flow))  # fmt: skip
            else:
                self.counts[o.event] += 1
                sojourn = "" if o.sojourn_ns < 0 else o.sojourn_ns
                self.log.write(f"{o.seq}\t{arrival - start}\t{len(pkt)}\t{o.event}\t\t\t\t{stamp}"
                               f"\t{sojourn}\t{flow}\t{self._ecn_word(bits, False)}\n")  # fmt: skip

    def _read(self, last_arrival: int) -> tuple[int, bool]:
        """Read up to a batch of arrivals into the model; (last arrival, whether the TUN is empty)."""
        stamps = self.stamps
        for _ in range(DRAIN_BATCH):
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                return last_arrival, True
            t = time.monotonic_ns()
            kernel = False
            if stamps is not None:
                t, kernel = stamps.stamp(data, t)
            t = max(t, last_arrival, self.model.now)  # the model takes packets in time order
            last_arrival = t
            seq = self.packets_in
            self.packets_in += 1
            pkt = bytearray(data)
            bits = ecn_bits(pkt)
            flow = flow_hash(data) & 0xFFFFFFFF
            self.held[seq] = (pkt, t, "k" if kernel else "o", flow, bits)
            self._settle(self.model.offer(t, seq, len(pkt), flow, bits != 0))
        return last_arrival, False

    def _release_due(self) -> None:
        start = self.start_ns
        mono = time.monotonic_ns
        releases = self.releases
        while releases and releases[0][0] <= mono():
            release, seq, pkt, arrival, exit_ns, sojourn, ecn, stamp, flow = releases.popleft()
            actual = mono()
            try:
                os.write(self.fd, pkt)
                event = "deliver"
            except OSError:
                event = "write_error"
            self.counts[event] += 1
            self.lateness_ns.append(actual - release)
            self.log.write(f"{seq}\t{arrival - start}\t{len(pkt)}\t{event}\t{exit_ns - start}\t"
                           f"{release - start}\t{actual - start}\t{stamp}\t{sojourn}\t{flow}\t"
                           f"{ecn}\n")  # fmt: skip

    def run(self) -> None:
        mono = time.monotonic_ns
        rlist = [self.fd]
        margin = SPIN_MAX_NS
        last_arrival = 0
        model = self.model
        spin = True  # poll before a release, while cheap (as the FIFO loop: never near the RT
        window_start, window_in, window_spin = mono(), 0, 0  # throttle)
        while not self.stop[0]:
            now = mono()
            due = [self.releases[0][0]] if self.releases else []
            dequeue = model.next_dequeue_ns()
            if dequeue is not None:
                due.append(int(dequeue))
            wait = min(due) - now if due else MAX_BLOCK_NS
            release_next = bool(self.releases) and (
                dequeue is None or self.releases[0][0] <= dequeue
            )
            if wait > COARSE_NS:
                select.select(rlist, (), (), min(wait - COARSE_NS // 2, MAX_BLOCK_NS) / 1e9)
            elif wait > 0:
                polling = spin and release_next
                if polling and wait <= margin:
                    select.select(rlist, (), (), 0)  # poll until the release is due
                    window_spin += mono() - now
                else:
                    target = now + wait - (margin if polling else 0)
                    ready = select.select(rlist, (), (), (target - now) / 1e9)[0]
                    if polling and not ready:
                        over = mono() - target
                        margin = max(SPIN_MIN_NS, min(over + SPIN_PAD_NS, SPIN_MAX_NS))
            began = mono()
            before = self.packets_in
            last_arrival, empty = self._read(last_arrival)
            window_in += self.packets_in - before
            if empty:  # everything that arrived before `began` is in the model
                self._settle(model.advance(began))
            self._release_due()
            elapsed = mono() - window_start
            if elapsed >= WINDOW_NS:
                spin = window_in * 1e9 / elapsed < MAX_SPIN_PPS
                window_start, window_in, window_spin = mono(), 0, 0
                if self.stamps is not None:
                    self.stamps.resync()
            elif window_spin > SPIN_BUDGET * WINDOW_NS:
                spin = False
        self._stop()

    def _stop(self) -> None:
        """What is still queued or held: logged as held at stop, with what is known of it."""
        start = self.start_ns
        for release, seq, pkt, arrival, exit_ns, sojourn, ecn, stamp, flow in self.releases:
            self.counts["held_at_stop"] += 1
            self.log.write(f"{seq}\t{arrival - start}\t{len(pkt)}\theld_at_stop\t{exit_ns - start}"
                           f"\t{release - start}\t\t{stamp}\t{sojourn}\t{flow}\t{ecn}\n")  # fmt: skip
        for seq, (pkt, arrival, stamp, flow, bits) in sorted(self.held.items()):
            self.counts["held_at_stop"] += 1
            self.log.write(f"{seq}\t{arrival - start}\t{len(pkt)}\theld_at_stop\t\t\t\t{stamp}\t\t"
                           f"{flow}\t{self._ecn_word(bits, False)}\n")  # fmt: skip

    def stats(self, granted: dict[str, Any]) -> dict[str, Any]:
        late = sorted(self.lateness_ns)
        soj = sorted(self.sojourn_ns)

        def q(values: list[int], p: float) -> float | None:
            return values[min(len(values) - 1, int(p * len(values)))] / 1000 if values else None

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "packets_in": self.packets_in,
            **self.counts,
            "lateness_us": {"p50": q(late, 0.5), "p99": q(late, 0.99),
                            "max": late[-1] / 1000 if late else None},
            "stalls_over_1ms": sum(1 for x in late if x > STALL_NS),
            "sojourn_us": {"p50": q(soj, 0.5), "p95": q(soj, 0.95), "p99": q(soj, 0.99),
                           "max": soj[-1] / 1000 if soj else None},
            "queue": self.model.spec.queue.to_dict(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "duration_s": (time.monotonic_ns() - self.start_ns) / 1e9,
            "timing": granted,
            "arrival_stamps": (
                {"kernel": self.stamps.matched, "own_clock": self.stamps.fallbacks,
                 "socket_errors": self.stamps.socket_errors}
                if self.stamps is not None else None
            ),
        }  # fmt: skip
