"""A stream as long as its statistic needs: `stop_when`, and the rule that decides. Pure.

  stop_when: {metric: p95, ci_ms: 2, ci_pct: 5, min_s: 4, min_frames: 150, min_hit: 10}

The sender ends the session (its source makes no more frames; it drains as usual) once the
metric's 95% interval over the frames so far is narrow enough: half its width within ci_ms OR
within ci_pct % of the estimate (either target; leave one out to use the other), and at least
min_s after the warm-up, with min_frames frames; duration_s stays the longest it may run.

Which interval: for a quantile p over n frames, the distribution-free order-statistic interval
[x_(l), x_(u)] with l, u = n p -/+ 1.96 sqrt(n p (1 - p)) (rounded outward); for the mean, mean
+- 1.96 s / sqrt(n). The frames are the sender's per-frame latency estimates (per-frame
feedback from the receiver, testbed.abr.framefeedback: median error against the wire 0.3 ms);
the cell's reported statistic is still the wire's.

Against a lucky streak: a tail quantile under loss is set by the frames the loss hit, which a
few seconds may not hold yet. Once the sender has heard of any loss (a NACK or a receiver
report's loss), the rule also waits for min_hit frames slower than the median by half an RTT
(those a repair delayed); a lossless stream has none and is not held. Only the aiortc pair
sends per-frame feedback, so stop_when needs aiortc at both ends.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from testbed import validate
from testbed.errors import ConfigError
from testbed.validate import strict_mapping

METRICS = ("p50", "p95", "p99", "mean")
KEYS = ("metric", "ci_ms", "ci_pct", "min_s", "min_frames", "min_hit")
Z = 1.96


@dataclass(frozen=True)
class StopWhen:
    metric: str = "p95"
    ci_ms: float | None = 2.0
    ci_pct: float | None = 5.0
    min_s: float = 4.0
    min_frames: int = 150
    min_hit: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_stop_when(value: Any, duration_s: float, src: str,
                    key: str = "stream.stop_when") -> StopWhen | None:  # fmt: skip
    if value is None or value is False:
        return None
    data = strict_mapping(value, KEYS, src, key, "{metric: p95, ci_ms: 2, ci_pct: 5, min_s: 4}")
    if "metric" in data:
        validate.choice(data["metric"], METRICS, src, f"{key}.metric")
    for name in ("ci_ms", "ci_pct"):
        if data.get(name) is not None:
            data[name] = validate.number(data[name], src, f"{key}.{name}", 0, 1e6, lo_open=True)
    if data.get("ci_ms", 2.0) is None and data.get("ci_pct", 5.0) is None:
        raise ConfigError(src, key, "needs ci_ms or ci_pct (or both): the interval to reach")
    if "min_s" in data:
        min_s = validate.number(data["min_s"], src, f"{key}.min_s", 0, 86_400)
        if min_s > duration_s:
            raise ConfigError(src, f"{key}.min_s", f"{min_s:g} is above duration_s "
                              f"{duration_s:g} (the longest the stream may run); valid: <= it")  # fmt: skip
        data["min_s"] = min_s
    for name in ("min_frames", "min_hit"):
        if name in data:
            validate.integer(data[name], src, f"{key}.{name}", 0)
    return StopWhen(**data)  # type: ignore[arg-type]


def interval(values: np.ndarray, metric: str) -> tuple[float, float, float]:
    """(estimate, low, high): the metric over values and its 95% interval (module docstring)."""
    x = np.sort(values)
    n = len(x)
    if metric == "mean":
        m = float(x.mean())
        half = Z * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        return m, m - half, m + half
    p = {"p50": 0.5, "p95": 0.95, "p99": 0.99}[metric]
    spread = Z * math.sqrt(n * p * (1 - p))
    lo, hi = math.floor(n * p - spread), math.ceil(n * p + spread)
    est = float(np.percentile(x, 100 * p))
    if lo < 0 or hi > n - 1:
        return est, -math.inf, math.inf  # too few frames for this quantile's interval
    return est, float(x[lo]), float(x[hi])


@dataclass
class Stopper:
    """Fed the sender's per-frame latency estimates and whether loss was heard; says when the
    interval is met (reason precision) with what it saw."""

    rule: StopWhen
    rtt_ms: float | None = None
    loss_heard: bool = False

    def __post_init__(self) -> None:
        self.values: list[float] = []

    def add(self, latency_ms: float) -> None:
        self.values.append(latency_ms)

    def met(self, streamed_s: float) -> dict[str, Any] | None:
        """The interval it met ({metric, estimate, low, high, frames}), or None to go on."""
        r = self.rule
        if streamed_s < r.min_s or len(self.values) < max(2, r.min_frames):
            return None
        x = np.asarray(self.values)
        est, lo, hi = interval(x, r.metric)
        if not math.isfinite(lo) or not math.isfinite(hi):
            return None
        half = (hi - lo) / 2
        narrow = (r.ci_ms is not None and half <= r.ci_ms) or (
            r.ci_pct is not None and half <= r.ci_pct / 100 * abs(est))  # fmt: skip
        if not narrow:
            return None
        if self.loss_heard:
            slow = int((x > np.median(x) + (self.rtt_ms or 0) / 2).sum())
            if slow < r.min_hit:
                return None
        return {"metric": r.metric, "estimate_ms": est, "low_ms": lo, "high_ms": hi,
                "frames": len(x)}  # fmt: skip
