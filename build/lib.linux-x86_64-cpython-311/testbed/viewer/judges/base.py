"""What a judge sees and says."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from testbed.viewer.questions import Question


@dataclass(frozen=True)
class ViewerFrame:
    """One frame as the model takes it: RGB after the model's resize, the source size (to map
    question boxes), and when it was captured (s since the first frame) and which it was."""

    rgb: np.ndarray
    source_size: tuple[int, int]  # width, height before the resize
    capture_s: float
    frame_id: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.rgb.shape[1] / self.source_size[0], self.rgb.shape[0] / self.source_size[1]


@dataclass(frozen=True)
class Answer:
    """letter: the option chosen (None: the judge failed; error says why). raw: what the judge
    read or the model said. char_accuracy: against the question's truth_text, where it has one."""

    letter: str | None
    raw: str = ""
    error: str | None = None
    latency_ms: float = 0.0
    char_accuracy: float | None = None
    attempts: int = 1


class Judge(Protocol):
    def answer(self, question: Question, frames: list[ViewerFrame]) -> Answer: ...


def guess(question: Question) -> str:
    """A deterministic uniform guess for a reader that saw nothing to go on (chance, not A)."""
    letters = sorted(question.options)
    digest = hashlib.sha256(f"{question.qid}|{question.question}".encode()).digest()
    return letters[digest[0] % len(letters)]
