from __future__ import annotations

import numpy as np

from testbed.bench.metrics import binomial_interval, bytes_per_window, fifo_floor_ns


def test_fifo_floor_queues_back_to_back_packets() -> None:
    tx = np.array([0, 0, 5_000_000], dtype=np.int64)
    size = np.array([1250, 1250, 1250], dtype=np.int64)
    floor = fifo_floor_ns(tx, size, 10, 30e6)
    assert list(floor) == [31e6, 32e6, 36e6]


def test_binomial_interval_contains_p() -> None:
    lo, hi = binomial_interval(0.05, 10_000)
    assert lo < 0.05 < hi and hi - lo < 0.01


def test_bytes_per_window() -> None:
    t = np.array([0, 50, 150, 250, 999], dtype=np.int64)
    s = np.ones(5, dtype=np.int64)
    assert list(bytes_per_window(t, s, 0, 300, 100)) == [2, 1, 1]
