"""RFC 8868's metrics for an RFC 8867 case, per cell and flow, and the case's verdict.

Definitions (docs/rmcat.md has them with their reasons):
- a flow's rate: the IP bytes its sender put on the wire per second (video, RTX, FEC, audio);
- its fair share per second: the capacity left at its bottleneck (rate or schedule, less UDP
  cross traffic) over the flows active there, at most 1.7 Mbps (the RFC's 1.5 Mbps of video
  with headers and audio);
- convergence after an event: from the event until its 2 s mean rate is within [0.6, 1.1] x
  its fair share and stays there until the next event (inf: never), for each flow active over
  the whole interval (intervals shorter than 5 s are not judged);
- oscillation: a swing of the 500 ms rate from below 0.5x to above 1.1x its fair share or back,
  counted in steady state (between events, from 5 s after each);
- Jain's index per phase (between events, from 10 s after its start, or its second half when
  shorter than 20 s) over the flows' mean rates, phases with at least two flows; jain_min is
  the lowest;
- queueing delay: the bottleneck's link log (sojourn in a queue discipline's log; else the
  time from arrival to leaving the rate stage less the packet's own transmission time).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.analysis.rmcatcell import CellData, Flow, load_cell
from testbed.config.rmcat import CASES, RmcatSpec
from testbed.net.traffic import server_intervals
from testbed.rtc.sharing import jain

BAND = (0.6, 1.1)
WATERMARKS = (0.5, 1.1)
SMOOTH_S = 2
MIN_INTERVAL_S = 5.0
PHASE_SETTLE_S = 10.0
STARVED_MBPS = 0.15
JOIN_GRACE_S = 5.0
SETTLE_S = 5.0  # oscillation is counted from this long after each event (steady state)


def _q(values: Any, p: float) -> float | None:
    x = np.asarray(values, dtype="float64")
    x = x[~np.isnan(x)]
    return float(np.percentile(x, p)) if len(x) else None


def convergence(rate: pd.Series, fair: pd.Series, events: list[float], spans: Any,
                end_s: float) -> list[float]:  # fmt: skip
    """Seconds to converge after each event (see the module); inf where it never does."""
    smooth = rate.rolling(SMOOTH_S, min_periods=SMOOTH_S).mean()
    bounds = [*events, end_s]
    out = []
    for k, t in enumerate(events):
        nxt = bounds[k + 1]
        if nxt - t < MIN_INTERVAL_S or not any(a <= t + 0.5 and b >= nxt - 0.5 for a, b in spans):
            continue
        secs = [s for s in smooth.index if t + SMOOTH_S - 1 <= s and s + 1 <= nxt]
        ok = [bool(BAND[0] * fair[s] <= smooth[s] <= BAND[1] * fair[s]) for s in secs]
        after = math.inf
        for i in range(len(secs)):
            if all(ok[i:]):
                after = float(secs[i] + 1 - t)
                break
        out.append(after)
    return out


def oscillations(rate: pd.Series, fair: pd.Series) -> int:
    """Swings between the watermarks (rate and fair share per bin)."""
    state, swings = None, 0
    for r, f in zip(rate.to_numpy(), fair.to_numpy(), strict=True):
        if not f or np.isnan(f):
            continue
        now = "low" if r <= WATERMARKS[0] * f else "high" if r >= WATERMARKS[1] * f else None
        if now and state and now != state:
            swings += 1
        state = now or state
    return swings


def phases(events: list[float], end_s: float) -> list[tuple[float, float]]:
    """The judged part of each phase between events: from PHASE_SETTLE_S after its start (half
    of it in a phase shorter than twice that), phases of at least MIN_INTERVAL_S."""
    bounds = [0.0, *events, end_s]
    return [(a + min(PHASE_SETTLE_S, (b - a) / 2), b) for a, b in itertools.pairwise(bounds)
            if b - a >= MIN_INTERVAL_S]  # fmt: skip


def jain_min(data: CellData) -> float | None:
    """The lowest Jain's index over phases with >= 2 flows sending through the whole phase,
    among the flows sharing a bottleneck (phases between that bottleneck's events)."""
    values = []
    for neck in {f.bottleneck for f in data.flows}:
        mine = [f for f in data.flows if f.bottleneck == neck]
        end = min((f.spans[-1][1] for f in mine if f.spans), default=data.end_s)
        for a, b in phases([t for t in data.times(neck) if t < end], end):
            live = [f for f in mine if any(x <= a and y >= b - 0.5 for x, y in f.spans)]
            if len(live) < 2:
                continue
            secs = [s for s in data.rates.index if a <= s and s + 1 <= b]
            j = jain([float(data.rates.loc[secs, f.name].mean()) for f in live])
            if j is not None:
                values.append(j)
    return min(values) if values else None


def _wire(flow: Flow) -> pd.DataFrame | None:
    path = flow.folder / "wire.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _repair(flow: Flow, wire: pd.DataFrame) -> tuple[float | None, float | None]:
    """(% of video originals lost on the wire, % that never arrived, original or RTX)."""
    video = wire[(wire.direction == "media") & (wire["class"] == "video")]
    if video.empty:
        return None, None
    lost = video[video.recv_ns.isna()]
    before = 100 * len(lost) / len(video)
    rec = flow.folder / "sender" / "packets.parquet"
    if not rec.exists() or lost.empty:
        return before, (before if lost.empty else None)
    pk = pd.read_parquet(rec, columns=["kind", "ssrc", "seq", "original_seq"])
    rtx = pk[pk.kind == "rtx"].dropna(subset=["original_seq"])
    arrived = wire[(wire["class"] == "rtx") & wire.recv_ns.notna()][["ssrc", "seq"]]
    repaired = rtx.merge(arrived, on=["ssrc", "seq"])  # an RTX that arrived, by its original
    fixed = set(repaired.original_seq.astype("int64").tolist())
    never = sum(1 for s in lost.seq.astype("int64") if s not in fixed)
    return before, 100 * never / len(video)


def flow_metrics(data: CellData, flow: Flow) -> dict[str, Any]:
    rate = data.rates[flow.name] if flow.name in data.rates else pd.Series(0.0, data.rates.index)
    fair = data.fair(flow, rate.index)
    active = [s for s in rate.index if data.active(flow, s + 0.5)]
    judged = [s for s in active if not any(a <= s < a + JOIN_GRACE_S for a, _ in flow.spans)]
    frames = data.frames[data.frames.session == flow.name]
    lat = frames.latency_ns.astype("float64") / 1e6
    out: dict[str, Any] = {
        "frame_delay_p50_ms": _q(lat, 50), "frame_delay_p95_ms": _q(lat, 95),
        "rate_mbps": float(rate[active].mean()) if active else None,
        "share": float((rate[active] / fair[active]).mean()) if active else None,
        "starved_share": float((rate[judged] < STARVED_MBPS).mean()) if judged else None,
    }  # fmt: skip
    half = data.rates_half.get(flow.name)
    if half is not None:  # in steady state: each stretch between events, from SETTLE_S after it
        swings, bins = 0, 0
        for a, b in itertools.pairwise([0.0, *data.times(flow.bottleneck), data.end_s]):
            live = [k for k in half.index if a + (SETTLE_S if a else 0.0) <= k * 0.5 < b
                    and data.active(flow, k * 0.5 + 0.25)]  # fmt: skip
            swings += oscillations(half[live], data.fair(flow, pd.Index(live), step=0.5))
            bins += len(live)
        out["oscillations_per_min"] = swings / (bins * 0.5 / 60) if bins else None
    own_end = flow.spans[-1][1] if flow.spans else data.end_s
    conv = convergence(rate, fair, data.times(flow.bottleneck), flow.spans, own_end)
    out["convergence_s"] = conv
    out["convergence_max_s"] = max(conv) if conv else None
    wire = _wire(flow)
    if wire is not None:
        media = wire[wire.direction == "media"]
        video = media[media["class"] == "video"]
        delay = (video.recv_ns - video.sent_ns).astype("float64") / 1e6
        out["packet_delay_p50_ms"], out["packet_delay_p95_ms"] = _q(delay, 50), _q(delay, 95)
        back = wire[wire.direction == "feedback"].ip_bytes.sum()
        out["feedback_overhead_pct"] = 100 * float(back) / max(float(media.ip_bytes.sum()), 1.0)
        out["loss_before_repair_pct"], out["loss_after_repair_pct"] = _repair(flow, wire)
    audio = flow.folder / "audio.parquet"
    if audio.exists():
        a = pd.read_parquet(audio, columns=["latency_ns"])
        out["audio_delay_p95_ms"] = _q(a.latency_ns.astype("float64") / 1e6, 95)
    return out


def queue_delay_p95(data: CellData) -> float | None:
    """The 95th percentile of queueing delay over the bottlenecks' delivered packets."""
    values = []
    for link, direction in {f.bottleneck for f in data.flows}:
        log = data.link_log((link, direction))
        if log is None:
            continue
        done = log[log.event == "deliver"]
        if "sojourn_ns" in done:
            values.append(done.sojourn_ns.astype("float64").to_numpy() / 1e6)
            continue
        cap = data.capacity[(link, direction)]
        start = (log.attrs["header"].get("start_mono_ns", data.origin_ns) - data.origin_ns) / 1e9
        sec = ((done.arrival_ns / 1e9 + start).clip(lower=0)).astype(int).clip(upper=len(cap) - 1)
        rate = cap.to_numpy()[sec.to_numpy()] if len(cap) else np.full(len(done), np.nan)
        own = done.bytes.to_numpy() * 8 / (np.where(rate > 0, rate, np.nan) * 1e6) * 1e3
        held = (done.link_exit_ns - done.arrival_ns).astype("float64").to_numpy() / 1e6
        values.append(np.clip(held - np.nan_to_num(own), 0, None))
    return _q(np.concatenate(values), 95) if values else None


def ecn_capable_pct(data: CellData) -> float | None:
    for link, direction in {f.bottleneck for f in data.flows}:
        log = data.link_log((link, direction))
        if log is not None and "ecn" in log:
            return float(100 * log.ecn.astype(str).isin(["ect", "ce"]).mean())
    return None


def tcp_figures(data: CellData) -> tuple[float | None, float | None]:
    """(the TCP flows' summed mean goodput while they ran, that over the mean capacity)."""
    mbps, any_tcp = 0.0, False
    for name, f in (data.meta.get("cross_traffic") or {}).items():
        if f.get("kind") not in ("tcp", "tcp_short"):
            continue
        any_tcp = True
        iv = server_intervals(data.folder / f.get("file", f"cross-{name}.json"))
        span = (f.get("stop_s") or data.end_s) - f.get("start_s", 0.0)
        bits = sum((b - a) * m for a, b, m in iv)
        mbps += bits / span if span > 0 else 0.0
    if not any_tcp:
        return None, None
    cap = np.nanmean([c.mean() for c in data.capacity.values()])
    return mbps, (mbps / cap if cap else None)


def spare_taken(data: CellData) -> float | None:
    """The others' mean rate while a flow paused over their mean rate in the 10 s before."""
    for f in data.flows:
        for (_, pause), (resume, _) in zip(f.spans, f.spans[1:], strict=False):
            others = [g.name for g in data.flows if g is not f and g.name in data.rates]
            before = data.rates.loc[max(0, int(pause) - 12) : int(pause) - 2, others].sum(axis=1)
            during = data.rates.loc[int(pause) + 2 : int(resume) - 1, others].sum(axis=1)
            if len(before) and len(during) and before.mean() > 0:
                return float(during.mean() / before.mean())
    return None


def cell_metrics(data: CellData) -> dict[str, Any]:
    total = data.rates[[f.name for f in data.flows if f.name in data.rates]].sum(axis=1)
    use = []
    for neck, cap in data.capacity.items():
        names = [f.name for f in data.flows if f.bottleneck == neck and f.name in data.rates]
        live = [s for s in data.rates.index if s < len(cap) and cap.iloc[s] > 0
                and any(data.active(f, s + 0.5) for f in data.flows if f.bottleneck == neck)]  # fmt: skip
        if live and names:
            use.append(
                float((data.rates.loc[live, names].sum(axis=1) / cap.iloc[live].to_numpy()).mean())
            )
    tcp, tcp_share = tcp_figures(data)
    return {
        "utilisation": float(np.mean(use)) if use else None, "jain_min": jain_min(data),
        "queue_delay_p95_ms": queue_delay_p95(data), "spare_taken": spare_taken(data),
        "tcp_mbps": tcp, "tcp_share": tcp_share, "ecn_capable_pct": ecn_capable_pct(data),
        "total_mbps": float(total.mean()) if len(total) else None,
    }  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail | n.a.
    key: str  # the case's key figure, in words
    reasons: tuple[str, ...]  # each failed criterion, or why n.a.


def _fmt(v: Any) -> str:
    return "n/a" if v is None else ("never" if v == math.inf else f"{v:.3g}")


def verdict(rmcat: RmcatSpec, flows: dict[str, dict[str, Any]], cell: dict[str, Any],
            stacks: set[str]) -> Verdict:  # fmt: skip
    """Every criterion of the case on every flow (flow metrics) or on the cell."""
    case = rmcat.case
    key_values = (
        [m.get(case.key) for m in flows.values()] if case.key not in cell else [cell[case.key]]
    )
    key = f"{case.key} {', '.join(_fmt(v) for v in key_values)}"
    if why := rmcat.na_reason(stacks):
        return Verdict("n.a.", "", (why,))
    if case.case == "6.2" and not cell.get("ecn_capable_pct"):
        return Verdict("n.a.", "", ("no packet reached the bottleneck ECN-capable (no ECT "
                                     "codepoint in its link log): the stack does not use ECN",))  # fmt: skip
    failed, short = [], []
    for c in case.criteria:
        values = {"cell": cell.get(c.metric)} if c.metric in cell else {
            n: m.get(c.metric) for n, m in flows.items()}  # fmt: skip
        for who, v in values.items():
            if v is None:
                failed.append(f"{c.metric} ({who}): not measured")
                short.append(f"{c.metric} not measured")
            elif not c.holds(float(v)):
                failed.append(f"{c.metric} ({who}) = {_fmt(v)}, wanted {c.op} {c.threshold:g}")
                short.append(f"{c.metric} {_fmt(v)}, wanted {c.op} {c.threshold:g}")
    if failed:  # the scorecard's figure: what failed first (and how many more did)
        key = short[0] + (f"; {len(short) - 1} more" if len(short) > 1 else "")
    return Verdict("fail" if failed else "pass", key, tuple(failed))


def analyse_cell(folder: Path, rmcat: RmcatSpec) -> dict[str, Any]:
    """cell metrics, flow metrics, events and the verdict of one cell of a case."""
    data = load_cell(folder, rmcat.bottleneck)
    flows = {f.name: flow_metrics(data, f) for f in data.flows}
    cell = cell_metrics(data)
    v = verdict(rmcat, flows, cell, {f.stack for f in data.flows})
    return {"cell_id": folder.name, "case": rmcat.case.case, "variant": rmcat.variant,
            "controller": data.flows[0].label if data.flows else "?",
            "params": data.meta.get("params", {}), "flows": flows, "cell": cell,
            "events": data.events, "verdict": v.result, "key": v.key,
            "reasons": list(v.reasons)}  # fmt: skip


def case_of(results: Path) -> RmcatSpec | None:
    """The rmcat key of the experiment a results folder holds (run.json keeps its text)."""
    import yaml

    from testbed.config.rmcat import parse_rmcat

    meta = json.loads((results / "run.json").read_text())
    raw = yaml.safe_load(meta.get("experiment_text") or "") or {}
    return parse_rmcat(raw.get("rmcat"), meta.get("experiment_source", str(results)))


__all__ = ["CASES", "analyse_cell", "case_of", "verdict"]
