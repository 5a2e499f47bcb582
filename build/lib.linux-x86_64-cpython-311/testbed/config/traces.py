"""Bandwidth traces: Mahimahi's format (delivery opportunities), and the field's others as
schedules (testbed.config.schedule): OpenNetLab's JSON patterns and cooked `time_s Mbps` logs.

Mahimahi: each line is a millisecond timestamp from the start of the trace; each line is one opportunity
to deliver one 1500-byte packet (a repeated timestamp = several opportunities in that
millisecond). The trace loops: the next period starts at the last timestamp, as in Mahimahi.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from pathlib import Path

from testbed.config.schedule import ScheduleSpec, Segment
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


# --- the field's other trace formats: capacity (and loss, delay) per segment -------------------

FORMATS = ("mahimahi", "opennetlab", "cooked")
LOSS_UNITS = ("percent", "fraction")


def detect_format(path: str | Path, text: str) -> str:
    """mahimahi (one ms timestamp per line), opennetlab (JSON trace_pattern), cooked (`time_s
    Mbps` per line, Pensieve's FCC / Norway HSDPA logs): by extension, else by content."""
    if str(path).lower().endswith(".json") or text.lstrip().startswith("{"):
        return "opennetlab"
    for line in text.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            return "mahimahi" if len(parts) == 1 else "cooked"
    return "mahimahi"


def _num(value: object, src: str, where: str, lo: float, hi: float) -> float:
    from testbed import validate

    return validate.number(value, src, where, lo, hi)


def opennetlab_segments(
    text: str, src: str, pattern: str, loss_unit: str | None, rtt_share: float, base: Segment
) -> tuple[Segment, ...]:
    """An OpenNetLab JSON file's `pattern` (uplink | downlink) as resolved segments.

    Per entry: duration (ms, > 0), capacity (kbps; 0 = an outage), loss, rtt (ms; applied as
    rtt * rtt_share one-way delay, half by default), jitter (ms); a missing key keeps the previous
    entry's value. Loss: a value above 1 can only be a percent, so such a file is read in
    percent; a file whose nonzero losses are all <= 1 is ambiguous (0.1: 0.1% or 10%?) and is
    refused unless loss_unit says which.
    """
    import json

    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(src, "", f"not valid JSON ({e}); an OpenNetLab trace is "
                          '{"uplink": {"trace_pattern": [...]}}') from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get(pattern), dict):
        have = [k for k in ("uplink", "downlink") if isinstance(data, dict) and data.get(k)]
        raise ConfigError(src, pattern, f"no {pattern} pattern; the file has: {', '.join(have) or 'none'}"
                          " (choose one with trace_pattern)")  # fmt: skip
    entries = data[pattern].get("trace_pattern")
    key = f"{pattern}.trace_pattern"
    if not isinstance(entries, list) or not entries:
        raise ConfigError(src, key, "expected a non-empty list of {duration, capacity, ...}")
    losses = [e.get("loss") for e in entries if isinstance(e, dict) and e.get("loss")]
    if loss_unit is None and losses:
        if any(isinstance(v, int | float) and v > 1 for v in losses):
            loss_unit = "percent"
        else:
            raise ConfigError(src, f"{key}: loss", f"losses like {losses[0]} could be percents or "
                              "fractions; say which with trace_loss_unit: percent | fraction")  # fmt: skip
    scale = 100.0 if loss_unit == "fraction" else 1.0
    out: list[Segment] = []
    prev = base
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(
                src, where, "expected a mapping {duration, capacity, loss, rtt, jitter}"
            )
        unknown = [k for k in entry if k not in ("duration", "capacity", "loss", "rtt", "jitter")]
        if unknown:
            raise ConfigError(src, f"{where}.{unknown[0]}", "unknown key; valid: duration, "
                              "capacity, loss, rtt, jitter")  # fmt: skip
        if "duration" not in entry:
            raise ConfigError(src, f"{where}.duration", "missing; a duration in ms > 0")
        duration = _num(entry["duration"], src, f"{where}.duration", 0, 86_400_000)
        if duration <= 0:
            raise ConfigError(
                src, f"{where}.duration", f"{entry['duration']} is out of range; valid: > 0 ms"
            )
        rate = prev.rate_mbps
        if "capacity" in entry:
            rate = _num(entry["capacity"], src, f"{where}.capacity", 0, 100_000_000) / 1000
        loss = prev.loss_pct
        if "loss" in entry:
            loss = _num(entry["loss"], src, f"{where}.loss", 0, 100 if scale == 1 else 1) * scale
        delay = prev.delay_ms
        if "rtt" in entry:
            delay = _num(entry["rtt"], src, f"{where}.rtt", 0, 120_000) * rtt_share
        jitter = prev.jitter_ms
        if "jitter" in entry:
            jitter = _num(entry["jitter"], src, f"{where}.jitter", 0, 60_000)
        seg = Segment(
            duration, rate, delay, jitter, loss, None if "loss" in entry else prev.gilbert_elliott
        )
        out.append(seg)
        prev = seg
    return tuple(out)


