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

from testbed.seqnum import U16

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
    "target_bitrate_bps": "the bitrate the controller asked for when the frame was captured",
    "rtx_bytes": "IP bytes of the RTX packets the sender sent for the frame",
    "fec_packets": "FEC repair packets the sender sent for the frame",
    "fec_bytes": "IP bytes of those repair packets",
    "fec_recovered": "media packets of the frame the receiver rebuilt from FEC (its own log)",
    "completed_by": "media (no original lost) | fec (every lost one rebuilt by FEC first) | rtx (a retransmission was needed) | none",
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
    fec_pt: int | None = None,
    fec_blocks: list[dict[str, int]] | None = None,
    fec_recovered: list[Any] | None = None,
) -> pd.DataFrame:
    """One row per source frame; see COLUMNS. origin: wire RTP timestamp of pts 0.

    With FEC, a media packet also completes when its block becomes decodable on the
    receiver's wire: when its originals plus its repair packets that arrived reach k (the
    receiver rebuilds from originals and repair packets, not from retransmissions).
    """
    src = pd.DataFrame(
        source_frames,
        columns=["frame_id", "pts", "capture_ns", "size_bytes", "keyframe", "target_bitrate_bps"],
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
    packets["t_fec"] = _fec_decodable(packets, recv_wire, fec_pt, fec_blocks or [])
    packets["t_first"] = packets[["t_orig", "t_rtx", "t_fec"]].min(axis=1)
    packets["lost_first"] = packets["t_orig"].isna()
    packets["by_rtx"] = packets.lost_first & (packets.t_rtx <= packets.t_fec.fillna(np.inf))
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
        "by_rtx": g.by_rtx.sum(),
    }).reset_index().rename(columns={"ts": "rtp_ts"})  # fmt: skip
    frames = frames.merge(_per_ts_bytes(sent_wire, rtx_pt, "rtx"), on="rtp_ts", how="left")
    frames = frames.merge(_per_ts_bytes(sent_wire, fec_pt, "fec"), on="rtp_ts", how="left")
    rec = pd.DataFrame(fec_recovered or [], columns=["t_ns", "seq", "rtp_ts"])
    rec = rec.drop_duplicates(["seq", "rtp_ts"]).groupby("rtp_ts").size().rename("fec_recovered")
    frames = frames.merge(rec, left_on="rtp_ts", right_index=True, how="left")
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
    for col in ("packets", "wire_bytes", "packets_lost_first_try", "retransmissions", "nacks",
                "rtx_bytes", "fec_packets", "fec_bytes", "fec_recovered", "by_rtx"):  # fmt: skip
        table[col] = table[col].fillna(0).astype("int64")
    latency = table.complete_ns - table.sent_first_ns
    table["latency_ns"] = latency
    done = table.complete_ns.notna() & (latency <= giveup_ns)
    table["status"] = np.where(
        table.sent_first_ns.isna(), "not_sent", np.where(done, "complete", "lost")
    )
    table.loc[~done, ["complete_ns", "latency_ns"]] = pd.NA
    table["completed_by"] = np.select(
        [~done, table.packets_lost_first_try == 0, table.by_rtx == 0],
        ["none", "media", "fec"], default="rtx",
    )  # fmt: skip
    return table[list(COLUMNS)]


def _per_ts_bytes(wire: pd.DataFrame, pt: int | None, name: str) -> pd.DataFrame:
    """Packets and IP bytes of one payload type per RTP timestamp (RTX, FEC)."""
    cols = ["rtp_ts", f"{name}_packets", f"{name}_bytes"]
    if pt is None:
        return pd.DataFrame(columns=cols)
    sel = wire[(wire.kind == "rtp") & (wire.pt == pt)]
    g = sel.groupby("ts")
    out = pd.DataFrame({f"{name}_packets": g.size(), f"{name}_bytes": g.ip_bytes.sum()})
    return out.reset_index().rename(columns={"ts": "rtp_ts"})[cols]


def _fec_decodable(
    packets: pd.DataFrame, recv_wire: pd.DataFrame, fec_pt: int | None, blocks: list[dict[str, int]]
) -> pd.Series:
    """Per media packet: when its FEC block became decodable on the receiver's wire (NaN: never)."""
    if fec_pt is None or not blocks:
        return pd.Series(np.nan, index=packets.index, dtype="float64")
    rep = recv_wire[(recv_wire.kind == "rtp") & (recv_wire.pt == fec_pt)]
    repair_at = rep.groupby(["seq", "ts"]).t_ns.min().to_dict()
    index = {
        (int(s), int(t)): i for i, (s, t) in enumerate(zip(packets.seq, packets.ts, strict=True))
    }
    t_orig = packets.t_orig.to_numpy(dtype="float64")
    at_fec = np.full(len(packets), np.nan)
    for b in blocks:
        rows = [index.get(((b["first_seq"] + i) % U16, b["ts"])) for i in range(b["k"])]
        times = [t_orig[r] for r in rows if r is not None]
        times = [t for t in times if not np.isnan(t)]
        times += [repair_at[key] for j in range(b["m"])
                  if (key := ((b["repair_first_seq"] + j) % U16, b["ts"])) in repair_at]  # fmt: skip
        if len(times) >= b["k"]:
            at = sorted(times)[b["k"] - 1]
            for r in rows:
                if r is not None:
                    at_fec[r] = at
    return pd.Series(at_fec, index=packets.index)


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
