"""RFC 8868's per-packet log of a session, from the two wire captures. Pure.

wire.parquet: one row per RTP packet the sender's wire carried towards the receiver (video,
its retransmissions and FEC, audio: `class` from the negotiated payload types) with its first
arrival on the receiver's wire (matched on SSRC, sequence number and RTP timestamp, which SRTP
leaves in clear), and one per RTCP packet the receiver's wire carried back (the feedback; no
arrival). What RFC 8868 asks a log to hold: time, payload type, SSRC, sequence number, RTP
timestamp, marker, size. Times CLOCK_MONOTONIC ns (the captures' kernel stamps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.rtc.wireid import PayloadTypes

COLUMNS = {
    "direction": "media (sender -> receiver) | feedback (receiver -> sender, RTCP)",
    "class": "video | rtx | fec | audio | rtcp | other",
    "ssrc": "RTP SSRC (null for RTCP)",
    "seq": "RTP sequence number (null for RTCP)",
    "rtp_ts": "RTP timestamp (null for RTCP)",
    "pt": "payload type (null for RTCP)",
    "marker": "RTP marker bit",
    "ip_bytes": "IP bytes",
    "sent_ns": "on the wire of the end that sent it",
    "recv_ns": "its first arrival on the other end's wire (media only; null: never)",
}
KEY = ["ssrc", "seq", "ts"]


def first_arrivals(sent: pd.DataFrame, recv: pd.DataFrame) -> pd.DataFrame:
    """sent's RTP packets (first copy of each SSRC/seq/ts, in the order sent) with recv_ns,
    the first time the other wire saw the same packet (NaN: never)."""
    sent = sent.sort_values("t_ns").drop_duplicates(KEY)
    first = recv.groupby(KEY, as_index=False)["t_ns"].min().rename(columns={"t_ns": "recv_ns"})
    return sent.merge(first, on=KEY, how="left")


def classify(pt: pd.Series, pts: PayloadTypes) -> np.ndarray:
    fec = {p for p in (pts.red, pts.ulpfec, pts.flexfec) if p is not None}
    return np.select([pt.isin(list(pts.media)), pt.isin(list(pts.rtx)), pt.isin(list(fec)),
                      pt.isin(list(pts.audio))], ["video", "rtx", "fec", "audio"], "other")  # fmt: skip


def wire_table(sent: pd.DataFrame, recv: pd.DataFrame, feedback: pd.DataFrame,
               pts: PayloadTypes) -> pd.DataFrame:  # fmt: skip
    """sent / recv: the media direction on the sender's / receiver's wire; feedback: the
    reverse direction on the receiver's wire (testbed.rtc.mediapath.media_flow)."""
    rtp = first_arrivals(sent[sent.kind == "rtp"], recv[recv.kind == "rtp"])
    media = pd.DataFrame({
        "direction": "media", "class": classify(rtp.pt, pts), "ssrc": rtp.ssrc, "seq": rtp.seq,
        "rtp_ts": rtp.ts, "pt": rtp.pt, "marker": rtp.marker.astype("boolean"),
        "ip_bytes": rtp.ip_bytes, "sent_ns": rtp.t_ns, "recv_ns": rtp.recv_ns,
    })  # fmt: skip
    rtcp = feedback[feedback.kind == "rtcp"]
    back = pd.DataFrame({"direction": "feedback", "class": "rtcp", "ip_bytes": rtcp.ip_bytes,
                         "sent_ns": rtcp.t_ns})  # fmt: skip
    out = pd.concat([media, back], ignore_index=True) if len(back) else media
    out = out.reindex(columns=list(COLUMNS))
    types = {"ssrc": "Int64", "seq": "Int64", "rtp_ts": "Int64", "pt": "Int64",
             "ip_bytes": "int64", "sent_ns": "int64", "recv_ns": "Int64"}  # fmt: skip
    return out.astype(types).sort_values("sent_ns", kind="stable").reset_index(drop=True)
