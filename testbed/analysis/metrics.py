"""Per-cell and per-configuration statistics, with bootstrap intervals over repetitions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from testbed.models.latency import LinkModelInput, latency_mean_ms, latency_quantile_ms

STATS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda v: float(np.mean(v)),
    "p50": lambda v: float(np.percentile(v, 50)),
    "p95": lambda v: float(np.percentile(v, 95)),
    "p99": lambda v: float(np.percentile(v, 99)),
}


VARIANTS = ("stack", "abr", "fec", "nack", "roi")  # what a sweep compares besides bitrate, loss
DEFAULTS = {"stack": "aiortc", "abr": "fixed", "fec": "none", "nack": "aiortc", "roi": "none"}
# grid keys that load_cells turns into the named columns above (or that are no configuration)
MAPPED_PARAMS = {"stream.bitrate_mbps", "uplink.loss_pct", "stream.fec", "stream.abr",
                 "stream.nack", "stream.roi.enabled", "repetition", "stream.stack",
                 "stream.sender_stack", "stream.receiver_stack"}  # fmt: skip


def other_params(cells: pd.DataFrame) -> list[str]:
    """Any other grid key that takes more than one value (stream.late_packets, uplink.delay_ms,
    ...): a configuration of its own, never pooled with the others as if a repetition."""
    return [c for c in cells.columns
            if "." in c and c not in MAPPED_PARAMS and cells[c].nunique(dropna=False) > 1]  # fmt: skip


def pooled_psnr_db(per_frame_db: pd.Series) -> float:
    """PSNR of the mean squared error over frames (frames with errors weigh what they cost)."""
    v = per_frame_db.dropna().astype("float64").to_numpy()
    if not len(v):
        return float("nan")
    mse = float(np.mean(255.0**2 / 10 ** (v / 10)))
    return float(10 * np.log10(255.0**2 / mse))


BUDGET_MS = 68.0
AUDIO = ("audio_p50_ms", "audio_p99_ms", "audio_lost_pct")  # cells that sent audio


def _col(f: pd.DataFrame, name: str) -> pd.Series:
    """A column that older results lack counts as zeros."""
    return f[name] if name in f else pd.Series(0, index=f.index)


def cell_table(frames: pd.DataFrame, budget_ms: float = BUDGET_MS) -> pd.DataFrame:
    """One row per cell: achieved bitrate, frames, completion, latency statistics (ms), the
    share of frames within budget_ms (a lost frame is not), and repair overheads: FEC and RTX
    bytes as a percentage of the media bytes on the wire."""
    rows = []
    for cell_id, f in frames.groupby("cell_id", sort=False):
        sent = f[f.status != "not_sent"]
        done = sent[sent.status == "complete"]
        lat = done.latency_ns.astype("float64").to_numpy() / 1e6
        span = (
            (sent.sent_first_ns.max() - sent.sent_first_ns.min()) / 1e9 if len(sent) > 1 else np.nan
        )
        first = f.iloc[0]
        row = {
            "cell_id": cell_id, "bitrate_mbps": first.bitrate_mbps, "loss_pct": first.loss_pct,
            "repetition": first.get("repetition", 0), "rate_mbps": first.rate_mbps,
            "delay_ms": first.delay_ms, "reverse_delay_ms": first.reverse_delay_ms, "fps": first.fps,
            "achieved_mbps": sent.size_bytes.sum() * 8 / span / 1e6 if span else np.nan,
            "frames": len(sent), "completion": len(done) / len(sent) if len(sent) else np.nan,
            "retransmissions": int(sent.retransmissions.sum()),
            "frames_hit": float((sent.packets_lost_first_try > 0).mean()) if len(sent) else np.nan,
            "within_budget": float((done.latency_ns <= budget_ms * 1e6).sum() / len(sent)) if len(sent) else np.nan,
            "target_mbps": float(_col(sent, "target_bitrate_bps").mean() / 1e6),
            "fec_overhead_pct": 100 * _col(sent, "fec_bytes").sum() / max(1, sent.wire_bytes.sum()),
            "rtx_overhead_pct": 100 * _col(sent, "rtx_bytes").sum() / max(1, sent.wire_bytes.sum()),
            "by_fec": float((_col(sent, "completed_by") == "fec").mean()) if len(sent) else np.nan,
            "by_rtx": float((_col(sent, "completed_by") == "rtx").mean()) if len(sent) else np.nan,
        }  # fmt: skip
        for v in VARIANTS:
            row[v] = first.get(v, DEFAULTS[v])
        for k in f.columns:  # the grid keys (load_cells); config_table groups by the varying ones
            if "." in k:
                row[k] = first[k]
        for k in AUDIO:
            if k in f:
                row[k] = first[k]
        if "psnr_roi_db" in sent:
            row["psnr_roi_db"] = pooled_psnr_db(sent.psnr_roi_db)
            row["psnr_bg_db"] = pooled_psnr_db(sent.psnr_bg_db)
            row["decoded"] = float(sent.psnr_db.notna().mean())
            row["scorer_ms"] = float(sent.scorer_ms.mean())
            row["encode_ms"] = float(sent.encode_ms.mean())
        for name, fn in STATS.items():
            row[f"latency_{name}_ms"] = float(fn(lat)) if len(lat) else np.nan
        if "latency_dropaware_ns" in sent:  # results from before it have no such column
            waits = sent.latency_dropaware_ns.dropna().astype("float64").to_numpy() / 1e6
            for p in (50, 95):
                row[f"dropaware_p{p}_ms"] = float(np.percentile(waits, p)) if len(waits) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of values (repetitions); a point when there is one."""
    values = values[~np.isnan(values)]
    if len(values) <= 1:
        v = float(values[0]) if len(values) else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def config_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, bitrate, loss): means over repetitions, bootstrap CIs, the model
    (NACK only, constant link: NaN on a trace). Variants: abr, fec, nack where present."""
    rows = []
    keys = [v for v in VARIANTS if v in cells] + other_params(cells) + ["bitrate_mbps", "loss_pct"]
    for values, g in cells.groupby(keys, dropna=False):  # a grid's null is a value too
        first = g.iloc[0]
        bitrate, loss = first.bitrate_mbps, first.loss_pct
        row = dict(zip(keys, values, strict=True))
        row.update({"repetitions": len(g), "rate_mbps": first.rate_mbps,
               "achieved_mbps": g.achieved_mbps.mean(), "frames": int(g.frames.sum()),
               "completion": g.completion.mean(), "retransmissions": int(g.retransmissions.sum()),
               "frames_hit": g.frames_hit.mean()})  # fmt: skip
        for extra in (
            "within_budget",
            "target_mbps",
            "fec_overhead_pct",
            "rtx_overhead_pct",
            "by_fec",
            "by_rtx",
            "psnr_roi_db",
            "psnr_bg_db",
            "decoded",
            "scorer_ms",
            "encode_ms",
            *AUDIO,
            "dropaware_p50_ms",
            "dropaware_p95_ms",
        ):
            if extra in g:
                row[extra] = g[extra].mean()
        for name in STATS:
            vals = g[f"latency_{name}_ms"].to_numpy(dtype=float)
            row[f"latency_{name}_ms"] = (
                float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
            )
            row[f"latency_{name}_lo"], row[f"latency_{name}_hi"] = bootstrap_ci(vals)
        if np.isfinite(first.rate_mbps):
            link = LinkModelInput(first.rate_mbps, first.delay_ms, first.reverse_delay_ms, loss)
            row["model_mean_ms"] = latency_mean_ms(link, bitrate, first.fps)
            row["model_p50_ms"] = latency_quantile_ms(link, bitrate, first.fps, 0.50)
            row["model_p95_ms"] = latency_quantile_ms(link, bitrate, first.fps, 0.95)
        else:
            row["model_mean_ms"] = row["model_p50_ms"] = row["model_p95_ms"] = np.nan
        rows.append(row)
    order = [
        "loss_pct",
        *[k for k in keys if k not in ("loss_pct", "bitrate_mbps")],
        "bitrate_mbps",
    ]
    return pd.DataFrame(rows).sort_values(order).reset_index(drop=True)


def yellow_region(
    configs: pd.DataFrame, metric: str, budget_ms: float, max_loss_pct: float | None = None
) -> tuple[float, float, float] | None:
    """(lo, hi, loss): achieved bitrates whose latency stays within the budget at every loss
    rate up to `loss` (default: the highest loss rate for which any bitrate can).

    From the lowest bitrate up, the region ends at the first bitrate that exceeds the budget at
    some loss rate <= loss. None if no bitrate meets the budget even without loss.
    """
    col = f"latency_{metric}_ms"
    losses = sorted(configs.loss_pct.unique())
    if max_loss_pct is not None:
        candidates = [x for x in losses if x <= max_loss_pct]
    else:
        candidates = [x for x in losses if (configs[configs.loss_pct == x][col] <= budget_ms).any()]
    for loss in sorted(candidates, reverse=True):
        sub = configs[configs.loss_pct <= loss]
        ok_rates = []
        for _bitrate, g in sub.groupby("bitrate_mbps", sort=True):
            if (g[col] <= budget_ms).all():
                ok_rates.append(float(g.achieved_mbps.mean()))
            else:
                break
        if ok_rates:
            return min(ok_rates), max(ok_rates), float(loss)
    return None


def side_by_side(
    configs: pd.DataFrame, by: str, metric: str = "p95", budget_ms: float = BUDGET_MS
) -> str:
    """Per loss rate, one row per variant, one column per bitrate: the latency metric (ms), the
    repair overhead (FEC + RTX bytes, % of media) and, marked *, the cells within the budget."""
    col = f"latency_{metric}_ms"
    lines = []
    order = list(dict.fromkeys(configs[by]))
    for loss, g in configs.groupby("loss_pct"):
        lines.append(
            f"loss {loss:g}%: {metric} latency ms (repair overhead % of media bytes), * = within {budget_ms:g} ms"
        )
        bitrates = sorted(g.bitrate_mbps.unique())
        lines.append(f"{by:<12}" + "".join(f"{b:>16g} Mbps" for b in bitrates))
        for variant in order:
            row = f"{variant!s:<12}"
            for b in bitrates:
                c = g[(g[by] == variant) & (g.bitrate_mbps == b)]
                if c.empty:
                    row += f"{'-':>21}"
                    continue
                r = c.iloc[0]
                over = r.get("fec_overhead_pct", 0) + r.get("rtx_overhead_pct", 0)
                mark = "*" if r[col] <= budget_ms else " "
                row += f"{r[col]:>11.1f}{mark}({over:>5.1f}%) "
            lines.append(row)
        lines.append("")
    return "\n".join(lines)
