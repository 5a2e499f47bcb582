"""From relevance to an encoder's region-of-interest offsets. Pure.

The paper: each region's relevance r in [-1, 1] to the user's words sets its QP,
QP = 51 (1 - ((r + 1) / 2)^gamma), gamma = 3; the authors encode with Kvazaar --roi, whose
per-CTU delta QP = QP - 26, clamped to 0..25, is added to the base QP. Here the delta becomes an
FFmpeg `addroi` rectangle with qoffset = delta / 51 (positive: coarser), for libx264.
CTUs are 64 x 64 (HEVC's); equal deltas are merged into rectangles to keep the filter graph small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CTU = 64
QP_MAX = 51
QP_BASE = 26
DELTA_MAX = 25


def grid_shape(width: int, height: int, ctu: int = CTU) -> tuple[int, int]:
    """(rows, cols) of CTUs covering a frame."""
    return -(-height // ctu), -(-width // ctu)


def normalise(scores: np.ndarray) -> np.ndarray:
    """Min-max to [-1, 1] per frame (CLIP similarities cluster in 0.15-0.35: the formula
    would be nearly uniform without it). A constant map becomes all zeros."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    if hi - lo < 1e-12:
        return np.zeros_like(scores, dtype="float64")
    return 2 * (scores - lo) / (hi - lo) - 1


def qp_map(relevance: np.ndarray, gamma: float = 3.0) -> np.ndarray:
    """The paper's QP per region, from relevance in [-1, 1]."""
    r = np.asarray(np.clip(relevance, -1, 1), dtype="float64")
    return np.asarray(QP_MAX * (1 - ((r + 1) / 2) ** gamma))


def delta_map(qp: np.ndarray) -> np.ndarray:
    """Kvazaar --roi semantics: delta = QP - 26 clamped to 0..25, whole numbers."""
    return np.asarray(np.clip(np.rint(qp - QP_BASE), 0, DELTA_MAX), dtype="int64")


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int
    delta: int

    @property
    def qoffset(self) -> float:
        return self.delta / QP_MAX


def rectangles(delta: np.ndarray, width: int, height: int, ctu: int = CTU) -> list[Rect]:
    """Merge equal, non-zero deltas: runs along each row, then identical runs down the rows."""
    rows, cols = delta.shape
    runs: list[tuple[int, int, int, int]] = []  # row, col0, col1 (exclusive), delta
    for r in range(rows):
        c = 0
        while c < cols:
            d = int(delta[r, c])
            c1 = c + 1
            while c1 < cols and delta[r, c1] == d:
                c1 += 1
            if d:
                runs.append((r, c, c1, d))
            c = c1
    open_: dict[tuple[int, int, int], list[int]] = {}  # (col0, col1, delta) -> [row0, rows]
    done: list[tuple[int, int, int, int, int]] = []
    for r, c0, c1, d in runs:
        key = (c0, c1, d)
        if key in open_ and open_[key][0] + open_[key][1] == r:
            open_[key][1] += 1
        else:
            if key in open_:
                done.append((open_[key][0], open_[key][1], c0, c1, d))
            open_[key] = [r, 1]
    done += [(r0, n, c0, c1, d) for (c0, c1, d), (r0, n) in open_.items()]
    out = []
    for r0, n, c0, c1, d in sorted(done):
        x, y = c0 * ctu, r0 * ctu
        out.append(Rect(x, y, min(c1 * ctu, width) - x, min((r0 + n) * ctu, height) - y, d))
    return out


def summary(delta: np.ndarray) -> tuple[float, float]:
    """(mean delta QP, share of the frame at QP 51) of a map."""
    qp = QP_BASE + delta
    return float(delta.mean()), float((qp >= QP_MAX).mean())
