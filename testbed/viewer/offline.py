"""The AI viewer without a network: encode a clip at each bitrate, uniform and with ROI, with
the live path's encoder (testbed.roi.offline), take the decoded frames a model would (viewer.fps,
its resize), and judge them. What the encoder alone does to task accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from testbed.roi.offline import Clip, encode_clip
from testbed.roi.spec import RoiSpec
from testbed.viewer.judges import Judge, ViewerFrame
from testbed.viewer.judging import accuracy, score
from testbed.viewer.questions import Question
from testbed.viewer.resize import resize_rgb
from testbed.viewer.spec import ViewerSpec

Say = Callable[[str], None]


@dataclass(frozen=True)
class Point:
    bitrate_target_mbps: float
    roi: bool
    achieved_mbps: float
    answers: pd.DataFrame

    def row(self) -> dict[str, Any]:
        acc = accuracy(self.answers)["all"]
        return {"bitrate_target_mbps": self.bitrate_target_mbps, "roi": "ROI" if self.roi else "uniform",
                "achieved_mbps": self.achieved_mbps, "accuracy": acc["accuracy"],
                "ci_lo": acc["ci95"][0], "ci_hi": acc["ci95"][1], "questions": acc["questions"],
                "char_accuracy": acc["char_accuracy"], "failed": acc["failed"]}  # fmt: skip


def sample_indices(frames: int, fps: float, viewer_fps: float, skip: int) -> set[int]:
    """The source frames a model taking viewer_fps would see (the first of each slot)."""
    out: set[int] = set()
    k = 0
    while True:
        i = skip + math.ceil(k * fps / viewer_fps - 1e-9)
        if i >= frames:
            return out
        out.add(i)
        k += 1


def _keeper(
    wanted: set[int], taken: dict[int, np.ndarray], max_pixels: int
) -> Callable[[int, Any], None]:
    def keep(i: int, frame: Any) -> None:
        if i in wanted:
            taken[i] = np.asarray(resize_rgb(frame.to_ndarray(format="rgb24"), max_pixels))

    return keep


@dataclass(frozen=True)
class Encodings:
    """What a clip is encoded as: each bitrate, uniform (False) and/or with ROI (True) as
    roi says."""

    bitrates_mbps: Sequence[float]
    roi: RoiSpec
    rois: Sequence[bool] = (False, True)


def evaluate(clip: Clip, questions: Sequence[Question], encodings: Encodings, judge: Judge,
             viewer: ViewerSpec, skip: int = 30, say: Say = lambda _: None) -> list[Point]:  # fmt: skip
    """One point per (bitrate, uniform | ROI): achieved bitrate and the judge's answers."""
    wanted = sample_indices(clip.frames, clip.fps, viewer.fps, skip)
    roi = encodings.roi
    out = []
    for bitrate in encodings.bitrates_mbps:
        for enabled in encodings.rois:
            taken: dict[int, np.ndarray] = {}
            res = encode_clip(clip, bitrate, replace(roi, enabled=enabled), skip=skip,
                              on_decoded=_keeper(wanted, taken, viewer.max_pixels))  # fmt: skip
            frames = [ViewerFrame(taken[i], (clip.width, clip.height), (i - skip) / clip.fps, i)
                      for i in sorted(taken)]  # fmt: skip
            answers = score(judge, list(questions), frames)
            point = Point(bitrate, enabled, res.bitrate_mbps, answers)
            r = point.row()
            say(f"{bitrate:>6g} Mbps {r['roi']:<8} achieved {r['achieved_mbps']:.3f} Mbps  accuracy "
                f"{r['accuracy']:.2f} [{r['ci_lo']:.2f}, {r['ci_hi']:.2f}]  char "
                f"{r['char_accuracy'] if r['char_accuracy'] is None else round(r['char_accuracy'], 2)}")  # fmt: skip
            out.append(point)
    return out


def bitrate_at_share(table: pd.DataFrame, share: float = 0.9) -> dict[str, float]:
    """Per roi setting: the lowest achieved bitrate whose accuracy reaches `share` of that
    setting's top accuracy (linear between measured points; nan if never)."""
    out = {}
    for roi, g in table.groupby("roi"):
        g = g.sort_values("achieved_mbps")
        goal = share * g.accuracy.max()
        x, y = g.achieved_mbps.to_numpy(), g.accuracy.to_numpy()
        at = math.nan
        for i in range(len(g)):
            if y[i] >= goal:
                if i == 0 or y[i] == y[i - 1]:
                    at = float(x[i])
                else:
                    at = float(x[i - 1] + (goal - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
                break
        out[str(roi)] = at
    return out
