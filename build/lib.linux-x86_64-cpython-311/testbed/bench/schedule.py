"""`testbed bench link --schedule FILE`: does a link follow its schedule, segment by segment?

Two probes, each over one period of the (looping) schedule, one after the other so that neither
queues behind the other: a saturating one (1.2x the schedule's highest rate, 1200-byte packets)
gives the delivered rate per segment; a light one (0.3 Mbps, 200-byte packets) gives one-way
delay and loss per segment. Each packet is placed in the segment its link exit fell in (receive
time minus that segment's delay), and the middle 80% of each segment is counted, so a boundary's
own transient does not decide the figure. Printed per segment beside the schedule, per backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from testbed.bench.link import Case, probe
from testbed.config import LinkSpec, ScheduleSpec, parse_link_spec
from testbed.errors import UnavailableError
from testbed.shaping.backends import choose_backend

Say = Callable[[str], None]
TRIM = 0.1  # of each segment, at each end


def _segment_of(
    tx_rel: np.ndarray, rx_rel: np.ndarray, s: ScheduleSpec, period0: float
) -> np.ndarray:
    """Per packet (send and receive times since the schedule started, ns): the segment its link
    exit fell in, inside the one whole period from period0 (-1 elsewhere). The delay is the one
    in force when it entered the link (as the model and netem apply it), so exit = rx - delay."""
    period = s.period_ns
    ends = np.asarray(s.ends_ns)
    starts = np.concatenate([[0.0], ends[:-1]])
    delay_at_entry = np.array([s.at(max(0.0, t)).delay_ms * 1e6 for t in tx_rel])
    exit_rel = rx_rel - delay_at_entry - period0
    out = np.full(len(rx_rel), -1)
    for i in range(len(ends)):
        width = ends[i] - starts[i]
        inside = (exit_rel >= starts[i] + TRIM * width) & (exit_rel < ends[i] - TRIM * width)
        out[inside & (exit_rel < period)] = i
    return out


def _first_whole_period(first_ns: float, period: float) -> float:
    """The first period boundary a little after the probe's first packet (its ramp is over)."""
    return float(np.ceil((first_ns + 2e8) / period) * period)


def measure(backend: str, run: str, spec: LinkSpec, say: Say) -> list[dict[str, Any]]:
    s = spec.schedule
    assert s is not None
    top = max((seg.rate_mbps or 0) for seg in s.segments) or 10.0
    seconds = 2 * s.period_ns / 1e9 + 0.5  # holds one whole period after a ramp-up
    with Case(backend, run, spec, replace(spec, schedule=None, rate_mbps=None, delay_ms=0,
                                           loss_pct=0, jitter_ms=0)) as net:  # fmt: skip
        assert net.info is not None
        start_mono = int(net.info.links["path"]["uplink"]["start_mono_ns"])
        offset = time.time_ns() - time.monotonic_ns()
        heavy = probe(net, 1.2 * top, 1200, seconds)
        light = probe(net, 0.3, 200, seconds)
    rows = []
    h_tx, h_rx = heavy[:, 1] - offset - start_mono, heavy[:, 2] - offset - start_mono
    l_tx, l_rx = light[:, 1] - offset - start_mono, light[:, 2] - offset - start_mono
    hs = _segment_of(h_tx, h_rx, s, _first_whole_period(float(h_rx.min()), s.period_ns))
    p0 = _first_whole_period(float(l_rx.min()), s.period_ns)
    ls = _segment_of(l_tx, l_rx, s, p0)
    # every light packet's send time, lost ones too (the probe paces evenly: fit tx = a + b seq)
    slope, icpt = np.polyfit(light[:, 0], light[:, 1], 1)
    seqs = np.arange(int(light[:, 0].max()) + 1)
    sent_rel = icpt + slope * seqs - offset - start_mono - p0
    received = set(light[:, 0].tolist())
    for i, seg in enumerate(s.segments):
        width_s = seg.duration_ms / 1000 * (1 - 2 * TRIM)
        h = heavy[hs == i]
        got = light[ls == i]
        rate = float(h[:, 3].sum() * 8 / width_s / 1e6) if len(h) else 0.0
        owd = (got[:, 2] - got[:, 1]) / 1e6 - seg.delay_ms
        if seg.rate_mbps:
            owd = owd - 228 * 8 / (seg.rate_mbps * 1e3)  # the probe packet's own serialization
        width = seg.duration_ms * 1e6
        lo, hi = s.ends_ns[i] - width * (1 - TRIM), s.ends_ns[i] - width * TRIM
        window = seqs[(sent_rel >= lo) & (sent_rel < hi)]
        lost = sum(1 for q in window.tolist() if q not in received)
        rows.append({
            "segment": i, "duration_ms": seg.duration_ms, "rate_mbps": seg.rate_mbps,
            "delay_ms": seg.delay_ms, "loss_pct": seg.loss_pct, "delivered_mbps": rate,
            "rate_error_pct": 100 * (rate / seg.rate_mbps - 1) if seg.rate_mbps else None,
            "owd_error_p50_ms": float(np.percentile(owd, 50)) if len(owd) else None,
            "owd_error_p99_ms": float(np.percentile(owd, 99)) if len(owd) else None,
            "light_sent": len(window),
            "measured_loss_pct": 100 * lost / len(window) if len(window) else None,
        })  # fmt: skip
    return rows


def run_schedule_bench(path: Path, backends: list[str], run: str, say: Say) -> list[dict[str, Any]]:
    spec = parse_link_spec({"schedule": str(path.resolve()), "queue_packets": 200}, str(path),
                           "schedule", Path.cwd())  # fmt: skip
    assert spec.schedule is not None
    out = []
    for name in backends:
        try:
            chosen, _ = choose_backend(name, run)
        except UnavailableError as e:
            say(f"[{name}] not measured: {e}")
            continue
        say(f"[{chosen}] {path.name}: {len(spec.schedule.segments)} segments, "
            f"{spec.schedule.duration_s:g} s a period")  # fmt: skip
        rows = measure(chosen, run, spec, say)
        say(
            f"{'seg':>3} {'ms':>6} {'Mbps':>6} {'got':>7} {'err %':>7} {'delay':>6} "
            f"{'owd err p50/p99 ms':>19} {'loss %':>6} {'got %':>6}"
        )
        for r in rows:
            got_loss = (
                r["measured_loss_pct"] if r["measured_loss_pct"] is not None else float("nan")
            )
            err = "-" if r["rate_error_pct"] is None else f"{r['rate_error_pct']:+.2f}"
            owd = ("-" if r["owd_error_p50_ms"] is None
                   else f"{r['owd_error_p50_ms']:.3f}/{r['owd_error_p99_ms']:.3f}")  # fmt: skip
            say(f"{r['segment']:>3} {r['duration_ms']:>6g} {r['rate_mbps'] or 0:>6g} "
                f"{r['delivered_mbps']:>7.3f} {err:>7} {r['delay_ms']:>6g} {owd:>19} "
                f"{r['loss_pct']:>6g} {got_loss:>6.1f}")  # fmt: skip
        out.append({"backend": chosen, "segments": rows})
    return out
