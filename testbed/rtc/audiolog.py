"""The per-packet audio table, from the two wire captures. Pure.

Audio is not repaired (neither stack NACKs it), so a packet is one RTP packet with an audio
payload type on the sender's wire; it arrives at its first copy on the receiver's wire
(matched on SSRC, sequence number and RTP timestamp, which SRTP leaves in clear) or never.
latency_ns = recv_ns - sent_ns: the one-way delay of the voice, beside the video's frame
latency. All times CLOCK_MONOTONIC ns (the captures' kernel stamps).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from testbed.rtc.wirelog import first_arrivals

COLUMNS = {
    "ssrc": "the audio stream's SSRC",
    "seq": "RTP sequence number",
    "rtp_ts": "RTP timestamp (48 kHz for Opus)",
    "pt": "payload type",
    "sent_ns": "the packet on the sender's wire",
    "recv_ns": "its first arrival on the receiver's wire (null if never)",
    "latency_ns": "recv_ns - sent_ns (null if lost)",
    "ip_bytes": "IP bytes on the sender's wire",
    "status": "received | lost",
}


def audio_table(sent_wire: pd.DataFrame, recv_wire: pd.DataFrame,
                audio_pts: Collection[int]) -> pd.DataFrame:  # fmt: skip
    """One row per audio packet the sender's wire carried (the session's media direction:
    testbed.rtc.mediapath.media_flow), in the order sent."""
    pts = list(audio_pts)
    sent = sent_wire[(sent_wire.kind == "rtp") & sent_wire.pt.isin(pts)]
    recv = recv_wire[(recv_wire.kind == "rtp") & recv_wire.pt.isin(pts)]
    out = first_arrivals(sent, recv)[["ssrc", "seq", "ts", "pt", "t_ns", "ip_bytes", "recv_ns"]]
    out = out.rename(columns={"ts": "rtp_ts", "t_ns": "sent_ns"})
    out["recv_ns"] = out.recv_ns.astype("Int64")
    out["latency_ns"] = (out.recv_ns - out.sent_ns).astype("Int64")
    out["status"] = np.where(out.recv_ns.isna(), "lost", "received")
    return out[list(COLUMNS)].astype({"ssrc": "int64", "seq": "int64", "rtp_ts": "int64",
                                      "pt": "int64", "sent_ns": "int64", "ip_bytes": "int64"})  # fmt: skip


def summarize_audio(audio: pd.DataFrame, warmup_s: float) -> dict[str, Any]:
    """Packets, loss and one-way latency of the audio after the warm-up (as the video's)."""
    if warmup_s > 0 and not audio.empty:
        audio = audio[audio.sent_ns >= audio.sent_ns.min() + warmup_s * 1e9]
    got = audio[audio.status == "received"]
    lat = got.latency_ns.astype("float64").to_numpy() / 1e6
    span = (audio.sent_ns.max() - audio.sent_ns.min()) / 1e9 if len(audio) > 1 else 0.0

    def q(p: float) -> float | None:
        return float(np.percentile(lat, p)) if len(lat) else None

    return {
        "packets": len(audio), "lost": int((audio.status == "lost").sum()),
        "kbps": float(audio.ip_bytes.sum() * 8 / span / 1e3) if span else None,
        "latency_ms": {"p50": q(50), "p95": q(95), "p99": q(99)},
    }  # fmt: skip
