"""What an RMCAT case's verdict needs from one cell: its flows, each flow's bottleneck, the
capacity available there second by second, the per-second rates and the events. Reads a cell
folder; the arithmetic lives in testbed.analysis.rmcat.

Time is seconds since the cell's first video frame left a sender (the RFC's t = 0). A schedule
starts with its link, a few seconds earlier (the handshake): its changes are placed from the
link log's start time, so every change is timed when it happened. UDP cross traffic counts
against every bottleneck direction its path crosses (the topology's links are a tree here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.rtc.sharing import flow_rates
from testbed.shaping.linklog import read_header, read_link_log

MAX_WIRE_MBPS = 1.7  # RFC 8867's 1.5 Mbps of video, packet headers and 20 kbps of audio
GAP_S = 2.0  # a flow that sent no frame for this long paused (or left)


@dataclass(frozen=True)
class Flow:
    name: str
    folder: Path
    stack: str  # the sender's stack
    label: str  # "stack abr", the scorecard's column
    bottleneck: tuple[str, str]  # (link, direction)
    spans: tuple[tuple[float, float], ...]  # when it sent, pauses cut out


@dataclass
class CellData:
    folder: Path
    meta: dict[str, Any]
    frames: pd.DataFrame  # frames.parquet, with its session column ("flow" for one session)
    origin_ns: int
    flows: list[Flow]
    rates: pd.DataFrame  # Mbps per second (index) per flow (columns), wire bytes incl. audio
    rates_half: pd.DataFrame  # the same per 500 ms
    capacity: dict[tuple[str, str], pd.Series]  # available Mbps per second, per bottleneck
    # (t_s, what, the bottleneck it happened at), sorted: a flow's events are its bottleneck's
    events: list[tuple[float, str, tuple[str, str]]] = field(default_factory=list)
    end_s: float = 0.0
    _logs: dict[tuple[str, str], pd.DataFrame | None] = field(default_factory=dict)

    def link_log(self, neck: tuple[str, str]) -> pd.DataFrame | None:
        """The bottleneck's link log (read once; None when the cell has none)."""
        if neck not in self._logs:
            path = self.folder / f"link-{neck[0]}-{neck[1]}.log"
            self._logs[neck] = read_link_log(path) if path.exists() else None
        return self._logs[neck]

    def times(self, neck: tuple[str, str]) -> list[float]:
        """When something changed at this bottleneck (capacity, or a flow through it)."""
        return [t for t, _, n in self.events if n == neck]

    def active(self, flow: Flow, t: float) -> bool:
        return any(a <= t < b for a, b in flow.spans)

    def fair(self, flow: Flow, index: pd.Index, step: float = 1.0) -> pd.Series:
        """Its fair share of the available capacity per bin: what is left at its bottleneck
        over the flows active there, at most MAX_WIRE_MBPS."""
        cap = self.capacity[flow.bottleneck]
        out = []
        for t in index:
            mid = t * step + step / 2
            n = sum(
                1 for f in self.flows if f.bottleneck == flow.bottleneck and self.active(f, mid)
            )
            c = float(cap.iloc[min(int(mid), len(cap) - 1)]) if len(cap) else np.nan
            out.append(min(c / max(n, 1), MAX_WIRE_MBPS))
        return pd.Series(out, index=index, dtype="float64")


def _segments(spec: Mapping[str, Any]) -> list[tuple[float, float | None]]:
    """(start s, rate Mbps) of a link direction's schedule from its start; one for a rate."""
    sched = spec.get("schedule")
    if not sched:
        return [(0.0, spec.get("rate_mbps"))]
    out, t, rate = [], 0.0, spec.get("rate_mbps")
    for seg in sched["segments"]:
        rate = seg.get("rate_mbps", rate)
        out.append((t, rate))
        t += seg["duration_ms"] / 1000
    return out


def crosses(links: Mapping[str, Any], src: str, dst: str) -> set[tuple[str, str]]:
    """The (link, direction)s a packet from src to dst crosses (a tree of links)."""
    adj: dict[str, list[tuple[str, str, str]]] = {}
    for name, lk in links.items():
        a, b = lk["between"]
        adj.setdefault(a, []).append((b, name, "uplink"))
        adj.setdefault(b, []).append((a, name, "downlink"))
    seen: dict[str, set[tuple[str, str]]] = {src: set()}
    stack = [src]
    while stack:
        here = stack.pop()
        for there, name, direction in adj.get(here, []):
            if there not in seen:
                seen[there] = seen[here] | {(name, direction)}
                stack.append(there)
    return seen.get(dst, set())


def _spans(sent_s: np.ndarray) -> tuple[tuple[float, float], ...]:
    """When a flow sent: from its first frame to its last, cut at gaps of GAP_S or more."""
    if not len(sent_s):
        return ()
    t = np.sort(sent_s)
    cuts = np.flatnonzero(np.diff(t) >= GAP_S)
    starts = [t[0], *t[cuts + 1]]
    ends = [*t[cuts], t[-1]]
    return tuple((float(a), float(b) + 1 / 30) for a, b in zip(starts, ends, strict=True))


