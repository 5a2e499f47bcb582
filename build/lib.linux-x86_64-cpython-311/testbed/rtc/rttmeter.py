"""Round-trip time from RTCP sender/receiver reports (RFC 3550 section 6.4.1).

aiortc keeps only the last sender report it sent and ignores a receiver report that answers an
earlier one; with both sides sending every 0.5-1.5 s, a report often answers the previous SR,
and aiortc's RTT stays unknown for seconds (seen: 4.6 s of a 5 s session). This meter remembers
the last few SRs, so every report block with an LSR it sent gives a sample.
"""

from __future__ import annotations

from collections import OrderedDict

RTT_ALPHA = 0.85  # aiortc's smoothing, kept so the two estimates are comparable
SR_HISTORY = 16  # sender reports remembered (~16 s at aiortc's interval)


def middle_ntp(ntp_timestamp: int) -> int:
    """The 32 middle bits of a 64-bit NTP timestamp: the LSR a receiver echoes."""
    return (ntp_timestamp >> 16) & 0xFFFFFFFF


class RttMeter:
    """Smoothed RTT (seconds) from the SRs one sender sent and the reports that answer them."""

    def __init__(self, history: int = SR_HISTORY) -> None:
        self._sent: OrderedDict[int, float] = OrderedDict()  # lsr -> local send time (s)
        self._history = history
        self.rtt_s: float | None = None
        self.samples = 0

    @property
    def rtt_ms(self) -> float | None:
        return None if self.rtt_s is None else self.rtt_s * 1000

    def on_sender_report(self, ntp_timestamp: int, now_s: float) -> None:
        lsr = middle_ntp(ntp_timestamp)
        self._sent[lsr] = now_s  # an SR repeating an LSR (no media since) restarts its clock
        self._sent.move_to_end(lsr)
        while len(self._sent) > self._history:
            self._sent.popitem(last=False)

    def on_report_block(self, lsr: int, dlsr: int, now_s: float) -> float | None:
        """One sample from a report block (None: it answers no SR this meter remembers)."""
        sent = self._sent.get(lsr)
        if not lsr or sent is None:
            return None
        sample = now_s - sent - dlsr / 65536
        if sample < 0:  # a clock step, or an LSR reused after wrap-around
            return None
        self.rtt_s = (
            sample if self.rtt_s is None else RTT_ALPHA * self.rtt_s + (1 - RTT_ALPHA) * sample
        )
        self.samples += 1
        return sample
