"""Question files: DeViBench's CSV, extended with ground truth for the built-in judges.

Columns (DeViBench's): question, options (`A) ...` entries, one per line or on one line),
standard_answer (the letter), task_type; optional sample_folder and start_time (s: the question
is about the 5 s from there). Extensions, all optional: id, duration_s (default 5 where
start_time is given, else the whole video), truth_text (the text a reader should read),
truth_markers (marker ids, space-separated), truth_count, boxes (JSON [[x, y, w, h], ...] in
source pixels: the relevant region, which the oracle ROI scorer can read). UTF-8 with or without
a byte-order mark; quoted fields may hold line breaks.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from testbed.errors import ConfigError
from testbed.files import read_input_file

REQUIRED = ("question", "options", "standard_answer", "task_type")
OPTIONAL = ("id", "sample_folder", "start_time", "duration_s", "truth_text", "truth_markers",
            "truth_count", "boxes")  # fmt: skip
SEGMENT_S = 5.0  # DeViBench: each question is about the 5 s from start_time
_OPTION = re.compile(r"(?:^|(?<=\s))([A-Z])\)\s*")


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    options: dict[str, str]  # letter -> text
    answer: str
    task_type: str
    sample_folder: str | None = None
    start_s: float | None = None
    duration_s: float | None = None
    truth_text: str | None = None
    truth_markers: tuple[int, ...] = ()
    truth_count: int | None = None
    boxes: tuple[tuple[int, int, int, int], ...] = field(default_factory=tuple)

    def window_s(self) -> tuple[float, float]:
        """[start, end) of the video the question is about (capture time from the first frame)."""
        if self.start_s is None:
            return 0.0, float("inf")
        return self.start_s, self.start_s + (self.duration_s or SEGMENT_S)


def parse_options(text: str, src: str, where: str) -> dict[str, str]:
    """'A) x  B) y ...' (one line or several) -> {'A': 'x', 'B': 'y', ...}, letters in order."""
    marks = list(_OPTION.finditer(text.strip()))
    body = text.strip()
    if len(marks) < 2:
        raise ConfigError(src, where, "options: expected at least two entries like `A) ...`")
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        letter = m.group(1)
        if letter != chr(ord("A") + i):
            raise ConfigError(
                src, where, f"options: {letter}) out of order; expected {chr(ord('A') + i)})"
            )
        out[letter] = " ".join(body[m.end() : end].split())
    return out


def parse_questions(text: str, src: str) -> list[Question]:
    text = text.removeprefix("\ufeff")
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:
        raise ConfigError(src, "", f"malformed CSV: {e}") from None
    if not rows:
        raise ConfigError(src, "", "no questions; expected a header with: " + ", ".join(REQUIRED))
    header = list(rows[0])
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError(src, "", f"missing column(s) {', '.join(missing)}; a question file has "
                          f"{', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)})")  # fmt: skip
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise ConfigError(
            src, unknown[0], f"unknown column; valid: {', '.join(REQUIRED + OPTIONAL)}"
        )
    out = []
    for n, row in enumerate(rows, start=2):
        where = f"line {n}" if "id" not in row or not row["id"] else f"question {row['id']}"
        options = parse_options(row["options"] or "", src, where)
        answer = (row["standard_answer"] or "").strip()
        if answer not in options:
            raise ConfigError(src, f"{where}: standard_answer",
                              f"{answer!r} is not among its options ({', '.join(options)})")  # fmt: skip
        out.append(Question(
            qid=(row.get("id") or "").strip() or f"q{n - 1}", question=row["question"].strip(),
            options=options, answer=answer, task_type=(row["task_type"] or "").strip() or "unknown",
            sample_folder=(row.get("sample_folder") or "").strip() or None,
            start_s=_float(row.get("start_time"), src, f"{where}: start_time"),
            duration_s=_float(row.get("duration_s"), src, f"{where}: duration_s"),
            truth_text=(row.get("truth_text") or None),
            truth_markers=tuple(int(x) for x in _ints(row.get("truth_markers"), src, where)),
            truth_count=_int(row.get("truth_count"), src, f"{where}: truth_count"),
            boxes=_boxes(row.get("boxes"), src, f"{where}: boxes"),
        ))  # fmt: skip
    return out


def _float(v: str | None, src: str, where: str) -> float | None:
    if v is None or not v.strip():
        return None
    try:
        x = float(v)
    except ValueError:
        raise ConfigError(src, where, f"{v!r} is not a number (seconds)") from None
    if not x >= 0:
        raise ConfigError(src, where, f"{v!r}: valid: a number >= 0")
    return x


def _int(v: str | None, src: str, where: str) -> int | None:
    if v is None or not v.strip():
        return None
    if not v.strip().isdigit():
        raise ConfigError(src, where, f"{v!r} is not a whole number >= 0")
    return int(v)


def _ints(v: str | None, src: str, where: str) -> list[int]:
    if v is None or not v.strip():
        return []
    parts = v.replace(",", " ").split()
    if not all(p.isdigit() for p in parts):
        raise ConfigError(
            src, f"{where}: truth_markers", f"{v!r}: valid: marker ids, space-separated"
        )
    return [int(p) for p in parts]


def _boxes(v: str | None, src: str, where: str) -> tuple[tuple[int, int, int, int], ...]:
    if v is None or not v.strip():
        return ()
    try:
        data = json.loads(v)
        boxes = tuple((int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in data)
    except (ValueError, TypeError, IndexError):
        raise ConfigError(src, where, f"{v[:40]!r}: valid: JSON [[x, y, w, h], ...]") from None
    return boxes


def load_questions(path: str | Path) -> list[Question]:
    return parse_questions(read_input_file(path, "question file"), str(path))


def write_questions(path: Path, questions: list[Question]) -> None:
    """A question file (with the extension columns) that load_questions reads back."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "sample_folder", *REQUIRED, "start_time", "truth_text", "truth_markers",
                "truth_count", "boxes"])  # fmt: skip
    for q in questions:
        w.writerow([q.qid, q.sample_folder or "", q.question,
                    "\n".join(f"{k}) {v}" for k, v in q.options.items()), q.answer, q.task_type,
                    "" if q.start_s is None else q.start_s, q.truth_text or "",
                    " ".join(map(str, q.truth_markers)), "" if q.truth_count is None else q.truth_count,
                    json.dumps([list(b) for b in q.boxes]) if q.boxes else ""])  # fmt: skip
    path.write_text(buf.getvalue())
