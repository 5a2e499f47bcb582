"""Per-second series from a hand-made frame table, and trace capacity per second."""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.config.traces import Trace, piecewise_trace
from testbed.rtc.timeseries import capacity_per_second, per_second


def test_per_second_bins_by_send_time() -> None:
    n = 60  # two seconds at 30 fps; the second second at half the bitrate
    frames = pd.DataFrame({
        "sent_first_ns": [int(i * 1e9 / 30) for i in range(n)],
        "status": ["complete"] * (n - 1) + ["lost"],
        "latency_ns": pd.array([40_000_000] * (n - 1) + [None], dtype="Int64"),
        "target_bitrate_bps": [4e6] * 30 + [2e6] * 30,
        "size_bytes": [16667] * 30 + [8333] * 30,
        "wire_bytes": [17000] * 30 + [8500] * 30,
        "fec_bytes": [1000] * n, "rtx_bytes": [0] * n,
        "packets_lost_first_try": [0] * 50 + [1] * 10, "packets": [10] * n,
    })  # fmt: skip
    ts = per_second(frames)
    assert ts.t_s.tolist() == [0.0, 1.0]
    assert ts.target_mbps.tolist() == [4.0, 2.0]
    assert np.allclose(ts.achieved_mbps, [4.0, 2.0], rtol=1e-3)
    assert np.allclose(ts.wire_mbps, [(17000 + 1000) * 30 * 8 / 1e6, (8500 + 1000) * 30 * 8 / 1e6])
    assert ts.frames_lost.tolist() == [0, 1] and ts.frames_hit.tolist() == [0, 10]
    assert ts.loss_pct.tolist() == [0.0, 100 * 10 / 300]


def test_capacity_follows_the_trace_and_loops() -> None:
    trace = Trace("t", tuple(piecewise_trace([(2, 10), (2, 3)])))
    cap = capacity_per_second(trace, 0.0, 6)
    assert np.allclose(cap, [10, 10, 3, 3, 10, 10], rtol=0.01)
    shifted = capacity_per_second(trace, 1.5, 2)
    assert np.allclose(shifted, [6.5, 3], rtol=0.02)
