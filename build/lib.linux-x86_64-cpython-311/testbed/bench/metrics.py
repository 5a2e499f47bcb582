"""Pure helpers for the benchmarks: references from physics, binomial intervals, windows."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def fifo_floor_ns(
    tx_ns: IntArray, ip_bytes: IntArray, rate_mbps: float, delay_ns: float
) -> FloatArray:
    """Earliest possible arrival of each packet through a FIFO link of this rate and delay.

    The physical floor: a packet starts serializing when it is sent or when the link frees up,
    takes bytes*8/rate, then propagates for delay. Packets must be in send order.
    """
    ser = ip_bytes.astype(np.float64) * 8_000.0 / rate_mbps
    out = np.empty(len(tx_ns), dtype=np.float64)
    busy = -math.inf
    for i in range(len(tx_ns)):
        busy = max(float(tx_ns[i]), busy) + ser[i]
        out[i] = busy + delay_ns
    return out


def binomial_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Where the loss fraction of n independent trials at rate p falls 95% of the time."""
    half = z * math.sqrt(p * (1 - p) / n) if n else 1.0
    return max(0.0, p - half), min(1.0, p + half)


def quantiles_ms(values_ns: FloatArray | IntArray) -> dict[str, float]:
    v = np.asarray(values_ns, dtype=np.float64) / 1e6
    if len(v) == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    return {
        "p50": float(np.percentile(v, 50)),
        "p99": float(np.percentile(v, 99)),
        "max": float(v.max()),
        "n": len(v),
    }


def bytes_per_window(
    t_ns: IntArray, sizes: IntArray, start_ns: int, end_ns: int, window_ns: int
) -> IntArray:
    """Sum of sizes per [start + k*window, start + (k+1)*window) for packets at t_ns."""
    n = (end_ns - start_ns) // window_ns
    idx = (t_ns - start_ns) // window_ns
    keep = (idx >= 0) & (idx < n)
    return np.bincount(idx[keep], weights=sizes[keep], minlength=n).astype(np.int64)
