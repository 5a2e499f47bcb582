"""The RMCAT suite's tables: every cell of every case analysed, a tidy table of the metrics,
and the scorecard (cases x controllers: pass / fail / n.a. with the case's key figure).

A results folder is one case (`testbed run experiments/rmcat/5.1.yaml -o R/5.1`); the report
takes one, or a folder of them. A controller a case does not apply to (its rmcat key's
not_applicable) is n.a. whether or not it ran; a controller that did not run is `not run`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from testbed.analysis.load import _cells
from testbed.analysis.rmcat import analyse_cell, case_of
from testbed.errors import TestbedError

CASE_ORDER = ("5.1", "5.2", "5.3", "5.4", "5.5", "5.6", "5.7", "5.8", "6.1", "6.2", "6.3")


def results_folders(path: Path) -> list[Path]:
    """path itself when it holds a run (run.json), else the runs in its subfolders."""
    if (path / "run.json").exists():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / "run.json").exists()) if path.is_dir() else []
    if not found:
        raise TestbedError(f"{path}: no results here (no run.json in it or its subfolders); "
                           "run a case first: testbed run experiments/rmcat/5.1.yaml -o R/5.1")  # fmt: skip
    return found


def controllers(results: Path) -> list[tuple[str, str]]:
    """(label 'stack abr', stack) of every controller the case's grid names, in its order."""
    meta = json.loads((results / "run.json").read_text())
    raw = yaml.safe_load(meta.get("experiment_text") or "") or {}
    base = raw.get("stream") or {}
    out = []
    for item in (raw.get("grid") or {}).get("stream") or [base]:
        s = {**base, **item}
        stack = s.get("sender_stack") or s.get("stack", "aiortc")
        label = f"{stack} {s.get('abr', 'fixed')}"
        if (label, stack) not in out:
            out.append((label, stack))
    return out


def analyse(path: Path, say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """A row per cell of every case under path (and one per n.a. controller that did not run)."""
    rows: list[dict[str, Any]] = []
    for results in results_folders(path):
        rmcat = case_of(results)
        if rmcat is None:
            say(f"{results}: not an RMCAT case (its experiment has no rmcat: key); skipped")
            continue
        seen = set()
        order = [label for label, _ in controllers(results)]
        for cell in _cells(results):
            row = analyse_cell(cell, rmcat)
            row["results"], row["order"] = results.name, order
            rows.append(row)
            seen.add(row["controller"])
        for label, stack in controllers(results):
            if label in seen:
                continue
            why = rmcat.na_reason({stack})
            rows.append({"results": results.name, "case": rmcat.case.case, "variant": rmcat.variant,
                         "controller": label, "cell_id": None, "flows": {}, "cell": {},
                         "verdict": "n.a." if why else "not run", "key": "",
                         "reasons": [why] if why else [], "order": order})  # fmt: skip
    return rows


def tidy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell and flow: case, controller, the grid values, every metric."""
    out = []
    for r in rows:
        params = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
                  for k, v in (r.get("params") or {}).items() if k != "stream"}  # fmt: skip
        for flow, m in (r["flows"] or {"-": {}}).items():
            out.append({"results": r["results"], "case": r["case"], "variant": r["variant"],
                        "controller": r["controller"], "cell_id": r["cell_id"], **params,
                        "flow": flow, **{k: v for k, v in m.items() if k != "convergence_s"},
                        **r["cell"], "verdict": r["verdict"]})  # fmt: skip
    return pd.DataFrame(out)


def _worst(rows: list[dict[str, Any]]) -> dict[str, Any]:
    order = {"fail": 0, "pass": 1, "n.a.": 2, "not run": 3}
    return min(rows, key=lambda r: order.get(r["verdict"], 9))


def scorecard(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Cases (rows) x controllers (columns): the worst verdict over the case's cells (its
    variants and grid values), with that cell's key figure."""
    table: dict[str, dict[str, str]] = {}
    for case in sorted({r["case"] for r in rows}, key=lambda c: CASE_ORDER.index(c)):
        mine = [r for r in rows if r["case"] == case]
        for ctl in dict.fromkeys(r["controller"] for r in mine):
            worst = _worst([r for r in mine if r["controller"] == ctl])
            n = sum(1 for r in mine if r["controller"] == ctl and r["cell_id"])
            text = worst["verdict"] + (f" ({worst['key']})" if worst["key"] else "")
            table.setdefault(case, {})[ctl] = text + (f" [{n} cells]" if n > 1 else "")
    order = list(dict.fromkeys(c for r in rows for c in r.get("order", [])))
    frame = pd.DataFrame(table).T.fillna("not run")
    return frame[[c for c in order if c in frame] + [c for c in frame if c not in order]]


def lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per cell: case, controller, grid values, per-flow figures, the verdict and why."""
    out = []
    for r in rows:
        if r["verdict"] == "not run":  # the scorecard says so once, not once per results folder
            continue
        if not r["cell_id"]:
            out.append(f"{r['case']} {r['controller']}: {r['verdict']}"
                       + (f" — {r['reasons'][0]}" if r["reasons"] else ""))  # fmt: skip
            continue
        grid = {
            k: v for k, v in (r.get("params") or {}).items() if k not in ("stream", "repetition")
        }
        variant = f" ({r['variant']})" if r["variant"] else ""
        out.append(f"{r['case']}{variant} {r['controller']} {grid or ''} cell {r['cell_id']}: "
                   f"{r['verdict'].upper()}")  # fmt: skip
        c = r["cell"]
        out.append("  cell: " + ", ".join(f"{k} {_f(c.get(k))}" for k in (
            "utilisation", "jain_min", "queue_delay_p95_ms", "spare_taken", "tcp_mbps", "tcp_share")
            if c.get(k) is not None))  # fmt: skip
        for name, m in r["flows"].items():
            conv = ", ".join(_f(x) for x in m.get("convergence_s", []))
            out.append(f"  {name}: {_f(m.get('rate_mbps'))} Mbps (share {_f(m.get('share'))}), frame "
                       f"delay p50/p95 {_f(m.get('frame_delay_p50_ms'))}/{_f(m.get('frame_delay_p95_ms'))} "
                       f"ms, packet p95 {_f(m.get('packet_delay_p95_ms'))} ms, loss before/after repair "
                       f"{_f(m.get('loss_before_repair_pct'))}/{_f(m.get('loss_after_repair_pct'))}%, "
                       f"feedback {_f(m.get('feedback_overhead_pct'))}%, oscillations "
                       f"{_f(m.get('oscillations_per_min'))}/min, converged after [{conv}] s")  # fmt: skip
        out.extend(f"  why: {why}" for why in r["reasons"])
    return out


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "never"
    return f"{v:.3g}" if isinstance(v, float) else str(v)