def _session_list(meta: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, folder, fields) per session; a single-session cell is one named 'flow'."""
    if meta.get("sessions"):
        return [(n, s["folder"], s) for n, s in meta["sessions"].items()]
    return [("flow", "", meta)]


def load_cell(folder: Path, bottleneck: str | None = None) -> CellData:
    meta = json.loads((folder / "cell.json").read_text())
    frames = pd.read_parquet(folder / "frames.parquet")
    if "session" not in frames:
        frames = frames.assign(session="flow")
    sent = frames[frames.sent_first_ns.notna()]
    origin = int(sent.sent_first_ns.min())
    links = meta["topology"]["links"]
    flows = []
    for name, sub, fields in _session_list(meta):
        path = fields["path"]
        neck = tuple(bottleneck.split(".")) if bottleneck else (path["link"], path["direction"])
        stream = fields["stream"]
        mine = sent[sent.session == name].sent_first_ns.astype("int64").to_numpy()
        label = f"{fields['stack']['label']} {stream.get('abr', 'fixed')}"
        flows.append(Flow(name, folder / sub, fields["stack"]["label"].split("->")[0], label,
                          (neck[0], neck[1]), _spans((mine - origin) / 1e9)))  # fmt: skip
    rates = _with_audio(flow_rates(sent, origin), flows, origin, 1.0)
    half = _with_audio(flow_rates(sent, origin, 0.5), flows, origin, 0.5)
    end = max((b for f in flows for _, b in f.spans), default=0.0)
    n = int(np.ceil(end)) + 1
    capacity = {
        f.bottleneck: _available(folder, meta, links, f.bottleneck, origin, n) for f in flows
    }
    data = CellData(folder, meta, frames, origin, flows, rates.reindex(range(n), fill_value=0.0),
                    half, capacity, end_s=end)  # fmt: skip
    data.events = _events(data, folder, meta, links, origin)
    return data


def _with_audio(rates: pd.DataFrame, flows: list[Flow], origin: int, step: float) -> pd.DataFrame:
    """Add each flow's audio (audio.parquet) to its rate: the RFC's flow is video + audio."""
    for f in flows:
        path = f.folder / "audio.parquet"
        if not path.exists():
            continue
        audio = pd.read_parquet(path, columns=["sent_ns", "ip_bytes"])
        b = ((audio.sent_ns - origin) / 1e9 // step).astype(int)
        mbps = (audio.ip_bytes * 8).groupby(b).sum() / step / 1e6
        mbps = mbps[mbps.index >= 0]
        idx = rates.index.union(mbps.index)
        rates = rates.reindex(idx, fill_value=0.0)
        rates[f.name] = rates.get(f.name, 0.0) + mbps.reindex(idx, fill_value=0.0)
    return rates.fillna(0.0)


def _link_start_s(folder: Path, link: str, direction: str, origin: int) -> float:
    """When the link (and its schedule) started, seconds since the first frame (<= 0)."""
    log = folder / f"link-{link}-{direction}.log"
    if not log.exists():
        return 0.0
    start = read_header(log).get("start_mono_ns")
    return (start - origin) / 1e9 if start else 0.0


def _udp_flows(meta: dict[str, Any], origin: int) -> list[tuple[dict[str, Any], float, float]]:
    """(flow, start s, stop s) of each UDP cross-traffic flow, on the cell's clock."""
    out = []
    for f in (meta.get("cross_traffic") or {}).values():
        if f.get("kind") != "udp" or not f.get("started_mono_ns"):
            continue
        shift = (f["started_mono_ns"] - origin) / 1e9
        stop = f.get("stop_s")
        out.append((f, shift + f.get("start_s", 0.0), shift + stop if stop is not None else 1e9))
    return out


def _available(folder: Path, meta: dict[str, Any], links: Mapping[str, Any],
               neck: tuple[str, str], origin: int, n: int) -> pd.Series:  # fmt: skip
    """Mbps left for the media at a bottleneck per second: its rate (schedule) less the UDP
    cross traffic crossing it (an on/off flow counts at its mean)."""
    spec = links[neck[0]][neck[1]]
    shift = _link_start_s(folder, neck[0], neck[1], origin)
    segs = [(t + shift, r) for t, r in _segments(spec)]
    out = np.full(n, np.nan)
    for s in range(n):
        mid = s + 0.5
        rate = next((r for t, r in reversed(segs) if t <= mid), segs[0][1])
        out[s] = np.nan if rate is None else rate
    for f, a, b in _udp_flows(meta, origin):
        if neck not in crosses(links, f["from"], f["to"]):
            continue
        duty = 1.0 if f.get("on_ms") is None else f["on_ms"] / (f["on_ms"] + f["off_ms"])
        secs = np.arange(n) + 0.5
        out = out - np.where((secs >= a) & (secs < b), f["rate_mbps"] * duty, 0.0)
    return pd.Series(np.clip(out, 0.0, None), dtype="float64")


def _events(data: CellData, folder: Path, meta: dict[str, Any], links: Mapping[str, Any],
            origin: int) -> list[tuple[float, str, tuple[str, str]]]:  # fmt: skip
    """Capacity changes at any bottleneck, joins, leaves, pauses and resumes (what happened),
    within the test and not in its first or last 3 s, each with the bottleneck it concerns."""
    out: set[tuple[float, str, tuple[str, str]]] = set()
    for neck in {f.bottleneck for f in data.flows}:
        cap = data.capacity[neck]
        for s in range(1, len(cap)):
            if abs(cap.iloc[s] - cap.iloc[s - 1]) > 0.05:
                what = f"capacity {cap.iloc[s - 1]:.2f} -> {cap.iloc[s]:.2f} Mbps at {neck[0]}"
                out.add((float(s), what, neck))
    first = min((f.spans[0][0] for f in data.flows if f.spans), default=0.0)
    for f in data.flows:
        for i, (a, b) in enumerate(f.spans):
            if a > first + 3:
                out.add((round(a, 1), f"{'resume' if i else 'join'} {f.name}", f.bottleneck))
            if b < data.end_s - 3:
                last = i == len(f.spans) - 1
                out.add((round(b, 1), f"{'leave' if last else 'pause'} {f.name}", f.bottleneck))
    return sorted(e for e in out if 3 <= e[0] <= data.end_s - 3)
