"""Scorers for the tests, importable by dotted path from the sender process."""

from __future__ import annotations

import time

import numpy as np

from testbed.roi.scorers import OracleScorer


class SlowOracle(OracleScorer):
    """The oracle's map, but 0.3 s to think (nine frame intervals at 30 fps): a CLIP stand-in."""

    background = True

    def score(self, rgb: np.ndarray, index: int) -> np.ndarray:
        time.sleep(0.3)
        return super().score(rgb, index)
