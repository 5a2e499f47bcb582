"""From scores to the encoder's ROI rectangles, every `score_every` frames.

A scorer that is slower than a frame interval (CLIP: seconds to a minute per 720p frame on two
cores) must not run on the sender's event loop: RTCP, retransmissions and pacing would stop
while it thinks. In `thread` mode the scorer runs in one worker thread and each frame is encoded
with the newest map that has finished; every frame records how old its map is.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future

import numpy as np

from testbed.roi.qpmap import Rect, delta_map, normalise, qp_map, rectangles
from testbed.roi.scorers import Scorer
from testbed.roi.spec import RoiSpec

# the map: delta QP per CTU, its rectangles, the frame it was scored on, the scorer's ms
ScoredMap = tuple[np.ndarray, list[Rect], int, float]


def runs_in_thread(spec: RoiSpec, scorer: Scorer) -> bool:
    """auto: the scorers that say they are slow (`background = True`, e.g. clip) get a thread."""
    if spec.scoring == "auto":
        return bool(getattr(scorer, "background", False))
    return spec.scoring == "thread"


class MapUpdater:
    """Keeps the current map; `update` is called once per frame, in frame order."""

    def __init__(self, scorer: Scorer, spec: RoiSpec, width: int, height: int) -> None:
        self.scorer, self.spec, self.width, self.height = scorer, spec, width, height
        self.threaded = runs_in_thread(spec, scorer)
        self.pending: Future[ScoredMap] | None = None
        self.delta: np.ndarray | None = None
        self.rects: list[Rect] = []
        self.scored_index = -1
        self.submitted = -(10**9)

    def _score(self, rgb: np.ndarray, index: int) -> ScoredMap:
        t = time.perf_counter()
        scores = self.scorer.score(rgb, index)
        if self.spec.normalise:
            scores = normalise(scores)
        delta = delta_map(qp_map(scores, self.spec.gamma))
        rects = rectangles(delta, self.width, self.height)
        return delta, rects, index, (time.perf_counter() - t) * 1000

    def _apply(self, scored: ScoredMap) -> float:
        self.delta, self.rects, self.scored_index, ms = scored
        return ms

    def update(self, rgb: np.ndarray, index: int) -> tuple[float, float]:
        """Before encoding frame `index`: (scorer ms of a map that became current now, else 0;
        the current map's age in frames, NaN while there is none)."""
        ms = 0.0
        if not self.threaded:
            if index % self.spec.score_every == 0:
                ms = self._apply(self._score(rgb, index))
        else:
            if self.pending is not None and self.pending.done():
                done, self.pending = self.pending, None
                ms = self._apply(done.result())  # a scorer's exception fails the run, as inline
            # a scorer slower than score_every frames skips the frames that pass while it works
            if self.pending is None and index - self.submitted >= self.spec.score_every:
                self.pending = self._start(rgb.copy(), index)
                self.submitted = index
        age = index - self.scored_index if self.scored_index >= 0 else math.nan
        return ms, age

    def _start(self, rgb: np.ndarray, index: int) -> Future[ScoredMap]:
        """One daemon thread per map: a sender that ends mid-score does not wait for it."""
        future: Future[ScoredMap] = Future()

        def work() -> None:
            try:
                future.set_result(self._score(rgb, index))
            except BaseException as e:  # handed to the sender's loop by update()
                future.set_exception(e)

        threading.Thread(target=work, name="roi-scorer", daemon=True).start()
        return future
