"""Figure 3: frame transmission latency vs achieved bitrate, one line per loss rate.

A function of DataFrames only. Grey: bitrates near or above the link bandwidth (what a
traditional ABR picks). Yellow: bitrates whose latency (p95 by default) stays within the AI's
budget at every measured loss rate (computed from the data). Dashed: the analytic model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from testbed.analysis.metrics import yellow_region

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def fig3(
    configs: pd.DataFrame,
    metric: str = "p95",
    budget_ms: float = 68.0,
    log_x: bool = True,
    grey_from: float = 0.8,
    show_model: bool = True,
    max_loss_pct: float | None = None,
) -> Any:
    """Draw the figure; `configs` is analysis.metrics.config_table output. Returns the Figure."""
    plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                         "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
                         "pdf.fonttype": 42})  # fmt: skip
    fig, ax = plt.subplots(figsize=(3.4, 2.7), constrained_layout=True)  # one column
    col = f"latency_{metric}_ms"
    link_rate = (
        float(configs.get("rate_mbps", pd.Series([np.nan])).iloc[0])
        if "rate_mbps" in configs
        else None
    )
    for i, (loss, g) in enumerate(configs.groupby("loss_pct")):
        g = g.sort_values("achieved_mbps")
        color, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
        lo, hi = g[f"latency_{metric}_lo"], g[f"latency_{metric}_hi"]
        ax.errorbar(g.achieved_mbps, g[col], yerr=[g[col] - lo, hi - g[col]], color=color,
                    marker=marker, markersize=3, linewidth=1, capsize=1.5, label=f"{loss:g}% loss")  # fmt: skip
        model_col = f"model_{metric}_ms"
        if show_model and model_col in g:
            m = g[np.isfinite(g[model_col])]
            ax.plot(m.achieved_mbps, m[model_col], linestyle="--", linewidth=0.8, color=color)
    ax.axhline(budget_ms, color="0.3", linewidth=0.7, linestyle=":")
    ax.annotate(f"budget {budget_ms:g} ms", xy=(0.01, budget_ms), xycoords=("axes fraction", "data"),
                xytext=(0, 2), textcoords="offset points", fontsize=6, color="0.3")  # fmt: skip
    xmin, xmax = configs.achieved_mbps.min() * 0.8, configs.achieved_mbps.max() * 1.25
    rate = link_rate if link_rate and np.isfinite(link_rate) else None
    if rate:
        ax.axvspan(grey_from * rate, xmax, color="0.85", zorder=0, linewidth=0)
        ax.annotate("≈ bandwidth", xy=(grey_from * rate, 0.03),
                    xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                    rotation=90, ha="left", va="bottom", fontsize=6, color="0.35")  # fmt: skip
    region = yellow_region(configs, metric, budget_ms, max_loss_pct)
    if region is not None:
        ax.axvspan(region[0] * 0.97, region[1] * 1.03, color="#F0E442", alpha=0.45, zorder=0,
                   linewidth=0)  # fmt: skip
        ax.annotate(f"{metric} within budget\nup to {region[2]:g}% loss", xy=(region[1] * 1.03, 0.97),
                    xycoords=("data", "axes fraction"), xytext=(2, 0), textcoords="offset points",
                    ha="left", va="top", fontsize=6, color="0.35")  # fmt: skip
    if log_x:
        ax.set_xscale("log")
    ax.set_xlim(xmin, xmax)
    # Above the bandwidth latency explodes (queues grow): keep the scale for what is below it.
    below = configs[col][configs.achieved_mbps < grey_from * rate] if rate else configs[col]
    top = max(float(np.nanmax(below)) * 1.15 if len(below) else 0.0, 2.5 * budget_ms)
    ax.set_ylim(0, top)
    off = float(np.nanmax(configs[col]))
    if off > top and rate:
        ax.annotate(f"off scale:\nup to {off:.0f} ms", xy=(grey_from * rate, 0.97),
                    xycoords=("data", "axes fraction"), xytext=(-3, 0), textcoords="offset points",
                    ha="right", va="top", fontsize=6, color="0.35")  # fmt: skip
    ax.set_xlabel("achieved video bitrate (Mbps)")
    ax.set_ylabel(f"frame transmission latency, {metric} (ms)")
    ax.grid(True, which="major", linewidth=0.3, color="0.8")
    handles, labels = ax.get_legend_handles_labels()
    if show_model:
        handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=0.8))
        labels.append("model")
    fig.legend(handles, labels, loc="outside upper center", frameon=False, ncol=4)
    return fig


def save(fig: Any, path: Path) -> list[Path]:
    """Vector PDF and PNG side by side (the suffix of path picks the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".pdf"), path.with_suffix(".png")]
    fig.savefig(out[0])
    fig.savefig(out[1], dpi=300)
    plt.close(fig)
    return out


