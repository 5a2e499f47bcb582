"""Repetitions on demand: `precision:` in an experiment asks that every configuration's latency
statistic be known to a given 95% interval; configurations that are nearly deterministic
(lossless) stop at the first repetitions, noisy ones get more, up to repetitions_max.

The interval is the one `testbed report` prints (a bootstrap over repetitions of each cell's
statistic), so what the runner stopped on is what the report shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from testbed import validate
from testbed.errors import ConfigError

METRICS = ("p50", "p95", "p99", "mean")
KEYS = ("metric", "ci_ms", "ci_pct")


@dataclass(frozen=True)
class Precision:
    """The 95% interval of the configuration's mean `metric` no wider than ci_ms milliseconds
    and/or ci_pct percent of that mean (either met is enough when both are given)."""

    metric: str = "p95"
    ci_ms: float | None = None
    ci_pct: float | None = None

    def met(self, lo: float, hi: float, mean: float) -> bool:
        width = hi - lo
        if not math.isfinite(width):  # no frame completed in some repetition: nothing to refine
            return True
        if self.ci_ms is not None and width <= self.ci_ms:
            return True
        return self.ci_pct is not None and width <= self.ci_pct / 100 * abs(mean)

    def words(self) -> str:
        parts = [f"{self.ci_ms:g} ms" if self.ci_ms is not None else "",
                 f"{self.ci_pct:g}%" if self.ci_pct is not None else ""]  # fmt: skip
        return f"the {self.metric}'s 95% interval <= " + " or ".join(p for p in parts if p)


def parse_precision(value: Any, src: str) -> Precision | None:
    if value is None:
        return None
    data = validate.strict_mapping(value, KEYS, src, "precision", "{metric: p95, ci_ms: 2}")
    metric = data.get("metric", "p95")
    if metric not in METRICS:
        raise ConfigError(src, "precision.metric", f"{metric!r}: valid: {', '.join(METRICS)}")
    ci_ms = data.get("ci_ms")
    ci_pct = data.get("ci_pct")
    if ci_ms is None and ci_pct is None:
        raise ConfigError(src, "precision", "give ci_ms (milliseconds) or ci_pct (percent)")
    if ci_ms is not None:
        ci_ms = validate.number(ci_ms, src, "precision.ci_ms", 0, 60_000, lo_open=True)
    if ci_pct is not None:
        ci_pct = validate.number(ci_pct, src, "precision.ci_pct", 0, 1000, lo_open=True)
    return Precision(metric, ci_ms, ci_pct)


def more_repetitions(
    values: Sequence[float], precision: Precision, have: int, most: int
) -> tuple[int, tuple[float, float, float]]:
    """How many repetitions to add to a configuration whose `have` finished cells gave
    `values` (its per-cell statistic), and the interval it has now (lo, hi, mean).

    The width of a bootstrap interval of a mean shrinks as 1/sqrt(n): ask for the n that would
    meet the target, at least one more and at most up to `most`, so a noisy configuration's
    next cells run side by side instead of one at a time."""
    from testbed.analysis.metrics import bootstrap_ci

    arr = np.asarray(values, dtype=float)
    lo, hi = bootstrap_ci(arr)
    finite = arr[np.isfinite(arr)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    if precision.met(lo, hi, mean) or have >= most:
        return 0, (lo, hi, mean)
    targets = [t for t in (precision.ci_ms, (precision.ci_pct or 0) / 100 * abs(mean)) if t]
    width = hi - lo
    need = math.ceil(have * (width / max(targets)) ** 2) if targets else most
    return max(1, min(need, most) - have), (lo, hi, mean)
