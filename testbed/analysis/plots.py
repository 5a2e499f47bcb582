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
