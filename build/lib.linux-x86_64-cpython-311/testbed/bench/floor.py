"""`testbed bench floor`: how close is measured frame latency to the physical floor?

Lossless sessions over 10 Mbps / 30 ms at several synthetic bitrates. Per frame the floor is
the one-way delay + the frame's wire bits / link rate, plus the wait behind the previous frame
if it is still serializing (a FIFO link). Printed per bitrate: median and p99 of latency - floor,
the same latencies measured by in-process hooks instead of the wire, endpoint CPU, and how often
the emulator released a packet more than 1 ms late (VM stalls). Then CPU for 720p30 VP8.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.config import load_topology
from testbed.rtc.framelog import after_warmup
from testbed.rtc.record import EndpointRecord
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend

WARMUP_SHARE = 0.1  # the first 10% of each session (connection warm-up) is not counted
P2P = Path(__file__).resolve().parents[2] / "topologies" / "p2p.yaml"
Say = Callable[[str], None]


def frame_floor_ns(frames: pd.DataFrame, rate_mbps: float, delay_ms: float) -> np.ndarray:
    """Earliest completion - first send per frame on a FIFO link (frames in send order)."""
    sent = frames.sent_first_ns.astype("float64").to_numpy()
    bits = frames.wire_bytes.to_numpy(dtype=np.float64) * 8
    out = np.empty(len(frames))
    busy = -np.inf
    for i in range(len(frames)):
        busy = max(sent[i], busy) + bits[i] / (rate_mbps * 1e6) * 1e9
        out[i] = busy + delay_ms * 1e6 - sent[i]
    return out


def hook_latency_ns(out: Path, frames: pd.DataFrame) -> np.ndarray:
    """The same frames timed by in-process hooks: sender's send call -> receiver's RTP handler
    (the endpoint records' packets and packets_in: when the stack's own code saw them)."""
    sent = EndpointRecord.read(out, "sender")["packets"]
    got = EndpointRecord.read(out, "receiver")["packets_in"]
    first = sent[sent.kind == "media"].groupby("rtp_ts").t_ns.min()
    last = got[got.kind == "media"].groupby("rtp_ts").t_ns.max()
    lat = (last - first).dropna()
    result: np.ndarray = frames.rtp_ts.map(lat).dropna().to_numpy(dtype=np.float64)
    return result


def cpu_share(out: Path, role: str) -> float:
    """CPU seconds per wall second of an endpoint process (its record)."""
    cpu = EndpointRecord.read(out, role).info["cpu"]
    return float(cpu["cpu_s"] / cpu["wall_s"])


def _q(values: np.ndarray, p: float) -> float:
    return float(np.percentile(values, p)) / 1e6 if len(values) else float("nan")


def run_floor_bench(
    run: str, bitrates: list[float], seconds: float, say: Say, video: bool = True,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """extra: stream keys for every session (stack: chromium, pacing_factor: 100, ...)."""
    extra = dict(extra or {})
    topo = load_topology(P2P)
    rate, delay = topo.links[0].uplink.rate_mbps or 10.0, topo.links[0].uplink.delay_ms
    rows: list[dict[str, Any]] = []
    stack = extra.get("stack", "aiortc")
    say(f"lossless, {rate:g} Mbps / {delay:g} ms, synthetic 30 fps, {seconds:g} s each, stack "
        f"{stack}; latency - floor in ms")  # fmt: skip
    say(f"{'Mbps':>5} {'floor p50':>9} {'lat p50':>8} {'diff p50':>8} {'diff p99':>8} {'ratio':>6}"
        f" | {'hook p50':>8} {'hook p95':>8} {'hook p99':>8} | {'wire p95':>8} {'wire p99':>8}"
        f" | cpu snd/rcv | stalls")  # fmt: skip
    for bitrate in bitrates:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            spec = parse_stream({"bitrate_mbps": bitrate, "duration_s": seconds, "drain_s": 0.5,
                                 "warmup_s": WARMUP_SHARE * seconds, **extra}, "bench floor")  # fmt: skip
            res = run_stream(topo, spec, out, make_backend("emu"), "bench", run=run, seed=1)
            f = after_warmup(res.frames, spec.warmup_s)
            f = f[f.status == "complete"].sort_values("sent_first_ns")
            lat = f.latency_ns.astype("float64").to_numpy()
            floor = frame_floor_ns(f, rate, delay)
            diff = lat - floor
            hook = hook_latency_ns(out, f)
            cell = json.loads((out / "cell.json").read_text())
            stats = json.loads((out / "link-path-uplink.stats.json").read_text())
            cpu_s, cpu_r = cpu_share(out, "sender"), cpu_share(out, "receiver")
        row = {
            "bitrate_mbps": bitrate, "frames": len(f), "floor_p50_ms": _q(floor, 50),
            "latency_p50_ms": _q(lat, 50), "diff_p50_ms": _q(diff, 50), "diff_p99_ms": _q(diff, 99),
            "ratio_p50": float(np.median(lat) / np.median(floor)),
            "hook_p50_ms": _q(hook, 50), "hook_p95_ms": _q(hook, 95), "hook_p99_ms": _q(hook, 99),
            "wire_p95_ms": _q(lat, 95), "wire_p99_ms": _q(lat, 99),
            "cpu_sender": cpu_s, "cpu_receiver": cpu_r,
            "emulator_stalls_over_1ms": stats["stalls_over_1ms"],
            "achieved_mbps": cell["summary"]["achieved_mbps"],
        }  # fmt: skip
        rows.append(row)
        say(f"{bitrate:>5g} {row['floor_p50_ms']:>9.2f} {row['latency_p50_ms']:>8.2f} {row['diff_p50_ms']:>8.3f}"
            f" {row['diff_p99_ms']:>8.3f} {row['ratio_p50']:>6.3f} | {row['hook_p50_ms']:>8.2f}"
            f" {row['hook_p95_ms']:>8.2f} {row['hook_p99_ms']:>8.2f} | {row['wire_p95_ms']:>8.2f}"
            f" {row['wire_p99_ms']:>8.2f} | {100 * cpu_s:>4.0f}% / {100 * cpu_r:>3.0f}% | {row['emulator_stalls_over_1ms']}")  # fmt: skip
    if video:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            spec = parse_stream({"source": "video", "bitrate_mbps": 4, "duration_s": seconds,
                                 "width": 1280, "height": 720, "drain_s": 0.5, **extra},
                                "bench floor")  # fmt: skip
            res = run_stream(topo, spec, out, make_backend("emu"), "bench", run=run, seed=1)
            cpu_s, cpu_r = cpu_share(out, "sender"), cpu_share(out, "receiver")
        sent = res.frames[res.frames.status != "not_sent"]
        row = {
            "video": f"1280x720 VP8 4 Mbps ({stack})", "cpu_sender": cpu_s,
            "cpu_receiver": cpu_r, "frames_sent": len(sent),
            "frames_asked": len(res.frames), "achieved_mbps": res.summary["achieved_mbps"],
        }  # fmt: skip
        rows.append(row)
        say(f"720p30 VP8 at 4 Mbps: CPU sender {100 * row['cpu_sender']:.0f}% receiver "
            f"{100 * row['cpu_receiver']:.0f}% of a core; {len(sent)}/{len(res.frames)} frames "
            f"encoded and sent; achieved {row['achieved_mbps']:.2f} Mbps")  # fmt: skip
    return rows
