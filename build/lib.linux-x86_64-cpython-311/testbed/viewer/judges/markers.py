"""The `markers` judge: OpenCV's ArUco detector (DICT_4X4_50) for counting and identity.

Counting: the count seen most often across the frames, the option equal to it (else the
numerically nearest). Identity: the id seen most often inside the question's box (scaled to the
resized frame). Nothing seen: a guess, so unreadable video sits at chance.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from testbed.viewer.judges.base import Answer, ViewerFrame, guess
from testbed.viewer.questions import Question


class MarkersJudge:
    def __init__(self, dictionary: str = "DICT_4X4_50") -> None:
        import cv2

        self.detector = cv2.aruco.ArucoDetector(
            cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)),
            cv2.aruco.DetectorParameters(),
        )
        self.cache: dict[tuple[int, int], list[tuple[int, float, float]]] = {}

    def detect(self, frame: ViewerFrame) -> list[tuple[int, float, float]]:
        """(id, centre x, centre y) in source pixels."""
        key = (frame.frame_id, id(frame.rgb))
        if key not in self.cache:
            import cv2

            gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
            corners, ids, _ = self.detector.detectMarkers(gray)
            sx, sy = frame.scale
            found: list[tuple[int, float, float]] = []
            for c, i in zip(corners, [] if ids is None else ids.flatten(), strict=False):
                cx, cy = c[0][:, 0].mean() / sx, c[0][:, 1].mean() / sy
                found.append((int(i), float(cx), float(cy)))
            self.cache[key] = found
        return self.cache[key]

    def answer(self, question: Question, frames: list[ViewerFrame]) -> Answer:
        seen = [self.detect(f) for f in frames]
        if question.truth_count is not None or not question.boxes:
            counts = Counter(len(s) for s in seen)
            if not counts or counts.most_common(1)[0][0] == 0:
                return Answer(guess(question), raw="no markers seen")
            n = counts.most_common(1)[0][0]
            return Answer(self._nearest(question, n), raw=f"count {n}")
        box = question.boxes[0]
        inside: Counter[int] = Counter()
        for s in seen:
            for marker, cx, cy in s:
                if box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]:
                    inside[marker] += 1
        if not inside:
            return Answer(guess(question), raw="no marker in the box")
        marker = inside.most_common(1)[0][0]
        return Answer(self._nearest(question, marker, exact=True), raw=f"id {marker}")

    @staticmethod
    def _nearest(question: Question, value: int, exact: bool = False) -> str:
        numeric: dict[str, Any] = {}
        for k, v in question.options.items():
            try:
                numeric[k] = int(v.strip())
            except ValueError:
                continue
        for k, v in numeric.items():
            if v == value:
                return k
        if exact or not numeric:
            return guess(question)
        return min(numeric, key=lambda k: (abs(numeric[k] - value), k))
