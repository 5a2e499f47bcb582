"""Per-second time series of a session: target vs achieved bitrate, latency, loss events.

Built from the per-frame table alone (frames binned by when their first packet left the
sender), so it can be recomputed from any cell; the session also writes it as timeseries.csv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from testbed.config.traces import OPPORTUNITY_BYTES, Trace, load_trace
from testbed.shaping.linklog import read_header

COLUMNS = {
    "t_s": "seconds since the first frame was sent (bin start)",
    "target_mbps": "mean bitrate the controller asked for, over the frames of the bin",
    "achieved_mbps": "media payload sent in the bin",
    "wire_mbps": "IP bytes sent in the bin: media + RTX + FEC",
    "frames": "frames sent in the bin",
    "latency_p50_ms": "median frame latency of the bin's frames",
    "latency_p95_ms": "95th percentile",
    "frames_lost": "frames never completed",
    "frames_hit": "frames with at least one packet lost on the first try",
    "packets_lost_first_try": "originals lost on the first try",
    "capacity_mbps": "the link's rate in the bin (from its trace; cell_series only)",
}


def per_second(frames: pd.DataFrame, bin_s: float = 1.0) -> pd.DataFrame:
    sent = frames[frames.status != "not_sent"].copy()
    if sent.empty:
        return pd.DataFrame(columns=[c for c in COLUMNS if c != "capacity_mbps"])
    t0 = sent.sent_first_ns.min()
    sent["bin"] = ((sent.sent_first_ns - t0) / 1e9 // bin_s).astype("int64")
    lat = sent.latency_ns.astype("float64") / 1e6
    extra = sum(sent[c] for c in ("rtx_bytes", "fec_bytes") if c in sent)
    sent["wire_all"] = sent.wire_bytes + extra
    g = sent.assign(lat=lat).groupby("bin")
    target = (
        g.target_bitrate_bps.mean() / 1e6 if "target_bitrate_bps" in sent else g.size() * np.nan
    )
    out = pd.DataFrame({
        "t_s": g.size().index * bin_s,
        "target_mbps": target.to_numpy(),
        "achieved_mbps": (g.size_bytes.sum() * 8 / bin_s / 1e6).to_numpy(),
        "wire_mbps": (g.wire_all.sum() * 8 / bin_s / 1e6).to_numpy(),
        "frames": g.size().to_numpy(),
        "latency_p50_ms": g.lat.quantile(0.5).to_numpy(),
        "latency_p95_ms": g.lat.quantile(0.95).to_numpy(),
        "frames_lost": g.status.apply(lambda s: int((s == "lost").sum())).to_numpy(),
        "frames_hit": g.packets_lost_first_try.apply(lambda s: int((s > 0).sum())).to_numpy(),
        "packets_lost_first_try": g.packets_lost_first_try.sum().to_numpy(),
    })  # fmt: skip
    return out[[c for c in COLUMNS if c != "capacity_mbps"]]


def capacity_per_second(trace: Trace, offset_s: float, bins: int, bin_s: float = 1.0) -> np.ndarray:
    """Link capacity (Mbps) of a Mahimahi trace, looped, in bins starting offset_s into it."""
    opp = np.asarray(trace.opportunities_ms, dtype="float64")
    period = float(trace.period_ms)
    edges = (offset_s + np.arange(bins + 1) * bin_s) * 1000

    def count_before(t_ms: np.ndarray) -> np.ndarray:
        loops, rest = np.divmod(t_ms, period)
        return loops * len(opp) + np.searchsorted(opp, rest, side="left")

    counts = np.diff(count_before(edges))
    return counts * OPPORTUNITY_BYTES * 8 / bin_s / 1e6


def cell_series(cell: Path, bin_s: float = 1.0) -> pd.DataFrame:
    """per_second of a cell folder, plus capacity_mbps where the sender's link follows a trace
    (aligned with the link emulator's start time from the link log's header)."""
    frames = pd.read_parquet(cell / "frames.parquet")
    ts = per_second(frames, bin_s)
    ts["capacity_mbps"] = np.nan
    log = cell / "link-path-uplink.log"
    logs = [log] if log.exists() else sorted(cell.glob("link-*-uplink.log"))
    sent = frames.sent_first_ns.dropna()
    if logs and len(ts) and len(sent):
        header = read_header(logs[0])
        trace_path = (header.get("spec") or {}).get("trace")
        start = header.get("start_mono_ns")
        if trace_path and start and Path(trace_path).exists():
            offset_s = (float(sent.min()) - start) / 1e9
            cap = capacity_per_second(
                load_trace(trace_path), offset_s, int(ts.t_s.max() / bin_s) + 1, bin_s
            )
            ts["capacity_mbps"] = cap[(ts.t_s / bin_s).astype(int).to_numpy()]
        elif (header.get("spec") or {}).get("rate_mbps"):
            ts["capacity_mbps"] = float(header["spec"]["rate_mbps"])
    return ts
