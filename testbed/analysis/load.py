"""Read a results folder. Read-only: analysis never rewrites raw results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.errors import TestbedError
from testbed.fec.spec import FecSpec
from testbed.rtc.framelog import after_warmup


def _cells(results: Path, only: set[str] | None = None) -> list[Path]:
    cells = results / "cells"
    if not cells.is_dir():
        raise TestbedError(f"{results}: no cells/ folder; is this a `testbed run` results folder?")
    return sorted(
        p for p in cells.iterdir() if not p.name.startswith(".") and (p / "cell.json").exists()
        and (only is None or p.name in only)
    )  # fmt: skip


def load_cells(results: str | Path, only: set[str] | None = None) -> pd.DataFrame:
    """One row per cell (only: these cell ids): its params (grid keys as columns), link and
    stream config, summary."""
    rows: list[dict[str, Any]] = []
    for path in _cells(Path(results), only):
        cell = json.loads((path / "cell.json").read_text())
        link = media_link(cell)
        stream = cell["stream"]
        fec = FecSpec(**stream.get("fec", {"scheme": "none"})).label()
        params = {k: (fec if k == "stream.fec" else json.dumps(v, sort_keys=True))
                  if isinstance(v, dict | list) else v for k, v in cell.get("params", {}).items()}  # fmt: skip
        row = {"cell_id": path.name, **params}
        row.update(
            abr=stream.get("abr", "fixed"), fec=fec, nack=stream.get("nack", _nack_default(stream)),
            stack=cell.get("stack", {}).get("label") or stream.get("stack", "aiortc"),
            roi=("ROI" if stream.get("roi", {}).get("enabled", True) else "uniform") if stream.get("source") == "roi" else "none",
            rate_mbps=link["media"]["rate_mbps"] or np.nan, delay_ms=link["media"]["delay_ms"],
            loss_pct=link["media"]["loss_pct"], bitrate_mbps=cell["stream"]["bitrate_mbps"],
            fps=cell["stream"]["fps"], warmup_s=cell["stream"]["warmup_s"],
            reverse_delay_ms=link["feedback"]["delay_ms"],
        )  # fmt: skip
        row.update(_audio(cell.get("summary", {}).get("audio")))
        abr = cell.get("abr") or {}
        row.update(abr_errors=int(abr.get("errors") or 0), abr_first_error=abr.get("first_error"),
                   fidelity_flags="; ".join((cell.get("fidelity") or {}).get("flags", [])))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _audio(summary: dict[str, Any] | None) -> dict[str, float]:
    """A cell's audio figures (testbed.rtc.audiolog.summarize_audio), when it sent audio."""
    if not summary or not summary.get("packets"):
        return {}
    lat = summary["latency_ms"]
    return {"audio_p50_ms": lat["p50"] if lat["p50"] is not None else np.nan,
            "audio_p99_ms": lat["p99"] if lat["p99"] is not None else np.nan,
            "audio_lost_pct": 100 * summary["lost"] / summary["packets"]}  # fmt: skip


def load_frames(
    results: str | Path, include_warmup: bool = False, only: set[str] | None = None
) -> pd.DataFrame:
    """All frames of all cells (only: these), with the cell's id and params as columns;
    warm-up excluded."""
    cells = load_cells(results, only).set_index("cell_id")
    parts = []
    for cell_id, meta in cells.iterrows():
        frames = pd.read_parquet(Path(results) / "cells" / str(cell_id) / "frames.parquet")
        if not include_warmup:
            frames = after_warmup(frames, float(meta.warmup_s))
        frames = frames.assign(cell_id=cell_id, **{k: meta[k] for k in cells.columns})
        parts.append(frames)
    if not parts:
        raise TestbedError(f"{results}: no finished cells yet")
    return pd.concat(parts, ignore_index=True)


def _nack_default(stream: dict[str, Any]) -> str:
    """What repaired losses when the stream names no nack mode: the sender stack's own."""
    sender = stream.get("sender_stack") or stream.get("stack", "aiortc")
    return "aiortc" if sender == "aiortc" else "libwebrtc"


def media_link(cell: dict[str, Any]) -> dict[str, Any]:
    """The media and feedback directions of the link that carried the stream (cell.json's
    `path`; cells written before it was recorded: the first link's uplink)."""
    path = cell.get("path") or {}
    links = cell["topology"]["links"]
    link = links.get(path.get("link")) or next(iter(links.values()))
    up = path.get("direction", "uplink") == "uplink"
    return {"media": link["uplink" if up else "downlink"],
            "feedback": link["downlink" if up else "uplink"]}  # fmt: skip


HOST_KIND = ("kernel", "machine", "cpus", "backend", "testbed_revision")


def mixed_hosts(results: str | Path) -> list[str]:
    """A warning per configuration whose cells ran on different kinds of hosts (kernel,
    machine, CPU count, link backend, testbed revision): their spread is partly the hosts'."""
    kinds: dict[str, dict[tuple[Any, ...], list[str]]] = {}
    for path in _cells(Path(results)):
        cell = json.loads((path / "cell.json").read_text())
        host = cell.get("host")
        if not host:
            continue
        params = {k: v for k, v in cell.get("params", {}).items() if k != "repetition"}
        config = json.dumps(params, sort_keys=True, default=str)
        kind = tuple(host.get(k) for k in HOST_KIND)
        kinds.setdefault(config, {}).setdefault(kind, []).append(str(host.get("name")))
    out = []
    for config, by_kind in kinds.items():
        if len(by_kind) > 1:
            said = "; ".join(
                f"{len(names)} on {', '.join(sorted(set(names)))} ("
                + ", ".join(f"{k} {v}" for k, v in zip(HOST_KIND, kind, strict=True))
                + ")"
                for kind, names in by_kind.items()
            )
            out.append(f"warning: configuration {config} ran on different kinds of hosts: {said}")
    return out
