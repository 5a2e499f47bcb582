"""Per-second time series of a session: target vs achieved bitrate, latency, loss events.

Built from the per-frame table alone (frames binned by when their first packet left the
sender), so it can be recomputed from any cell; the session also writes it as timeseries.csv.
"""

from __future__ import annotations

import json
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
    "loss_pct": "originals lost on the first try / originals sent, in the bin (measured)",
    "capacity_mbps": "the link's rate in the bin (from its trace or schedule; cell_series only)",
    "sched_delay_ms": "the schedule's one-way delay at the bin's start (cell_series only)",
    "sched_loss_pct": "the schedule's loss at the bin's start (cell_series only)",
    "estimate_mbps": "the sender stack's own estimate of the available bitrate (its record's rates: Chromium's availableOutgoingBitrate; cell_series only)",
}
FROM_LINK = (
    "capacity_mbps",
    "sched_delay_ms",
    "sched_loss_pct",
    "estimate_mbps",
)  # cell_series only


def per_second(frames: pd.DataFrame, bin_s: float = 1.0) -> pd.DataFrame:
    sent = frames[frames.status != "not_sent"].copy()
    if sent.empty:
        return pd.DataFrame(columns=[c for c in COLUMNS if c not in FROM_LINK])
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
        "loss_pct": (100 * g.packets_lost_first_try.sum() / g.packets.sum().clip(lower=1)).to_numpy(),
    })  # fmt: skip
    return out[[c for c in COLUMNS if c not in FROM_LINK]]


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


def media_log(cell: Path) -> Path:
    """The link log of the direction that carried the media (cell.json's `path`)."""
    try:
        path = json.loads((cell / "cell.json").read_text()).get("path") or {}
    except (OSError, ValueError):
        path = {}
    if path:
        return cell / f"link-{path['link']}-{path['direction']}.log"
    found = sorted(cell.glob("link-*-uplink.log"))
    return found[0] if found else cell / "link-path-uplink.log"


def cell_series(cell: Path, bin_s: float = 1.0) -> pd.DataFrame:
    """per_second of a cell folder, plus capacity_mbps where the sender's link follows a trace
    (aligned with the link emulator's start time from the link log's header)."""
    frames = pd.read_parquet(cell / "frames.parquet")
    ts = per_second(frames, bin_s)
    for col in FROM_LINK:
        ts[col] = np.nan
    logs = [media_log(cell)]
    sent = frames.sent_first_ns.dropna()
    if logs[0].exists() and len(ts) and len(sent):
        header = read_header(logs[0])
        spec = header.get("spec") or {}
        trace_path = spec.get("trace")
        start = header.get("start_mono_ns")
        offset_s = (float(sent.min()) - start) / 1e9 if start else 0.0
        if spec.get("schedule") and start:
            from testbed.config import parse_link_spec

            schedule = parse_link_spec(spec, str(logs[0]), "spec", Path("/")).schedule
            assert schedule is not None
            segs = [schedule.at((offset_s + t) * 1e9) for t in ts.t_s]
            ts["capacity_mbps"] = [np.nan if g.rate_mbps is None else g.rate_mbps for g in segs]
            ts["sched_delay_ms"] = [g.delay_ms for g in segs]
            ts["sched_loss_pct"] = [g.loss_pct for g in segs]
        elif trace_path and start and Path(trace_path).exists():
            cap = capacity_per_second(
                load_trace(trace_path), offset_s, int(ts.t_s.max() / bin_s) + 1, bin_s
            )
            ts["capacity_mbps"] = cap[(ts.t_s / bin_s).astype(int).to_numpy()]
        elif spec.get("rate_mbps"):
            ts["capacity_mbps"] = float(spec["rate_mbps"])
        if not spec.get("schedule"):
            ts["sched_delay_ms"] = float(spec.get("delay_ms") or 0.0)
            ts["sched_loss_pct"] = float(spec.get("loss_pct") or 0.0)
    if len(ts) and len(sent):
        _add_cross_traffic(ts, cell, float(sent.min()), bin_s)
        ts["estimate_mbps"] = _estimates(cell, float(sent.min()), ts.t_s, bin_s)
    return ts


def _estimates(cell: Path, first_sent_ns: float, t_s: pd.Series, bin_s: float) -> np.ndarray:
    """The last estimate the sender stack reported in each bin (NaN where it reports none)."""
    path = cell / "sender" / "rates.parquet"
    out = np.full(len(t_s), np.nan)
    if not path.exists():
        return out
    rates = pd.read_parquet(path).dropna(subset=["available_bps"])
    bins = ((rates.t_ns - first_sent_ns) / 1e9 // bin_s).astype("int64")
    last = rates.available_bps.groupby(bins).last() / 1e6
    index = (t_s / bin_s).round().astype("int64")
    result: np.ndarray = index.map(last).to_numpy(dtype="float64")
    return result


def _add_cross_traffic(ts: pd.DataFrame, cell: Path, first_sent_ns: float, bin_s: float) -> None:
    """cross_<name>_mbps per bin: each flow's receiver-side throughput (its iperf3 intervals),
    placed from when the flow was started relative to the first video frame."""
    import json

    from testbed.net.traffic import server_intervals

    meta = cell / "cell.json"
    flows = json.loads(meta.read_text()).get("cross_traffic") or {} if meta.exists() else {}
    for name, f in flows.items():
        shift_s = (f["started_mono_ns"] + f["start_s"] * 1e9 - first_sent_ns) / 1e9
        col = np.zeros(len(ts))
        for a, b, mbps in server_intervals(cell / f["file"]):
            for i, t in enumerate(ts.t_s):
                overlap = min(b + shift_s, t + bin_s) - max(a + shift_s, t)
                if overlap > 0:
                    col[i] += mbps * overlap
        ts[f"cross_{name}_mbps"] = col / bin_s