def _plain_log_x(ax: Any) -> None:
    """Log x axis labelled 0.5, 1, 2, 4 (not 2 x 10^0)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32) if lo <= t <= hi])
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _style() -> None:
    plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                         "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
                         "pdf.fonttype": 42})  # fmt: skip


def timeseries(series: dict[str, pd.DataFrame], budget_ms: float = 68.0,
               controls: dict[str, pd.DataFrame] | None = None) -> Any:  # fmt: skip
    """Target vs achieved bitrate, p95 latency and loss events over time, one colour per
    session (label -> analysis.timeseries.per_second output); controls: a session's
    controller.parquet (its decisions and the stack's estimate it heard). Returns the Figure."""
    controls = controls or {}
    _style()
    fig, (ax_rate, ax_lat, ax_loss) = plt.subplots(
        3, 1, figsize=(6.8, 4.6), sharex=True, constrained_layout=True,
        gridspec_kw={"height_ratios": [2, 2, 1]},
    )  # fmt: skip
    for ts in list(series.values())[:1]:
        if "capacity_mbps" in ts and ts.capacity_mbps.notna().any():
            ax_rate.step(ts.t_s, ts.capacity_mbps, where="post", color="0.6", linewidth=2.5,
                         alpha=0.5, label="link capacity")  # fmt: skip
        if "sched_delay_ms" in ts and ts.sched_delay_ms.notna().any():
            ax_lat.step(ts.t_s, ts.sched_delay_ms.clip(lower=0.1), where="post", color="0.6",
                        linewidth=2, alpha=0.5)  # fmt: skip
    for i, ts in enumerate(series.values()):
        for col in (c for c in ts.columns if c.startswith("cross_") and c.endswith("_mbps")):
            ax_rate.plot(ts.t_s, ts[col], color=PALETTE[i % len(PALETTE)], linestyle=":",
                         linewidth=1.0, label=f"{col[6:-5]} (cross)" if i == 0 else None)  # fmt: skip
    for i, (label, ts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        ax_rate.step(ts.t_s, ts.target_mbps, where="post", color=c, linestyle="--", linewidth=0.9)
        ax_rate.plot(ts.t_s, ts.achieved_mbps, color=c, linewidth=1.1, label=label)
        if (ctl := controls.get(label)) is not None and not ctl.empty:
            ax_rate.step(ctl.t_s, ctl.target_bps / 1e6, where="post", color=c, linestyle="-.",
                         linewidth=0.7)  # fmt: skip
            est = ctl.dropna(subset=["estimate_bps"])
            ax_rate.plot(est.t_s, est.estimate_bps / 1e6, ".", color=c, markersize=1.5)
        ax_lat.plot(ts.t_s, ts.latency_p95_ms, color=c, linewidth=1.0)
        width = 0.8 / max(1, len(series))
        ax_loss.bar(ts.t_s + i * width, ts.frames_lost, width=width, color=c, alpha=0.9)
        ax_loss.bar(ts.t_s + i * width, ts.frames_hit, width=width, color=c, alpha=0.35)
    ax_rate.set_ylabel(
        "Mbps: achieved (solid),\ntarget (dashed)"
        + (",\ndecision (dash-dot),\nestimate (dots)" if controls else "")
    )
    ax_rate.legend(loc="lower left", bbox_to_anchor=(0, 1), frameon=False, ncol=len(series) + 1)
    ax_lat.axhline(budget_ms, color="0.3", linewidth=0.7, linestyle=":")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("p95 frame latency (ms);\nscheduled delay (grey)")
    ax_loss.set_ylabel("frames/s\nlost (dark), hit (light)")
    ax_loss.set_xlabel("time since the first frame (s)")
    for ax in (ax_rate, ax_lat, ax_loss):
        ax.grid(True, linewidth=0.3, alpha=0.5)
    return fig


def variants(configs: pd.DataFrame, by: str, metric: str = "p95", budget_ms: float = 68.0) -> Any:
    """One panel per loss rate: latency vs achieved bitrate, one line per value of `by`
    (fec, abr or nack); the repair overhead is printed at each point."""
    _style()
    losses = sorted(configs.loss_pct.unique())
    fig, axes = plt.subplots(1, len(losses), figsize=(1.9 * len(losses) + 0.6, 2.4), sharey=True,
                             constrained_layout=True, squeeze=False)  # fmt: skip
    col = f"latency_{metric}_ms"
    for ax, loss in zip(axes[0], losses, strict=True):
        sub = configs[configs.loss_pct == loss]
        for i, (value, g) in enumerate(sub.groupby(by, sort=False)):
            g = g.sort_values("achieved_mbps")
            ax.plot(g.achieved_mbps, g[col], color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)],
                    markersize=3, linewidth=1, label=str(value))  # fmt: skip
        ax.axhline(budget_ms, color="0.3", linewidth=0.7, linestyle=":")
        ax.set_title(f"{loss:g}% loss")
        _plain_log_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel("achieved bitrate (Mbps)")
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    axes[0][0].set_ylabel(f"{metric} frame latency (ms)")
    axes[0][-1].legend(frameon=False, loc="upper left", title=by)
    return fig


