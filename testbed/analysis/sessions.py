"""Cells with several sessions (topology `sessions:`): a row per cell and session, read from
cell.json (each session's summary, its share of the bottleneck, the cell's fairness)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.analysis.load import _cells
from testbed.errors import TestbedError


def session_table(results: str | Path) -> pd.DataFrame:
    """cell_id, the grid values, session, its start, stack, achieved Mbps, its mean in the
    fairness window, frames, completion, latency p50/p95/p99, and the cell's Jain's index and
    convergence after each join/leave (the same on every row of the cell)."""
    rows: list[dict[str, Any]] = []
    for path in _cells(Path(results)):
        cell = json.loads((path / "cell.json").read_text())
        sessions = cell.get("sessions")
        if not sessions:
            continue
        sharing = cell.get("sharing") or {}
        params = {k: v for k, v in cell.get("params", {}).items() if not isinstance(v, dict | list)}
        converge = "; ".join(
            f"{c['event']}: " + (f"{c['converged_after_s']:g} s" if c["converged_after_s"] is not None else "never")
            for c in sharing.get("convergence", [])
        )  # fmt: skip
        for name, s in sessions.items():
            summary = s["summary"]
            lat = summary["latency_ms"]
            rows.append({"cell_id": path.name, **params, "session": name, "start_s": s["start_s"],
                         "stack": s["stack"]["label"], "achieved_mbps": summary["achieved_mbps"],
                         "window_mbps": (sharing.get("mean_mbps_in_window") or {}).get(name),
                         "frames": summary["frames"],
                         "completion": summary["complete"] / summary["frames"] if summary["frames"] else None,
                         "latency_p50_ms": lat["p50"], "latency_p95_ms": lat["p95"],
                         "latency_p99_ms": lat["p99"], "jain": sharing.get("jain"),
                         "convergence": converge})  # fmt: skip
    if not rows:
        raise TestbedError(f"{results}: no cell ran several sessions (topology `sessions:`)")
    return pd.DataFrame(rows)
