"""Link schedules: a direction whose rate, delay, jitter and loss change over time.

A schedule is a list of segments, each lasting duration_ms and setting any of rate_mbps (0: an
outage; the queue fills and drops as a real link's would), delay_ms, jitter_ms, loss_pct or
gilbert_elliott; what a segment does not set it keeps from the segment before (the first, from
the link spec itself). `at_end: loop` starts over after the last segment (as Mahimahi traces
do); `at_end: hold` keeps the last segment for ever. Inline in a topology
(`schedule: {segments: [...]}`) or from a file (`schedule: path.yaml`, the same mapping, or
any trace file of a format testbed.config.traces reads as segments). Pure data, parsed once.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from testbed import validate
from testbed.errors import ConfigError

AT_END = ("loop", "hold")
SEGMENT_KEYS = ("duration_ms", "rate_mbps", "delay_ms", "jitter_ms", "loss_pct", "gilbert_elliott")
SCHEDULE_KEYS = ("segments", "at_end", "source")
MAX_SEGMENTS = 1_000_000


@dataclass(frozen=True)
class GilbertElliottSpec:
    """Two-state bursty loss, per packet, as netem's `loss gemodel p r 1-h 1-k`.

    A packet is lost with the loss probability of the state it finds; then the state moves
    (good -> bad with p, bad -> good with r).
    """

    p_pct: float
    r_pct: float
    loss_bad_pct: float = 100.0
    loss_good_pct: float = 0.0

    @property
    def mean_loss_pct(self) -> float:
        if self.p_pct + self.r_pct == 0:
            return self.loss_good_pct
        bad_share = self.p_pct / (self.p_pct + self.r_pct)
        return bad_share * self.loss_bad_pct + (1 - bad_share) * self.loss_good_pct


@dataclass(frozen=True)
class Segment:
    """One stretch of a schedule, every value resolved (None rate: unlimited)."""

    duration_ms: float
    rate_mbps: float | None
    delay_ms: float
    jitter_ms: float
    loss_pct: float
    gilbert_elliott: GilbertElliottSpec | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        ge = self.gilbert_elliott
        out["gilbert_elliott"] = (
            None if ge is None else {f.name: getattr(ge, f.name) for f in fields(ge)}
        )
        return out


@dataclass(frozen=True)
class ScheduleSpec:
    segments: tuple[Segment, ...]
    at_end: str = "loop"
    source: str | None = None  # the file it came from, if any (recorded, not re-read)

    @cached_property
    def ends_ns(self) -> tuple[float, ...]:
        """When each segment ends, ns from the start of the (first) period."""
        ends, t = [], 0.0
        for seg in self.segments:
            t += seg.duration_ms
            ends.append(t * 1e6)
        return tuple(ends)

    @property
    def period_ns(self) -> float:
        ends = self.ends_ns
        return ends[-1]

    def index_at(self, t_ns: float) -> int:
        """The segment in force t_ns after the schedule started (t_ns >= 0)."""
        ends = self.ends_ns
        if t_ns >= ends[-1]:
            if self.at_end == "hold":
                return len(self.segments) - 1
            t_ns %= ends[-1]
        return min(bisect.bisect_right(ends, t_ns), len(self.segments) - 1)

    def at(self, t_ns: float) -> Segment:
        return self.segments[self.index_at(t_ns)]

    def boundary_after(self, t_ns: float) -> float:
        """When the segment in force at t_ns ends (inf for a held last segment)."""
        ends = self.ends_ns
        period = ends[-1]
        loops, rest = 0.0, t_ns
        if t_ns >= period:
            if self.at_end == "hold":
                return float("inf")
            loops = t_ns // period
            rest = t_ns - loops * period
        i = min(bisect.bisect_right(ends, rest), len(ends) - 1)
        if self.at_end == "hold" and i == len(ends) - 1:
            return float("inf")
        return loops * period + ends[i]

    @property
    def duration_s(self) -> float:
        return self.period_ns / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {"segments": [s.to_dict() for s in self.segments], "at_end": self.at_end,
                "source": self.source}  # fmt: skip


def _ge(value: Any, src: str, key: str) -> GilbertElliottSpec:
    data = validate.strict_mapping(value, tuple(f.name for f in fields(GilbertElliottSpec)), src, key,
                                   "{p_pct: 1, r_pct: 30}")  # fmt: skip
    for required in ("p_pct", "r_pct"):
        if required not in data:
            raise ConfigError(src, f"{key}.{required}", "missing; a percentage in [0, 100]")
    return GilbertElliottSpec(
        **{k: validate.number(v, src, f"{key}.{k}", 0, 100) for k, v in data.items()}
    )


def parse_segments(raw: Any, src: str, key: str, base: Segment) -> tuple[Segment, ...]:
    """Segments as written (each may omit keys: it keeps the previous segment's values)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(src, key, "expected a non-empty list of segments like "
                          "{duration_ms: 2000, rate_mbps: 5}")  # fmt: skip
    if len(raw) > MAX_SEGMENTS:
        raise ConfigError(src, key, f"{len(raw)} segments; at most {MAX_SEGMENTS}")
    out: list[Segment] = []
    prev = base
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        data = validate.strict_mapping(item, SEGMENT_KEYS, src, where, "{duration_ms: 2000}")
        if "duration_ms" not in data:
            raise ConfigError(src, f"{where}.duration_ms", "missing; a duration > 0 ms")
        duration = validate.number(data["duration_ms"], src, f"{where}.duration_ms", 0,
                                   86_400_000, lo_open=True)  # fmt: skip
        rate = prev.rate_mbps
        if "rate_mbps" in data:
            rate = None if data["rate_mbps"] is None else validate.number(
                data["rate_mbps"], src, f"{where}.rate_mbps", 0, 100_000)  # fmt: skip
        ge = prev.gilbert_elliott
        loss = prev.loss_pct
        if "loss_pct" in data:
            loss = validate.number(data["loss_pct"], src, f"{where}.loss_pct", 0, 100)
            ge = None
        if data.get("gilbert_elliott") is not None:
            if "loss_pct" in data and loss > 0:
                raise ConfigError(src, f"{where}.loss_pct",
                                  "give either loss_pct or gilbert_elliott, not both")  # fmt: skip
            ge, loss = _ge(data["gilbert_elliott"], src, f"{where}.gilbert_elliott"), 0.0
        seg = Segment(
            duration_ms=duration, rate_mbps=rate,
            delay_ms=validate.number(data.get("delay_ms", prev.delay_ms), src, f"{where}.delay_ms", 0, 60_000),
            jitter_ms=validate.number(data.get("jitter_ms", prev.jitter_ms), src, f"{where}.jitter_ms", 0, 60_000),
            loss_pct=loss, gilbert_elliott=ge,
        )  # fmt: skip
        out.append(seg)
        prev = seg
    return tuple(out)


def parse_schedule(raw: Any, src: str, key: str, base: Segment) -> ScheduleSpec:
    data = validate.strict_mapping(raw, SCHEDULE_KEYS, src, key, "{segments: [...], at_end: loop}")
    at_end = validate.choice(data.get("at_end", "loop"), AT_END, src, f"{key}.at_end")
    source = data.get("source")
    return ScheduleSpec(parse_segments(data.get("segments"), src, f"{key}.segments", base), at_end,
                        None if source is None else str(source))  # fmt: skip
