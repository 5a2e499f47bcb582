"""Scoring a cell after its session: the intake's frames, the question file, a judge.

Never in the receiver: a slow judge cannot disturb timing. Per cell, write-once:
  intake.parquet            every frame the viewer took: frame id, capture, complete (receiver's
                            wire), decode times, and its age at intake (decode - capture)
  answers.<judge>.parquet   one row per question: the letter, right or not, the judge's raw
                            reading, its failure if any, latency, character accuracy
  accuracy.<judge>.json     accuracy overall and per task type, with 95% Wilson intervals
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.errors import ConfigError, TestbedError
from testbed.files import parquet_bytes, write_atomic, write_json_atomic
from testbed.viewer.judges import Judge, ViewerFrame, make_judge
from testbed.viewer.questions import Question, load_questions

ANSWER_COLUMNS = ("qid", "task_type", "answer", "expected", "correct", "failed", "error", "raw",
                  "latency_ms", "attempts", "char_accuracy", "frames")  # fmt: skip


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n ((nan, nan) for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def intake_table(intake: pd.DataFrame, frames: pd.DataFrame) -> pd.DataFrame:
    """The receiver record's intake joined with the frame table (by RTP timestamp)."""
    cols = frames[["rtp_ts", "frame_id", "capture_ns", "complete_ns"]]
    out = intake.merge(cols, on="rtp_ts", how="left").rename(columns={"t_ns": "decoded_ns"})
    out["age_ms"] = (out.decoded_ns - out.capture_ns).astype("float64") / 1e6
    first = frames.capture_ns.min()
    out["capture_s"] = (out.capture_ns - first).astype("float64") / 1e9
    return out


def questions_for(stream: dict[str, Any]) -> list[Question] | None:
    viewer = stream.get("viewer") or {}
    if viewer.get("questions"):
        return load_questions(viewer["questions"])
    from testbed.roi.scenes import SCENES
    from testbed.viewer.scenes import builtin_questions

    video = stream.get("video")
    if video in SCENES:
        return builtin_questions(video, int(stream["width"]), int(stream["height"]))
    return None


def load_frames(cell: Path, table: pd.DataFrame, source_size: tuple[int, int]) -> list[ViewerFrame]:
    from PIL import Image

    out = []
    for row in table.dropna(subset=["frame_id"]).itertuples():
        rgb = np.asarray(Image.open(cell / str(row.file)).convert("RGB"))
        out.append(ViewerFrame(rgb, source_size, float(row.capture_s), int(row.frame_id)))
    return out


def score(judge: Judge, questions: list[Question], frames: list[ViewerFrame]) -> pd.DataFrame:
    rows = []
    for q in questions:
        start, end = q.window_s()
        seen = [f for f in frames if start <= f.capture_s < end]
        try:
            a = judge.answer(q, seen)
            letter, error = a.letter, a.error
            row = dict(raw=a.raw, latency_ms=a.latency_ms, attempts=a.attempts,
                       char_accuracy=a.char_accuracy)  # fmt: skip
        except Exception as e:  # one question's failure is recorded; the others go on
            letter, error = None, f"{type(e).__name__}: {e}"
            row = dict(raw="", latency_ms=math.nan, attempts=1, char_accuracy=None)
        rows.append(dict(qid=q.qid, task_type=q.task_type, answer=letter, expected=q.answer,
                         correct=letter == q.answer, failed=letter is None, error=error,
                         frames=len(seen), **row))  # fmt: skip
    df = pd.DataFrame(rows, columns=list(ANSWER_COLUMNS))
    return df.astype({"char_accuracy": "float64", "latency_ms": "float64"})


def accuracy(answers: pd.DataFrame) -> dict[str, Any]:
    def one(df: pd.DataFrame) -> dict[str, Any]:
        k, n = int(df.correct.sum()), len(df)
        lo, hi = wilson(k, n)
        char = df.char_accuracy.dropna()
        return {"correct": k, "questions": n, "accuracy": k / n if n else math.nan, "ci95": [lo, hi],
                "failed": int(df.failed.sum()),
                "char_accuracy": float(char.mean()) if len(char) else None}  # fmt: skip

    return {"all": one(answers),
            "by_task_type": {t: one(g) for t, g in answers.groupby("task_type")}}  # fmt: skip


def judge_name_tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "judge"


def judge_cell(cell: Path, judge: str | None = None, params: dict[str, Any] | None = None,
               force: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """Score one cell (its viewer must have been on). Returns the accuracy, or None when the cell
    has no questions (a video file without a question file)."""
    meta = json.loads((cell / "cell.json").read_text())
    stream = meta["stream"]
    viewer = stream.get("viewer") or {}
    if not viewer.get("enabled"):
        raise ConfigError(str(cell), "stream.viewer", "this cell ran without the AI viewer "
                          "(stream.viewer.enabled: true takes frames); nothing to judge")  # fmt: skip
    name = judge or viewer.get("judge", "auto")
    if name == "auto":
        name = "markers" if stream.get("video") == "builtin:markers" else "ocr"
    tag = judge_name_tag(name)
    out = cell / f"answers.{tag}.parquet"
    if out.exists() and not force:
        return dict(json.loads((cell / f"accuracy.{tag}.json").read_text()))
    questions = questions_for(stream)
    if questions is None:
        return None
    path = cell / "intake.parquet"
    if not path.exists():
        raise TestbedError(f"{cell}: no intake.parquet; the session did not finish")
    table = pd.read_parquet(path)
    frames = load_frames(cell, table, (int(stream["width"]), int(stream["height"])))
    the_judge = make_judge(name, params if judge else viewer.get("judge_params"), str(cell))
    answers = score(the_judge, questions, frames)
    write_atomic(out, parquet_bytes(answers))
    result = {"judge": name, **accuracy(answers), "frames_taken": len(frames)}
    write_json_atomic(cell / f"accuracy.{tag}.json", result)
    return result
