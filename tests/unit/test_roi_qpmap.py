"""Relevance -> QP -> delta -> rectangles."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from testbed.roi.qpmap import delta_map, grid_shape, normalise, qp_map, rectangles, summary
from testbed.roi.scoring import MapUpdater, runs_in_thread
from testbed.roi.spec import RoiSpec


def test_the_papers_formula() -> None:
    assert qp_map(np.array([1.0]))[0] == 0  # fully relevant: QP 0
    assert qp_map(np.array([-1.0]))[0] == 51  # irrelevant: QP 51
    assert np.isclose(qp_map(np.array([0.0]))[0], 51 * (1 - 0.5**3))  # 44.6
    # Kvazaar: delta = QP - 26, clamped to 0..25
    assert delta_map(qp_map(np.array([1.0, 0.0, -1.0]))).tolist() == [0, 19, 25]
    assert grid_shape(1280, 720) == (12, 20)


def test_normalise() -> None:
    clip_like = np.array([0.18, 0.22, 0.31])
    assert np.allclose(normalise(clip_like), [-1.0, 2 * 0.04 / 0.13 - 1, 1.0])
    assert normalise(np.full(4, 0.3)).tolist() == [0, 0, 0, 0]


@given(
    arrays(np.int64, st.tuples(st.integers(1, 8), st.integers(1, 10)), elements=st.integers(0, 3))
)
@settings(max_examples=80, deadline=None)
def test_rectangles_cover_exactly_the_nonzero_ctus(delta: np.ndarray) -> None:
    rows, cols = delta.shape
    width, height = cols * 64 - 10, rows * 64 - 30  # frames need not be whole CTUs
    painted = np.zeros((height, width), dtype=np.int64)
    for r in rectangles(delta, width, height):
        assert r.w > 0 and r.h > 0 and 0 < r.qoffset <= 25 / 51
        assert (painted[r.y : r.y + r.h, r.x : r.x + r.w] == 0).all(), "rectangles overlap"
        painted[r.y : r.y + r.h, r.x : r.x + r.w] = r.delta
    expected = np.kron(delta, np.ones((64, 64), dtype=np.int64))[:height, :width]
    assert (painted == expected).all()


def test_merging_keeps_the_graph_small() -> None:
    delta = np.full((12, 20), 25)
    delta[3:7, 5:12] = 0
    rects = rectangles(delta, 1280, 720)
    assert len(rects) <= 4
    assert summary(delta) == (delta.mean(), (delta == 25).mean())


class _Counting:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, rgb: np.ndarray, index: int) -> np.ndarray:
        self.calls.append(index)
        return np.array([[1.0, -1.0]])


def test_inline_maps_every_n_frames() -> None:
    scorer = _Counting()
    maps = MapUpdater(scorer, RoiSpec(score_every=3, scoring="inline"), 128, 64)
    ages = [maps.update(np.zeros((64, 128, 3), "uint8"), i)[1] for i in range(7)]
    assert scorer.calls == [0, 3, 6] and ages == [0, 1, 2, 0, 1, 2, 0]
    assert [r.qoffset for r in maps.rects] == [25 / 51]  # the right CTU is irrelevant
    assert not maps.threaded and runs_in_thread(RoiSpec(scoring="thread"), scorer)