def roi_figure(configs: pd.DataFrame, metric: str = "p95", budget_ms: float = 68.0) -> Any:
    """Context-aware video: latency vs achieved bitrate, uniform vs ROI (colour) per loss rate
    (marker), and the relevant region's PSNR of the received frames (solid) and the
    background's (dashed, hollow) vs achieved bitrate, at the lowest loss rate."""
    _style()
    fig, (ax_lat, ax_q) = plt.subplots(1, 2, figsize=(6.8, 2.6), constrained_layout=True)
    col = f"latency_{metric}_ms"
    colours = {"uniform": PALETTE[0], "ROI": PALETTE[3]}
    for j, (loss, sub) in enumerate(configs.groupby("loss_pct")):
        for mode, g in sub.groupby("roi"):
            g = g.sort_values("achieved_mbps")
            c, m = colours.get(str(mode), "0.5"), MARKERS[j % len(MARKERS)]
            ax_lat.plot(g.achieved_mbps, g[col], color=c, marker=m, markersize=3, linewidth=1,
                        label=f"{mode}, {loss:g}% loss")  # fmt: skip
            if j == 0:
                ax_q.plot(g.achieved_mbps, g.psnr_roi_db, color=c, marker="o", markersize=3.5,
                          linewidth=1, label=f"{mode}: relevant region")  # fmt: skip
                ax_q.plot(g.achieved_mbps, g.psnr_bg_db, color=c, marker="o", markersize=3.5,
                          linewidth=0.8, linestyle="--", markerfacecolor="white",
                          label=f"{mode}: background")  # fmt: skip
    ax_lat.axhline(budget_ms, color="0.3", linewidth=0.7, linestyle=":")
    ax_lat.set_xlabel("achieved bitrate (Mbps)")
    ax_lat.set_ylabel(f"{metric} frame latency (ms)")
    _plain_log_x(ax_lat)
    ax_lat.legend(frameon=False, fontsize=6)
    ax_q.set_title(f"received frames, {configs.loss_pct.min():g}% loss")
    ax_q.set_xlabel("achieved bitrate (Mbps)")
    ax_q.set_ylabel("PSNR, luma (dB)")
    _plain_log_x(ax_q)
    ax_q.legend(frameon=False, fontsize=6)
    for ax in (ax_lat, ax_q):
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    return fig


def accuracy_figure(table: pd.DataFrame) -> Any:
    """The paper's Figure 9 from received video: accuracy vs achieved bitrate, uniform vs ROI,
    a panel per (scene, loss rate); bars are 95% Wilson intervals."""
    _style()
    panels = list(table.groupby(["video", "loss_pct"], dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 2.6),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    for ax, ((video, loss), g) in zip(axes[0], panels, strict=True):
        for i, (roi, line) in enumerate(g.groupby("roi")):
            line = line.sort_values("achieved_mbps")
            err = [line.accuracy - line.ci_lo, line.ci_hi - line.accuracy]
            ax.errorbar(line.achieved_mbps, line.accuracy, yerr=err, color=PALETTE[i % 8],
                        marker=MARKERS[i % 8], ms=3, lw=1, capsize=2, label=str(roi))  # fmt: skip
        ax.set_xscale("log")
        _plain_log_x(ax)
        ax.set_ylim(0, 1.05)
        ax.axhline(0.25, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{str(video).removeprefix('builtin:')}, {loss:g}% loss")
        ax.set_xlabel("achieved bitrate (Mbps)")
        ax.set_ylabel("task accuracy")
        ax.legend(frameon=False)
    return fig


def trace_figure(series: list[Any], title: str) -> Any:
    """A trace or schedule: capacity, delay and loss over time (segments as steps)."""
    _style()
    t = np.cumsum([0.0] + [s.duration_ms / 1000 for s in series])
    fig, axes = plt.subplots(3, 1, figsize=(6.8, 4.2), sharex=True, constrained_layout=True)
    for ax, values, label, colour in (
        (axes[0], [np.nan if s.rate_mbps is None else s.rate_mbps for s in series], "capacity (Mbps)", PALETTE[0]),
        (axes[1], [s.delay_ms for s in series], "one-way delay (ms)", PALETTE[1]),
        (axes[2], [s.loss_pct for s in series], "loss (%)", PALETTE[3]),
    ):  # fmt: skip
        ax.stairs(values, t, color=colour, lw=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    outages = [(a, b) for a, b, s in zip(t[:-1], t[1:], series, strict=True) if s.rate_mbps == 0]
    for a, b in outages:
        axes[0].axvspan(a, b, color="#D55E00", alpha=0.15, lw=0)
    axes[0].set_title(title)
    axes[-1].set_xlabel("time (s)")
    return fig
