"""How several sessions of a cell shared their bottleneck: per-second rates, utilisation,
Jain's fairness index, convergence after each join and leave. Pure (tables in, numbers out).

Definitions (docs/sessions.md):
- a flow's rate in a second: the bytes its sender put on the wire for the frames it sent in
  that second (media, retransmissions and FEC), from its own capture's frame table;
- utilisation: the flows' summed rate over the bottleneck's capacity (the narrowest hop of the
  first session's path; none for a trace or schedule), per second;
- Jain's index over a window: (sum x)^2 / (n * sum x^2) of the flows' mean rates in the last
  `window_s` seconds that all of them were streaming (1: equal shares, 1/n: one took all);
- events are what happened: a session joins at its first frame sent and leaves after its last
  (seconds since the cell's first frame), not at the start_s asked for (a browser takes seconds);
  within 3 s of the cell's first frame (last frame) a start (end) is the cell's, not an event;
- convergence after an event (a session joins or leaves): the time from the event until every
  flow streaming then is, and stays until the next event or the end, within `band` (20%) of
  the fair share (their summed rate / their number), its rate averaged over `smooth_s` (2 s);
  None when that never holds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

JAIN_WINDOW_S = 30.0
BAND = 0.2
SMOOTH_S = 2
EVENT_GAP_S = 3.0  # sessions starting (ending) this close to the first start (last end) start
# (end) with the cell: no join (leave) event of their own


def flow_rates(frames: pd.DataFrame, origin_ns: int, bin_s: float = 1.0) -> pd.DataFrame:
    """Mbps per bin of bin_s (rows: bin index since origin) per session (columns)."""
    sent = frames[frames.sent_first_ns.notna()].copy()
    wire = sent.wire_bytes.fillna(0) + sent.rtx_bytes.fillna(0) + sent.fec_bytes.fillna(0)
    step_ns = round(bin_s * 1_000_000_000)
    sent["second"] = ((sent.sent_first_ns.astype("int64") - origin_ns) // step_ns).astype(int)
    sent["bits"] = wire.astype("float64") * 8
    table = sent.pivot_table(index="second", columns="session", values="bits", aggfunc="sum")
    table = table.reindex(range(0, int(table.index.max()) + 1)) if len(table) else table
    return table.fillna(0.0) / bin_s / 1e6


def jain(values: list[float]) -> float | None:
    x = np.asarray(values, dtype="float64")
    if not len(x) or not np.any(x):
        return None
    return float(x.sum() ** 2 / (len(x) * (x**2).sum()))


def active_spans(frames: pd.DataFrame, origin_ns: int) -> dict[str, tuple[float, float]]:
    """Each session's streaming span, seconds since the cell's first frame: from its first
    frame sent to just after its last (what happened, not what was asked: a browser takes
    seconds to start, so a session asked to start at 20 s sends from ~24 s)."""
    sent = frames[frames.sent_first_ns.notna()]
    g = sent.groupby("session").sent_first_ns
    first, last = (g.min() - origin_ns) / 1e9, (g.max() - origin_ns) / 1e9
    return {str(n): (float(first[n]), float(last[n]) + 1.0) for n in first.index}


def convergence(rates: pd.DataFrame, spans: dict[str, tuple[float, float]],
                band: float = BAND, smooth_s: int = SMOOTH_S) -> list[dict[str, Any]]:  # fmt: skip
    """After each join (a later session's start) and leave (an early stop), how long until
    the active flows share fairly (see the module's definition)."""
    last = max(end for _, end in spans.values())
    events = sorted({(s, f"join {n}") for n, (s, _) in spans.items() if s > EVENT_GAP_S}
                    | {(e, f"leave {n}") for n, (_, e) in spans.items()
                       if e < last - EVENT_GAP_S})  # fmt: skip
    bounds = [t for t, _ in events] + [max(end for _, end in spans.values())]
    smooth = rates.rolling(smooth_s, min_periods=smooth_s).mean()
    out = []
    for k, (t, what) in enumerate(events):
        end = bounds[k + 1]
        live = [n for n, (a, b) in spans.items() if a <= t + 0.5 and b >= end - 0.5]
        seconds = [s for s in smooth.index if t + smooth_s - 1 <= s < end - 1]
        fair_ok = []
        for s in seconds:
            row = smooth.loc[s, live] if live else pd.Series(dtype="float64")
            share = row.sum() / max(len(live), 1)
            fair_ok.append(
                bool(len(live) and share > 0 and ((row - share).abs() <= band * share).all())
            )
        after = None
        for i in range(len(seconds)):
            if all(fair_ok[i:]):
                after = float(seconds[i] + 1 - t)
                break
        out.append({"event": what, "at_s": t, "flows": live, "converged_after_s": after})
    return out


def sharing(frames: pd.DataFrame, sessions: dict[str, dict[str, Any]],
            capacity_mbps: float | None, window_s: float = JAIN_WINDOW_S) -> dict[str, Any]:  # fmt: skip
    """The cell's numbers of how its sessions shared (cell.json's `sharing`)."""
    origin = int(frames.sent_first_ns.dropna().min())
    rates = flow_rates(frames, origin)
    spans = active_spans(frames, origin)
    all_on = (max(a for a, _ in spans.values()), min(b for _, b in spans.values()))
    lo = max(all_on[0], all_on[1] - window_s)
    window = [s for s in rates.index if lo <= s and s + 1 <= all_on[1]]
    # every session named counts (one that sent nothing, as 0)
    means = {
        n: float(rates.loc[window, n].mean()) if window and n in rates else 0.0 for n in sessions
    }
    total = rates.sum(axis=1)
    return {
        "window_s": [lo, all_on[1]] if window else None,
        "jain": jain(list(means.values())) if window else None,
        "mean_mbps_in_window": means,
        "capacity_mbps": capacity_mbps,
        "utilisation": float(total.mean() / capacity_mbps) if capacity_mbps else None,
        "convergence": convergence(rates, spans),
        "definitions": "docs/sessions.md",
    }


def sharing_series(frames: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """timeseries.csv of a cell with sessions (its frames, with their session column): per
    second each flow's Mbps, their total, the capacity and the utilisation."""
    origin = int(frames.sent_first_ns.dropna().min())
    rates = flow_rates(frames, origin)
    out = rates.rename(columns=lambda n: f"{n}_mbps")
    out["total_mbps"] = rates.sum(axis=1)
    cap = (meta.get("sharing") or {}).get("capacity_mbps")
    out["capacity_mbps"] = cap if cap else np.nan
    out["utilisation"] = out.total_mbps / cap if cap else np.nan
    return out.reset_index().rename(columns={"index": "second"})


def multi_cell(
    common: dict[str, Any], collected: list[Any], frames: pd.DataFrame
) -> dict[str, Any]:
    """cell.json of a cell with sessions: the first session's keys where one is expected (the
    report reads them), every session's own under `sessions`, and `sharing` (from frames: every
    session's, with their session column)."""
    sessions: dict[str, dict[str, Any]] = {}
    for sess, _frames, summary, fields in collected:
        sessions[sess.name] = {**fields, "summary": summary, "start_s": sess.start_s,
                               "folder": f"sessions/{sess.name}"}  # fmt: skip
    first = collected[0][3]
    link = first["path"]
    spec = common["topology"]["links"][link["link"]][link["direction"]]
    capacity = spec.get("rate_mbps") if not spec.get("trace") and not spec.get("schedule") else None
    summary = {name: s["summary"] for name, s in sessions.items()}
    return {**common, "path": first["path"], "stream": first["stream"], "stack": first["stack"],
            "summary": {"sessions": summary}, "sessions": sessions,
            "sharing": json.loads(json.dumps(sharing(frames, sessions, capacity)))}  # fmt: skip