def cooked_segments(text: str, src: str, base: Segment) -> tuple[Segment, ...]:
    """`time_s Mbps` lines (Pensieve's cooked traces): the rate from each time to the next; the
    last line lasts as long as the step before it."""
    points: list[tuple[float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        where = f"line {number}"
        if len(parts) != 2:
            raise ConfigError(src, where, f"{line.strip()!r}: expected `time_s Mbps`")
        try:
            t, mbps = float(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigError(
                src, where, f"{line.strip()!r}: expected two numbers, `time_s Mbps`"
            ) from None
        if t < 0 or mbps < 0 or t != t or mbps != mbps:
            raise ConfigError(src, where, f"{line.strip()!r}: time and Mbps must be >= 0")
        if points and t <= points[-1][0]:
            raise ConfigError(
                src, where, f"time {t:g} s comes after {points[-1][0]:g} s: times must increase"
            )
        points.append((t, mbps))
    if len(points) < 2:
        raise ConfigError(src, "", "a cooked trace needs at least two `time_s Mbps` lines")
    steps = [b[0] - a[0] for a, b in itertools.pairwise(points)]
    out = []
    for i, (_, mbps) in enumerate(points):
        duration_s = steps[i] if i < len(steps) else steps[-1]
        out.append(Segment(duration_s * 1000, mbps, base.delay_ms, base.jitter_ms, base.loss_pct,
                           base.gilbert_elliott))  # fmt: skip
    return tuple(out)


def read_link_trace(path: str | Path, pattern: str = "uplink", loss_unit: str | None = None,
                    rtt_share: float = 0.5, base: Segment | None = None) -> Trace | ScheduleSpec:  # fmt: skip
    """A trace file of any supported format: a Mahimahi Trace, or a schedule of segments."""
    p = Path(path)
    text = read_input_file(p, "trace file")
    fmt = detect_format(p, text)
    base = base or Segment(0.0, None, 0.0, 0.0, 0.0, None)
    if fmt == "mahimahi":
        return parse_trace(text, str(p))
    src = f"{p} ({fmt})"
    if fmt == "opennetlab":
        segments = opennetlab_segments(text, src, pattern, loss_unit, rtt_share, base)
    else:
        segments = cooked_segments(text, src, base)
    return ScheduleSpec(segments, "loop", str(p.resolve()))


# --- one view of any trace: a series of (duration, capacity, delay, loss) -------------------------


def as_series(trace: Trace | ScheduleSpec, window_ms: float = 100.0) -> list[Segment]:
    """Any trace as segments: a schedule's own; a Mahimahi trace in windows of window_ms (its
    capacity = the opportunities in the window; delay and loss are the link's, not the trace's)."""
    if isinstance(trace, ScheduleSpec):
        return list(trace.segments)
    out = []
    t = 0.0
    while t < trace.period_ms:
        end = min(trace.period_ms, t + window_ms)
        cap = trace.capacity_bytes(round(t * 1e6), round(end * 1e6)) * 8 / ((end - t) * 1e3)
        out.append(Segment(end - t, cap, 0.0, 0.0, 0.0, None))
        t = end
    return out


def summary(series: list[Segment]) -> dict[str, float]:
    total = sum(s.duration_ms for s in series)
    rates = [s.rate_mbps for s in series if s.rate_mbps is not None]
    weighted = sum((s.rate_mbps or 0) * s.duration_ms for s in series if s.rate_mbps is not None)
    return {
        "duration_s": total / 1000,
        "mean_mbps": weighted / total if rates else float("nan"),
        "min_mbps": min(rates) if rates else float("nan"),
        "max_mbps": max(rates) if rates else float("nan"),
        "outage_s": sum(s.duration_ms for s in series if s.rate_mbps == 0) / 1000,
        "segments": len(series),
        "mean_delay_ms": sum(s.delay_ms * s.duration_ms for s in series) / total,
        "mean_loss_pct": sum(s.loss_pct * s.duration_ms for s in series) / total,
    }


def to_mahimahi(series: list[Segment]) -> list[int]:
    """Delivery opportunities of a series (capacity only; an unlimited segment is refused)."""
    if any(s.rate_mbps is None for s in series):
        raise ConfigError(
            "convert", "rate_mbps", "a segment without a rate cannot be a Mahimahi trace"
        )
    stamps = piecewise_trace([(s.duration_ms / 1000, float(s.rate_mbps or 0)) for s in series])
    period = round(sum(s.duration_ms for s in series))
    if not stamps or stamps[-1] < period:
        stamps.append(period)  # Mahimahi's period is its last timestamp
    return stamps


def to_schedule(series: list[Segment], at_end: str = "loop") -> dict[str, object]:
    """A schedule file's mapping (testbed.config.schedule) of a series."""
    return {"at_end": at_end, "segments": [s.to_dict() for s in series]}
