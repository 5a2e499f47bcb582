"""Task accuracy of the AI viewer across a sweep: per configuration, pooled over repetitions.

Reads each cell's answers.<judge>.parquet (testbed.viewer.judging) and intake.parquet; never
writes to the results. The response-latency view: a model answers after the frame is complete
on the receiver's wire plus its own time (model_ms, default 232), against a 300 ms target.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis.load import load_cells
from testbed.errors import TestbedError
from testbed.viewer.judging import judge_name_tag, wilson

RESPONSE_TARGET_MS = 300.0


def answers_table(results: Path, judge: str | None = None) -> pd.DataFrame:
    """Every answer of every cell (of one judge, or of every judge that scored it), with the
    cell's columns (params, roi, loss, bitrate...)."""
    cells = load_cells(results).set_index("cell_id")
    pattern = f"answers.{judge_name_tag(judge)}.parquet" if judge else "answers.*.parquet"
    parts = []
    for cell_id, meta in cells.iterrows():
        folder = results / "cells" / str(cell_id)
        for path in sorted(folder.glob(pattern)):
            parts.append(_cell_answers(folder, path, str(cell_id), meta, cells.columns))
    if not parts:
        raise TestbedError(f"{results}: no cell has answers{f' of judge {judge!r}' if judge else ''}; "
                           f"run `testbed judge {results}`")  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _cell_answers(
    folder: Path, path: Path, cell_id: str, meta: pd.Series, columns: pd.Index
) -> pd.DataFrame:
    """One cell's answers of one judge, with its response-latency view and the cell's columns."""
    a = pd.read_parquet(path).assign(judge=path.name.split(".")[1])
    frames = pd.read_parquet(folder / "frames.parquet")
    cell = json.loads((folder / "cell.json").read_text())
    model_ms = float((cell["stream"].get("viewer") or {}).get("model_ms", 232.0))
    done = frames[frames.status == "complete"]
    resp = (done.complete_ns - done.capture_ns).astype("float64") / 1e6 + model_ms
    return a.assign(cell_id=cell_id, achieved_mbps=cell["summary"]["achieved_mbps"],
                    response_p95_ms=float(np.percentile(resp, 95)) if len(resp) else np.nan,
                    within_target=float((resp <= RESPONSE_TARGET_MS).mean()) if len(resp) else np.nan,
                    video=cell["stream"].get("video"), **{k: meta[k] for k in columns})  # fmt: skip


def accuracy_table(answers: pd.DataFrame, by_task: bool = False) -> pd.DataFrame:
    """One row per configuration (scene, roi, bitrate, loss, other grid keys): accuracy with its
    95% Wilson interval, character accuracy, achieved bitrate and the response-latency view."""
    keys = ["video", "judge", "roi", "loss_pct", "bitrate_mbps"]
    extra = [c for c in answers.columns if c.startswith(("stream.", "uplink.", "downlink."))
             and c not in ("stream.bitrate_mbps", "uplink.loss_pct", "stream.video",
                           "stream.roi.enabled")]  # fmt: skip
    keys += [c for c in extra if answers[c].nunique() > 1]
    keys += [c for c in ("stack", "abr") if c in answers and answers[c].nunique() > 1]
    if by_task:
        keys.append("task_type")
    rows = []
    for key, g in answers.groupby(keys, dropna=False):
        k, n = int(g.correct.sum()), len(g)
        lo, hi = wilson(k, n)
        cells = g.drop_duplicates("cell_id")
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                     "achieved_mbps": cells.achieved_mbps.mean(), "cells": len(cells),
                     "questions": n, "accuracy": k / n, "ci_lo": lo, "ci_hi": hi,
                     "char_accuracy": g.char_accuracy.mean(), "failed": int(g.failed.sum()),
                     "response_p95_ms": cells.response_p95_ms.mean(),
                     "within_300ms": cells.within_target.mean()})  # fmt: skip
    return pd.DataFrame(rows).sort_values(keys).reset_index(drop=True)
