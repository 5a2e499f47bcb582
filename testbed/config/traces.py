"""Mahimahi-format bandwidth traces.

Each line is a millisecond timestamp from the start of the trace; each line is one opportunity
to deliver one 1500-byte packet (a repeated timestamp = several opportunities in that
millisecond). The trace loops: the next period starts at the last timestamp, as in Mahimahi.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import ConfigError
from testbed.files import read_input_file

OPPORTUNITY_BYTES = 1500


@dataclass(frozen=True)
class Trace:
    """Delivery opportunities of one period, in ms, non-decreasing; period_ms = last one."""

    path: str
    opportunities_ms: tuple[int, ...]

    @property
    def period_ms(self) -> int:
        return self.opportunities_ms[-1]

    @property
    def mean_mbps(self) -> float:
        return len(self.opportunities_ms) * OPPORTUNITY_BYTES * 8 / (self.period_ms * 1000)

    def opportunity_ns(self, index: int) -> int:
        """Time of the index-th opportunity since the trace started (index counts all loops)."""
        n = len(self.opportunities_ms)
        loop, i = divmod(index, n)
        return (loop * self.period_ms + self.opportunities_ms[i]) * 1_000_000

    def first_index_at_or_after(self, t_ns: int) -> int:
        """Index of the first opportunity at time >= t_ns (t_ns >= 0)."""
        n = len(self.opportunities_ms)
        period_ns = self.period_ms * 1_000_000
        loop = t_ns // period_ns
        rest_ms = -(-(t_ns - loop * period_ns) // 1_000_000)  # ceil to whole ms
        i = bisect.bisect_left(self.opportunities_ms, rest_ms)
        index = loop * n + i
        # The previous period's last opportunities coincide with this period's start.
        while index > 0 and self.opportunity_ns(index - 1) >= t_ns:
            index -= 1
        return index

    def capacity_bytes(self, start_ns: int, end_ns: int) -> int:
        """Bytes the link can deliver at opportunities in [start_ns, end_ns)."""
        return (
            self.first_index_at_or_after(end_ns) - self.first_index_at_or_after(start_ns)
        ) * OPPORTUNITY_BYTES


def parse_trace(text: str, source: str) -> Trace:
    """Parse and validate a trace's text; errors name the file and the line."""
    values: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            value = int(line)
        except ValueError:
            raise ConfigError(
                source, f"line {number}", f"{line!r} is not a whole number of milliseconds"
            ) from None
        if value < 0:
            raise ConfigError(source, f"line {number}", f"{value} is negative; timestamps are >= 0")
        if values and value < values[-1]:
            raise ConfigError(
                source,
                f"line {number}",
                f"{value} comes after {values[-1]}: timestamps must not decrease",
            )
        values.append(value)
    if not values:
        raise ConfigError(source, "", "the trace is empty; it needs one ms timestamp per line")
    if values[-1] <= 0:
        raise ConfigError(
            source, f"line {len(values)}", "the last timestamp (the period) must be > 0 ms"
        )
    return Trace(path=source, opportunities_ms=tuple(values))


def load_trace(path: str | Path) -> Trace:
    """Read a Mahimahi trace file; a missing or malformed file is a ConfigError."""
    p = Path(path)
    text = read_input_file(p, "trace file")
    return parse_trace(text, str(p))


def piecewise_trace(segments: list[tuple[float, float]]) -> list[int]:
    """Opportunity timestamps (ms) for constant-rate segments [(duration_s, rate_mbps), ...].

    Opportunities are spread evenly (a fractional remainder carries into the next ms), so the
    trace delivers rate_mbps on average over any window of a few ms.
    """
    out: list[int] = []
    t0_ms = 0.0
    credit = 0.0
    for duration_s, mbps in segments:
        per_ms = mbps * 1e6 / 8 / OPPORTUNITY_BYTES / 1000
        for ms in range(round(duration_s * 1000)):
            credit += per_ms
            while credit >= 1.0:
                out.append(int(t0_ms) + ms + 1)
                credit -= 1.0
        t0_ms += duration_s * 1000
    return out
