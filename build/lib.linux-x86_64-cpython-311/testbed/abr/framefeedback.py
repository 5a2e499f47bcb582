"""Per-frame feedback from the receiver, so a controller can learn frame latency. Pure.

The receiver assembles frames from the RTP packets it gets (originals, retransmissions, FEC
rebuilds): a frame is complete when every sequence number from the packet after the previous
frame's marker up to its own marker has arrived. Every 100 ms it sends an RTCP APP packet
(name "TBFC") listing, per completed frame, its RTP timestamp, how long it took from its first
packet to completion, and how long ago it completed. The sender (which knows when it sent the
frame's first packet) estimates the frame's latency with the RTT/2 assumption:

  latency ~= (report arrival - RTT/2 - age) - first packet sent

No clock is shared: this is what a real sender could know. aiortc ignores APP packets; the
aiortc stack's compat module (testbed.rtc.aiortc.compat) hands them to the sender's controller.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from testbed.seqnum import U16, after

APP_NAME = b"TBFC"
ENTRY = struct.Struct("!III")  # rtp_ts, assembly_us, age_us
MAX_ENTRIES = 100  # one APP packet stays under ~1.2 KB
MARKERS = 64  # recent frame ends kept: a frame's start is one after the previous frame's end


@dataclass
class _Frame:
    first_ns: int
    seqs: set[int] = field(default_factory=set)
    marker: int | None = None


@dataclass
class FrameAssembler:
    """Feed every media packet the receiver gets (seq after RTX unwrapping).

    Runs per packet on the receiver: a packet can only complete its own frame, or, if it is a
    marker, the frames after it that waited for it; only those are checked, against the last
    MARKERS markers.
    """

    frames: dict[int, _Frame] = field(default_factory=dict)  # rtp ts -> frame being assembled
    done: list[tuple[int, int, int]] = field(default_factory=list)  # ts, first_ns, complete_ns
    completed: dict[int, None] = field(default_factory=dict)  # an ordered set of rtp ts
    markers: dict[int, None] = field(default_factory=dict)  # recent marker seqs, oldest first

    def on_packet(self, seq: int, ts: int, marker: bool, now_ns: int) -> None:
        if ts in self.completed:
            return
        frame = self.frames.setdefault(ts, _Frame(now_ns))
        frame.seqs.add(seq)
        waiting = [ts]
        if marker:
            frame.marker = seq
            self.markers[seq] = None
            if len(self.markers) > 2 * MARKERS:
                for m in list(self.markers)[:MARKERS]:
                    del self.markers[m]
            waiting += [t for t, f in self.frames.items()
                        if t != ts and f.marker is not None and after(f.marker, seq)]  # fmt: skip
        for t in waiting:
            self._check(t, now_ns)
        if len(self.frames) > 512:  # frames that will never complete
            for t in list(self.frames)[:256]:
                del self.frames[t]

    def _start(self, marker: int) -> int | None:
        """The frame's first seq: one after the closest earlier marker (None for the first frame).
        If the previous frame's marker is still missing, the range reaches further back and
        the frame cannot complete before that marker arrives, as it should not."""
        earlier = [(marker - m) % U16 for m in self.markers if after(marker, m)]
        return (marker - min(earlier) + 1) % U16 if earlier else None

    def _check(self, ts: int, now_ns: int) -> None:
        frame = self.frames[ts]
        if frame.marker is None:
            return
        start = self._start(frame.marker)
        if start is None:
            return
        n = (frame.marker - start) % U16 + 1
        if len(frame.seqs) >= n and all((start + i) % U16 in frame.seqs for i in range(n)):
            self.done.append((ts, frame.first_ns, now_ns))
            del self.frames[ts]
            self.completed[ts] = None
            if len(self.completed) > 4096:
                for t in list(self.completed)[:2048]:
                    del self.completed[t]

    def take(self) -> list[tuple[int, int, int]]:
        out, self.done = self.done, []
        return out


def pack_app(ssrc: int, entries: list[tuple[int, int, int]], now_ns: int) -> bytes:
    """RTCP APP (PT 204, subtype 0): ssrc, "TBFC", then (rtp_ts, assembly_us, age_us) each."""
    body = b"".join(
        ENTRY.pack(
            ts, min(2**32 - 1, (done - first) // 1000), min(2**32 - 1, (now_ns - done) // 1000)
        )
        for ts, first, done in entries[-MAX_ENTRIES:]
    )
    length = (8 + len(body)) // 4  # 32-bit words after the first
    return struct.pack("!BBHI", 0x80, 204, length, ssrc) + APP_NAME + body


def unpack_app(data: bytes) -> list[tuple[int, int, int]] | None:
    """The entries of a TBFC APP packet (None if the datagram is anything else)."""
    if len(data) < 12 or data[0] >> 6 != 2 or data[1] != 204 or data[8:12] != APP_NAME:
        return None
    n = (len(data) - 12) // ENTRY.size
    return [ENTRY.unpack_from(data, 12 + i * ENTRY.size) for i in range(n)]


def latency_estimate_ms(
    report_arrival_ns: int, age_us: int, rtt_ms: float | None, first_sent_ns: int | None
) -> float | None:
    if first_sent_ns is None or rtt_ms is None:
        return None
    completed_ns = report_arrival_ns - rtt_ms * 1e6 / 2 - age_us * 1000
    return (completed_ns - first_sent_ns) / 1e6
