"""An accuracy-vs-bitrate curve the AI viewer measured, and the lowest bitrate that reaches a
threshold on it. Pure (stdlib only): read once when the controller is made.

Accepted files: the JSON `testbed bench viewer --json` writes (its `points`), or the CSV
`testbed report RESULTS --accuracy --csv` writes. Rows: `achieved_mbps` (the bitrate the
encoder reached; `bitrate_target_mbps` where it is missing), `accuracy`, and `roi` (uniform or
ROI; one kind is used, `uniform` by default, which also takes the `none` of a source without
ROI). The curve starts at its lowest measured bitrate: a threshold reached there caps there. Several rows at one bitrate (several videos or
loss rates) are averaged.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Any


class CurveError(ValueError):
    """A curve file that cannot be used (said in one line by the controller's maker)."""


def read_curve(path: str | Path, roi: str = "uniform") -> list[tuple[float, float]]:
    """(bitrate Mbps, accuracy) points in bitrate order."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise CurveError(f"{path}: cannot be read ({e.strerror})") from None
    rows: list[dict[str, Any]]
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CurveError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
        rows = data.get("points", []) if isinstance(data, dict) else []
    else:
        rows = list(csv.DictReader(text.splitlines()))
    sums: dict[float, list[float]] = {}
    for row in rows:
        kind = str(row.get("roi", "uniform"))
        if kind != roi and not (roi == "uniform" and kind == "none"):  # none: not a roi source
            continue
        try:
            mbps = float(row.get("achieved_mbps") or row["bitrate_target_mbps"])
            acc = float(row["accuracy"])
        except (KeyError, TypeError, ValueError):
            raise CurveError(f"{path}: a row without a number in achieved_mbps and accuracy: "
                             f"{dict(row)!r}") from None  # fmt: skip
        if math.isfinite(mbps) and math.isfinite(acc) and mbps > 0:
            sums.setdefault(mbps, []).append(acc)
    if len(sums) < 2:
        raise CurveError(f"{path}: fewer than 2 bitrates with roi {roi!r}; valid: the JSON of "
                         "`testbed bench viewer --json` or the CSV of `testbed report --accuracy --csv`")  # fmt: skip
    return sorted((m, sum(a) / len(a)) for m, a in sums.items())


def lowest_reaching(curve: list[tuple[float, float]], threshold: float) -> tuple[float, bool]:
    """(Mbps, reached): the lowest bitrate at which the curve reaches threshold, linearly
    interpolated between the two points around the first crossing; a curve that never reaches
    it: the bitrate of its highest accuracy, reached False."""
    prev: tuple[float, float] | None = None
    for mbps, acc in curve:
        if acc >= threshold:
            if prev is None or prev[1] >= acc:
                return mbps, True
            share = (threshold - prev[1]) / (acc - prev[1])
            return prev[0] + share * (mbps - prev[0]), True
        prev = (mbps, acc)
    best = max(curve, key=lambda p: (p[1], -p[0]))
    return best[0], False


def accuracy_at(curve: list[tuple[float, float]], mbps: float) -> float:
    """The curve's accuracy at mbps (linear between points, flat beyond its ends)."""
    if mbps <= curve[0][0]:
        return curve[0][1]
    for (m0, a0), (m1, a1) in itertools.pairwise(curve):
        if mbps <= m1:
            return a0 + (a1 - a0) * (mbps - m0) / (m1 - m0)
    return curve[-1][1]
