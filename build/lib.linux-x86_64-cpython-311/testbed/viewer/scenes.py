"""Question sets of the built-in scenes (testbed.roi.scenes), made from their ground truth.

Distractors have the true answer's length (a reader that reads garbage then sits at chance,
1/4, instead of falling below it because shorter options match garbage better): a document
line's distractors swap two of its words for others of the same length; a marker's are other ids
with as many digits; counts are single digits.
"""

from __future__ import annotations

import numpy as np

from testbed.roi.scenes import WORDS, GroundTruthScene, scene
from testbed.viewer.questions import Question

LETTERS = "ABCD"


def _place(true: str, others: list[str], rng: np.random.Generator) -> tuple[dict[str, str], str]:
    slot = int(rng.integers(4))
    opts = [*others[:slot], true, *others[slot:]]
    return dict(zip(LETTERS, opts, strict=True)), LETTERS[slot]


def _near_misses(text: str, rng: np.random.Generator, n: int = 3) -> list[str]:
    words = text.split()
    out: list[str] = []
    for _ in range(200):
        if len(out) == n:
            break
        w = list(words)
        for i in rng.choice(len(w), size=min(2, len(w)), replace=False):
            same = [x for x in WORDS if len(x) == len(w[i]) and x != w[i]]
            if same:
                w[i] = str(same[int(rng.integers(len(same)))])
        cand = " ".join(w)
        if cand != text and cand not in out and len(cand) == len(text):
            out.append(cand)
    while len(out) < n:  # a line of unswappable words: change letters instead
        chars = list(text)
        j = int(rng.integers(len(chars)))
        chars[j] = "x" if chars[j] != "x" else "z"
        if (cand := "".join(chars)) not in out and cand != text:
            out.append(cand)
    return out


def document_questions(s: GroundTruthScene) -> list[Question]:
    rng = np.random.default_rng(5)
    out = []
    for n, item in enumerate(s.items, start=1):
        options, answer = _place(item.text, _near_misses(item.text, rng), rng)
        out.append(Question(
            qid=f"line{n}", question=f"What does line {n} of the document say?", options=options,
            answer=answer, task_type=f"Text-Rich Understanding ({item.size_px} px)",
            truth_text=item.text, boxes=(item.box,),
        ))  # fmt: skip
    return out


def markers_questions(s: GroundTruthScene) -> list[Question]:
    rng = np.random.default_rng(6)
    ids = [int(i.text) for i in s.items]
    count = len(ids)
    others = [str(c) for c in (count - 1, count - 2, count + 1) if 0 <= c <= 9]
    options, answer = _place(str(count), others[:3], rng)
    out = [Question(qid="count", question="How many ArUco markers are in view?", options=options,
                    answer=answer, task_type="Counting", truth_count=count,
                    boxes=tuple(i.box for i in s.items))]  # fmt: skip
    for rank, item in enumerate(sorted(s.items, key=lambda i: -i.size_px), start=1):
        pool = [str(x) for x in range(50) if len(str(x)) == len(item.text) and str(x) != item.text]
        wrong = [str(x) for x in rng.choice(pool, size=3, replace=False)]
        options, answer = _place(item.text, wrong, rng)
        out.append(Question(
            qid=f"marker{rank}", question=f"What is the id of marker number {rank} by size?",
            options=options, answer=answer, task_type=f"Object Perception ({item.size_px} px)",
            truth_markers=(int(item.text),), boxes=(item.box,),
        ))  # fmt: skip
    return out


def builtin_questions(name: str, width: int, height: int) -> list[Question]:
    """The question set of builtin:document or builtin:markers at this frame size."""
    s = scene(name, width, height)
    return document_questions(s) if s.kind == "document" else markers_questions(s)
