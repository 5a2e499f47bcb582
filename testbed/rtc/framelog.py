"""The per-frame table, built from wire captures (timing) and endpoint taps (identity). Pure.

A frame is the set of media RTP packets with one RTP timestamp on the sender's wire. Each of
its packets completes at its first arrival on the receiver's wire, as the original or as an RTX
retransmission (the sender's tap says which original an RTX packet carried). Latency =
complete_ns - sent_first_ns. All times CLOCK_MONOTONIC ns (namespaces share the host clock).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

COLUMNS = {
    "frame_id": "frame index at the source (0, 1, ...), from the RTP timestamp on the wire",
    "rtp_ts": "RTP timestamp on the wire",
    "capture_ns": "when the source produced the frame",
    "sent_first_ns": "first packet of the frame on the sender's wire",
    "sent_last_ns": "last original packet of the frame on the sender's wire",
    "recv_first_ns": "first packet of the frame on the receiver's wire",
    "complete_ns": "the arrival on the receiver's wire that completed the frame (null if never)",
    "jitterbuffer_out_ns": "when aiortc's jitter buffer released the frame (null if never)",
    "latency_ns": "complete_ns - sent_first_ns (null if never complete)",
    "size_bytes": "frame payload bytes (synthetic: exact; video: sum of RTP payloads)",
    "wire_bytes": "IP bytes of the frame's original packets on the sender's wire",
    "packets": "original RTP packets of the frame",
    "packets_lost_first_try": "originals that never reached the receiver's wire",
    "retransmissions": "RTX packets the sender sent for the frame",
    "nacks": "packet requests (NACK entries) the receiver sent for the frame",
    "keyframe": "key frame (synthetic: by period; video: from the source)",
    "status": "complete | lost (not complete within giveup_ms) | not_sent (e.g. the encoder dropped it)",
}

U32 = 1 << 32
PTS_TOLERANCE = 2  # 90 kHz ticks


def _first_times(df: pd.DataFrame, keys: list[str], name: str) -> pd.DataFrame:
    return df.groupby(keys, as_index=False)["t_ns"].min().rename(columns={"t_ns": name})


def build_frame_table(
    source_frames: list[Any],
    tap_packets: list[Any],
    sent_wire: pd.DataFrame,
    recv_wire: pd.DataFrame,
    jitter_frames: list[Any],
    nacks: list[Any],
    media_pt: int,
    rtx_pt: int | None,
    giveup_ns: int,
    origin: int | None,
) -> pd.DataFrame:
    """One row per source frame; see COLUMNS. origin: wire RTP timestamp of pts 0."""
    src = pd.DataFrame(
        source_frames, columns=["frame_id", "pts", "capture_ns", "size_bytes", "keyframe"]
    )
    tap = pd.DataFrame(tap_packets, columns=["t_ns", "pt", "ssrc", "seq", "ts", "marker", "osn"])
    media_tap = tap[tap.pt == media_pt]
    if media_tap.empty or src.empty or origin is None:
        return _empty_table(src)

    def media(df: pd.DataFrame) -> pd.DataFrame:
        return df[(df.kind == "rtp") & (df.pt == media_pt)]

    sent_media = media(sent_wire)
    sent = _first_times(sent_media, ["seq", "ts"], "t_sent")
    sent = sent.merge(
        sent_media.drop_duplicates(["seq", "ts"])[["seq", "ts", "ip_bytes"]], on=["seq", "ts"]
    )
    arrived = _first_times(media(recv_wire), ["seq", "ts"], "t_orig")
    packets = sent.merge(arrived, on=["seq", "ts"], how="left")
    rtx_count = pd.DataFrame(columns=["seq", "ts", "retransmissions"])
    if rtx_pt is not None:
        rtx_map = tap[tap.pt == rtx_pt][["seq", "ts", "osn"]].drop_duplicates(["seq", "ts"])
        rtx_recv = recv_wire[(recv_wire.kind == "rtp") & (recv_wire.pt == rtx_pt)]
        rtx_recv = rtx_recv.merge(rtx_map, on=["seq", "ts"])
        rtx_first = _first_times(rtx_recv, ["osn", "ts"], "t_rtx").rename(columns={"osn": "seq"})
        packets = packets.merge(rtx_first, on=["seq", "ts"], how="left")
        rtx_sent = sent_wire[(sent_wire.kind == "rtp") & (sent_wire.pt == rtx_pt)]
        rtx_sent = rtx_sent.merge(rtx_map, on=["seq", "ts"])
        rtx_count = rtx_sent.groupby(["osn", "ts"], as_index=False).size()
        rtx_count = rtx_count.rename(columns={"osn": "seq", "size": "retransmissions"})
    else:
        packets["t_rtx"] = np.nan
    packets = packets.merge(rtx_count, on=["seq", "ts"], how="left")
    packets["retransmissions"] = packets["retransmissions"].fillna(0).astype("int64")
    packets["t_first"] = packets[["t_orig", "t_rtx"]].min(axis=1)
    packets["lost_first"] = packets["t_orig"].isna()
    packets["nacks"] = _nacks_per_packet(packets, nacks)

    g = packets.groupby("ts")
    frames = pd.DataFrame({
        "sent_first_ns": g.t_sent.min(),
        "sent_last_ns": g.t_sent.max(),
        "recv_first_ns": g.t_first.min(),
        "complete_ns": g.t_first.max().where(~g.t_first.apply(lambda s: s.isna().any())),
        "packets": g.size(),
        "wire_bytes": g.ip_bytes.sum(),
        "packets_lost_first_try": g.lost_first.sum(),
        "retransmissions": g.retransmissions.sum(),
        "nacks": g.nacks.sum(),
    }).reset_index().rename(columns={"ts": "rtp_ts"})  # fmt: skip
    # The encoder's time-base conversion may round a pts by a tick: match to the nearest.
    wire_pts = (frames.rtp_ts.astype("int64") - origin) % U32
    frames["wire_pts"] = wire_pts.where(wire_pts < U32 // 2, wire_pts - U32)  # -1 tick, not 2^32-1
    frames = pd.merge_asof(
        frames.sort_values("wire_pts"), src[["pts"]].sort_values("pts"),
        left_on="wire_pts", right_on="pts", direction="nearest", tolerance=PTS_TOLERANCE,
    ).dropna(subset=["pts"])  # fmt: skip
    frames["pts"] = frames["pts"].astype("int64")
    jb = pd.DataFrame(jitter_frames, columns=["jitterbuffer_out_ns", "rtp_ts", "jb_bytes", "head"])
    jb = jb.groupby("rtp_ts", as_index=False).jitterbuffer_out_ns.min()
    frames = frames.merge(jb, on="rtp_ts", how="left").drop(columns=["wire_pts"])
    table = src.merge(frames, on="pts", how="left")
    table["rtp_ts"] = table.rtp_ts.fillna((table.pts + origin) % U32).astype("int64")
    for col in (
        "sent_first_ns",
        "sent_last_ns",
        "recv_first_ns",
        "complete_ns",
        "jitterbuffer_out_ns",
    ):
        table[col] = table[col].round().astype("Int64")
    for col in ("packets", "wire_bytes", "packets_lost_first_try", "retransmissions", "nacks"):
        table[col] = table[col].fillna(0).astype("int64")
    latency = table.complete_ns - table.sent_first_ns
    table["latency_ns"] = latency
    done = table.complete_ns.notna() & (latency <= giveup_ns)
    table["status"] = np.where(
        table.sent_first_ns.isna(), "not_sent", np.where(done, "complete", "lost")
    )
    table.loc[~done, ["complete_ns", "latency_ns"]] = pd.NA
    return table[list(COLUMNS)]


def _nacks_per_packet(packets: pd.DataFrame, nacks: list[Any]) -> pd.Series:
    """NACK entries per packet: each requested seq goes to the latest packet sent before it."""
    rows = [(t, seq) for t, seqs in nacks for seq in seqs]
    if not rows:
        return pd.Series(0, index=packets.index, dtype="int64")
    req = pd.DataFrame(rows, columns=["t_ns", "seq"]).sort_values("t_ns")
    sent = packets[["seq", "ts", "t_sent"]].sort_values("t_sent")
    req["seq"] = req["seq"].astype(sent["seq"].dtype)
    req["t_ns"] = req["t_ns"].astype("float64")
    sent = sent.assign(t_sent=sent["t_sent"].astype("float64"))
    matched = pd.merge_asof(
        req, sent, left_on="t_ns", right_on="t_sent", by="seq", direction="backward"
    )
    counts = matched.dropna(subset=["ts"]).groupby(["seq", "ts"]).size()
    key = pd.MultiIndex.from_frame(packets[["seq", "ts"]])
    return pd.Series(counts.reindex(key).fillna(0).astype("int64").to_numpy(), index=packets.index)


def _empty_table(src: pd.DataFrame) -> pd.DataFrame:
    table = src.copy()
    for col in COLUMNS:
        if col not in table:
            table[col] = pd.NA
    table["status"] = "not_sent"
    return table[list(COLUMNS)]
