"""The `ocr` judge: Tesseract reads every frame; the option closest to what it read wins.

Closeness is rapidfuzz's partial ratio of the option against the text read (case-folded), the
best over the frames; where nothing matches at all the judge guesses (so unreadable video sits
at chance). Character accuracy: per frame, the normalised Levenshtein similarity of the true
text to the line read that is most like it, averaged over the frames.
"""

from __future__ import annotations

import os
from typing import Any

from testbed.errors import UnavailableError
from testbed.viewer.judges.base import Answer, ViewerFrame, guess
from testbed.viewer.questions import Question


class OcrJudge:
    def __init__(self, psm: int = 3, lang: str = "eng", min_score: float = 30.0) -> None:
        try:
            import pytesseract

            pytesseract.get_tesseract_version()
        except Exception as e:
            raise UnavailableError(
                f"the ocr judge needs Tesseract ({e}); run `make setup` "
                "(apt: tesseract-ocr tesseract-ocr-eng; pip: pytesseract)"
            ) from None
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per OCR call
        self.config = f"--psm {psm}"
        self.lang = lang
        self.min_score = min_score
        self.cache: dict[tuple[int, int], str] = {}

    def read(self, frame: ViewerFrame) -> str:
        key = (frame.frame_id, id(frame.rgb))
        if key not in self.cache:
            import pytesseract

            self.cache[key] = str(pytesseract.image_to_string(frame.rgb, lang=self.lang,
                                                              config=self.config))  # fmt: skip
        return self.cache[key]

    def answer(self, question: Question, frames: list[ViewerFrame]) -> Answer:
        from rapidfuzz import fuzz
        from rapidfuzz.distance import Levenshtein

        texts = [self.read(f) for f in frames]
        best: dict[str, float] = {}
        for letter, option in question.options.items():
            best[letter] = max((fuzz.partial_ratio(option.lower(), t.lower()) for t in texts),
                               default=0.0)  # fmt: skip
        top = max(best.values(), default=0.0)
        winners = [k for k, v in best.items() if v == top]
        letter = winners[0] if top >= self.min_score and len(winners) == 1 else guess(question)
        char: Any = None
        if question.truth_text and texts:
            truth = question.truth_text.lower()
            per = [max((Levenshtein.normalized_similarity(truth, line.lower())
                        for line in t.splitlines() if line.strip()), default=0.0) for t in texts]  # fmt: skip
            char = sum(per) / len(per)
        raw = " | ".join(" ".join(t.split()) for t in texts)[:2000]
        return Answer(letter, raw=raw, char_accuracy=char)
