"""Reaction time of a stack to a controller's decision: from each change of the target
(controller.parquet) to the encoder's output reaching the new rate. Pure: reads cells.

The encoder's output is the frame table's size_bytes at each frame's first packet on the
sender's wire, summed over a sliding `window_s` (stepping 50 ms). A step down is reached when
a window's rate is at most (1 + tolerance) x the new target; a step up when it is at least
(1 - tolerance) x it (an encoder whose content needs less never reaches it: counted apart).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.errors import TestbedError

STEP_S = 0.05


def step_reactions(frames: pd.DataFrame, control: pd.DataFrame, window_s: float = 0.25,
                   tolerance: float = 0.25, horizon_s: float = 3.0) -> pd.DataFrame:  # fmt: skip
    """One row per change of the target: when, from, to, direction, reaction_s (NaN: not
    reached within horizon_s or before the next change)."""
    sent = frames.dropna(subset=["sent_first_ns"])
    t = sent.sent_first_ns.astype("int64").to_numpy()
    bits = sent.size_bytes.to_numpy(dtype=float) * 8
    order = np.argsort(t)
    t, bits = t[order], np.cumsum(bits[order])
    targets = control[["t_ns", "target_bps"]].astype({"t_ns": "int64"}).sort_values("t_ns")
    changes = targets[targets.target_bps.diff().fillna(0) != 0]
    rows = []
    times = [*changes.t_ns.to_list(), None]
    prev = targets.target_bps.iloc[0] if len(targets) else np.nan
    for i, (_, ch) in enumerate(changes.iterrows()):
        new, start, until = float(ch.target_bps), int(ch.t_ns), times[i + 1]
        end = start + horizon_s * 1e9 if until is None else min(start + horizon_s * 1e9, until)
        down = new < prev
        reaction = np.nan
        for a in np.arange(start, end - window_s * 1e9 + 1, STEP_S * 1e9):
            lo, hi = np.searchsorted(t, [a, a + window_s * 1e9])
            rate = ((bits[hi - 1] if hi else 0) - (bits[lo - 1] if lo else 0)) / window_s
            if (down and rate <= (1 + tolerance) * new) or (
                not down and rate >= (1 - tolerance) * new
            ):
                reaction = (a + window_s * 1e9 - start) / 1e9  # the window's end: when it is seen
                break
        rows.append({"t_ns": start, "from_bps": prev, "to_bps": new,
                     "direction": "down" if down else "up", "reaction_s": reaction})  # fmt: skip
        prev = new
    return pd.DataFrame(rows)


def reaction_summary(cells: Sequence[Path]) -> pd.DataFrame:
    """Per cell: its stack, steps up and down, each direction's median reaction and how many
    were never reached."""
    out: list[dict[str, Any]] = []
    for cell in cells:
        if not (cell / "controller.parquet").exists():
            raise TestbedError(f"{cell}: no controller.parquet; run a controller (e.g. abr: steps)")
        meta = json.loads((cell / "cell.json").read_text())
        steps = step_reactions(pd.read_parquet(cell / "frames.parquet"),
                               pd.read_parquet(cell / "controller.parquet"))  # fmt: skip
        row: dict[str, Any] = {"cell": cell.name, "stack": meta["stack"]["label"]}
        for d in ("down", "up"):
            g = steps[steps.direction == d] if len(steps) else steps
            got = g.reaction_s.dropna() if len(g) else pd.Series(dtype=float)
            row[f"{d}_steps"] = len(g)
            row[f"{d}_median_s"] = float(got.median()) if len(got) else np.nan
            row[f"{d}_p90_s"] = float(got.quantile(0.9)) if len(got) else np.nan
            row[f"{d}_not_reached"] = int(len(g) - len(got))
        out.append(row)
    return pd.DataFrame(out)
