"""An RMCAT cell drawn the way RFC 8867 describes its cases: each flow's rate against the
capacity available to it over time (the events marked), and delay over time (each flow's frame
delay, the bottleneck's queueing delay)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from testbed.analysis.plots import PALETTE, _style
from testbed.analysis.rmcatcell import CellData


def _frame_delay(data: CellData, name: str) -> pd.Series:
    frames = data.frames[data.frames.session == name]
    done = frames[frames.latency_ns.notna()]
    sec = ((done.sent_first_ns.astype("int64") - data.origin_ns) // 1_000_000_000).astype(int)
    return (done.latency_ns.astype("float64") / 1e6).groupby(sec).quantile(0.95)


def _queue(data: CellData, link: str, direction: str) -> pd.Series | None:
    log = data.link_log((link, direction))
    if log is None:
        return None
    done = log[log.event == "deliver"]
    start = log.attrs["header"].get("start_mono_ns", data.origin_ns)
    sec = ((done.arrival_ns + start - data.origin_ns) // 1_000_000_000).astype(int)
    held = done.sojourn_ns if "sojourn_ns" in done else done.link_exit_ns - done.arrival_ns
    s = (held.astype("float64") / 1e6).groupby(sec).quantile(0.95)
    return s[s.index >= 0]


def case_figure(data: CellData, title: str) -> Any:
    _style()
    fig, (ax_rate, ax_delay) = plt.subplots(2, 1, figsize=(6.4, 4.2), sharex=True)
    for neck, cap in data.capacity.items():
        ax_rate.step(cap.index, cap.to_numpy(), where="post", color="0.2", linewidth=1.0,
                     label=f"available ({neck[0]} {neck[1]})")  # fmt: skip
    for i, f in enumerate(data.flows):
        color = PALETTE[i % len(PALETTE)]
        if f.name in data.rates:
            ax_rate.plot(data.rates.index + 0.5, data.rates[f.name], color=color, linewidth=0.9,
                         label=f.name)  # fmt: skip
            fair = data.fair(f, data.rates.index)
            ax_rate.plot(data.rates.index + 0.5, fair, color=color, linewidth=0.6, linestyle=":")
        d = _frame_delay(data, f.name)
        ax_delay.plot(d.index + 0.5, d.to_numpy(), color=color, linewidth=0.8,
                      label=f"{f.name} frame p95")  # fmt: skip
    for j, neck in enumerate(sorted({f.bottleneck for f in data.flows})):
        q = _queue(data, *neck)
        if q is not None:
            ax_delay.plot(q.index + 0.5, q.to_numpy(), color="0.4", linewidth=0.7,
                          linestyle=["--", "-."][j % 2], label=f"queue {neck[0]} p95")  # fmt: skip
    for t, _, _ in data.events:
        for ax in (ax_rate, ax_delay):
            ax.axvline(t, color="0.7", linewidth=0.5)
    ax_rate.set_ylabel("rate (Mbps)")
    ax_rate.set_title(title)
    ax_rate.legend(fontsize=6, ncol=3, loc="upper right")
    ax_delay.set_ylabel("delay (ms), per second")
    ax_delay.set_xlabel("time since the first frame (s)")
    ax_delay.set_ylim(bottom=0)
    ax_delay.legend(fontsize=6, ncol=3, loc="upper right")
    ax_rate.set_xlim(0, max(data.end_s, 1.0))
    top = float(np.nanmax([c.max() for c in data.capacity.values()] or [1.0]))
    ax_rate.set_ylim(0, max(2.0, top * 1.25))  # a burst of retransmissions may leave the axes
    fig.tight_layout()
    return fig
