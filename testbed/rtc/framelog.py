"""The per-frame table, built from wire captures (timing) and endpoint records (identity). Pure.

A frame is the set of media RTP packets with one RTP timestamp on the sender's wire. Each of
its packets completes at its first arrival on the receiver's wire, as the original, as an RTX
retransmission, or when its FEC block becomes decodable (the sender's record says what each
packet it sent was: media, rtx of which original, fec protecting which). Latency =
complete_ns - sent_first_ns. All times CLOCK_MONOTONIC ns (namespaces share the host clock).
The same columns for every stack: only the endpoint records (testbed.rtc.record) cross in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from testbed.rtc.record import EndpointRecord
from testbed.seqnum import U16

COLUMNS = {
    "frame_id": "frame index at the source (0, 1, ...), from the RTP timestamp on the wire",
    "rtp_ts": "RTP timestamp on the wire",
    "capture_ns": "when the source produced the frame",
    "sent_first_ns": "first packet of the frame on the sender's wire",
    "sent_last_ns": "last original packet of the frame on the sender's wire",
    "recv_first_ns": "first packet of the frame on the receiver's wire",
    "complete_ns": "the arrival on the receiver's wire that completed the frame (null if never)",
    "jitterbuffer_out_ns": "when the receiver's jitter buffer released the frame (its record; null if never)",
    "latency_ns": "complete_ns - sent_first_ns (null if never complete)",
    "latency_dropaware_ns": "latency_ns; for a lost frame, the wait until the next frame that completes (its complete_ns - this frame's sent_first_ns; null if none does, or not sent)",
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
PTS_TOLERANCE = 2  # 90 kHz ticks: an encoder's time-base conversion may round a timestamp


def after_warmup(frames: pd.DataFrame, warmup_s: float) -> pd.DataFrame:
    """The frames captured warmup_s or more after the first one: the one definition of the
    warm-up that the summary, the analysis and the benchmarks leave out."""
    if warmup_s <= 0 or frames.empty:
        return frames
    return frames[frames.capture_ns >= frames.capture_ns.min() + warmup_s * 1e9]


def _first_times(df: pd.DataFrame, keys: list[str], name: str) -> pd.DataFrame:
    return df.groupby(keys, as_index=False)["t_ns"].min().rename(columns={"t_ns": name})


def label_wire(wire: pd.DataFrame, sent_packets: pd.DataFrame) -> pd.DataFrame:
    """Wire RTP rows with what the sender's record says each packet was (kind, original_seq,
    protected), joined on (SSRC, sequence, RTP timestamp); packets it never sent are left out."""
    ident = sent_packets[["ssrc", "seq", "rtp_ts", "kind", "original_seq", "protected", "mask"]]
    ident = ident.drop_duplicates(["ssrc", "seq", "rtp_ts"]).rename(columns={"rtp_ts": "ts"})
    ident = ident.astype({"ssrc": "int64", "seq": "int64", "ts": "int64"})
    rtp = wire[wire.kind == "rtp"].drop(columns=["kind"])
    rtp = rtp.astype({"ssrc": "int64", "seq": "int64", "ts": "int64"})
    return rtp.merge(ident, on=["ssrc", "seq", "ts"], how="inner")


def frame_table(
    sender: EndpointRecord,
    receiver: EndpointRecord,
    sent_wire: pd.DataFrame,
    recv_wire: pd.DataFrame,
    giveup_ns: int,
    sizes_from_wire: bool = False,
) -> pd.DataFrame:
    """The per-frame table of one session from its two endpoint records and wire captures
    (both filtered to sender -> receiver). sizes_from_wire: the source made pictures that the
    stack encoded, so size_bytes is the media payload on the wire."""
    rcv, fb = receiver["frames"], receiver["feedback"]
    table = build_frame_table(
        sender["frames"], sender["packets"], sent_wire, recv_wire,
        released=rcv[rcv.event == "released"][["t_ns", "rtp_ts"]],
        nack_entries=fb[fb.kind == "nack"][["t_ns", "seq"]],
        recovered=receiver["recovered"], giveup_ns=giveup_ns,
    )  # fmt: skip
    if sizes_from_wire:
        table["size_bytes"] = _wire_payload_sizes(table, label_wire(sent_wire, sender["packets"]))
    return table


def build_frame_table(
    source_frames: pd.DataFrame,
    sent_packets: pd.DataFrame,
    sent_wire: pd.DataFrame,
    recv_wire: pd.DataFrame,
    released: pd.DataFrame,
    nack_entries: pd.DataFrame,
    recovered: pd.DataFrame,
    giveup_ns: int,
) -> pd.DataFrame:
    """One row per source frame; see COLUMNS. The inputs are endpoint-record tables
    (testbed.rtc.record): the sender's frames and packets; the receiver's released frames
    (t_ns, rtp_ts), NACK entries (t_ns, seq) and FEC-recovered packets (t_ns, seq, rtp_ts).

    With FEC, a media packet also completes when its block becomes decodable on the
    receiver's wire: when its originals plus its repair packets that arrived reach k (the
    receiver rebuilds from originals and repair packets, not from retransmissions).
    """
    src = source_frames.rename(columns={"rtp_ts": "src_rtp_ts"})
    if src.empty or src.src_rtp_ts.isna().all() or not (sent_packets.kind == "media").any():
        return _empty_table(source_frames)
    sent_all = label_wire(sent_wire, sent_packets)
    recv_all = label_wire(recv_wire, sent_packets)
    sent_media = sent_all[sent_all.kind == "media"]
    sent = _first_times(sent_media, ["seq", "ts"], "t_sent")
    sent = sent.merge(
        sent_media.drop_duplicates(["seq", "ts"])[["seq", "ts", "ip_bytes"]], on=["seq", "ts"]
    )
    arrived = _first_times(recv_all[recv_all.kind == "media"], ["seq", "ts"], "t_orig")
    packets = sent.merge(arrived, on=["seq", "ts"], how="left")
    sent_all, recv_all = _infer_rtx_originals(sent_all, recv_all, packets)
    rtx_recv = _as_original(recv_all[recv_all.kind == "rtx"])
    rtx_first = _first_times(rtx_recv, ["seq", "ts"], "t_rtx")
    packets = packets.merge(rtx_first, on=["seq", "ts"], how="left")
    rtx_sent = _as_original(sent_all[sent_all.kind == "rtx"])
    rtx_count = rtx_sent.groupby(["seq", "ts"], as_index=False).size()
    rtx_count = rtx_count.rename(columns={"size": "retransmissions"})
    packets = packets.merge(rtx_count, on=["seq", "ts"], how="left")
    packets["retransmissions"] = packets["retransmissions"].fillna(0).astype("int64")
    masked = _masked_fec(sent_all, packets)
    by_block = _fec_decodable(packets, recv_all, _fec_blocks(sent_packets))
    packets["t_fec"] = np.fmin(by_block, _mask_decodable(packets, recv_all, masked))
    sent_all = _fec_to_frames(sent_all, masked)
    packets["t_first"] = packets[["t_orig", "t_rtx", "t_fec"]].min(axis=1)
    packets["lost_first"] = packets["t_orig"].isna()
    packets["by_rtx"] = packets.lost_first & (packets.t_rtx <= packets.t_fec.fillna(np.inf))
    packets["nacks"] = _nacks_per_packet(packets, nack_entries)

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
    frames = frames.merge(_per_ts_bytes(sent_all, "rtx"), on="rtp_ts", how="left")
    frames = frames.merge(_per_ts_bytes(sent_all, "fec"), on="rtp_ts", how="left")
    rec = recovered.drop_duplicates(["seq", "rtp_ts"]).groupby("rtp_ts").size()
    frames = frames.merge(
        rec.rename("fec_recovered"), left_on="rtp_ts", right_index=True, how="left"
    )
    # wire frames to source frames by RTP timestamp, relative to the first source frame's (so a
    # wrap of the 32-bit clock cannot break the order), to the nearest within a tick or two
    origin = int(src.src_rtp_ts.dropna().iloc[0])

    def rel(ts: pd.Series) -> pd.Series:
        r = (ts.astype("int64") - origin) % U32
        return r.where(r < U32 // 2, r - U32)

    frames["rel"] = rel(frames.rtp_ts)
    keyed = src.dropna(subset=["src_rtp_ts"])
    keyed = pd.DataFrame({"frame_id": keyed.frame_id, "rel": rel(keyed.src_rtp_ts)}).sort_values(
        "rel"
    )
    frames = pd.merge_asof(
        frames.sort_values("rel"), keyed, on="rel", direction="nearest", tolerance=PTS_TOLERANCE
    ).dropna(subset=["frame_id"])
    frames["frame_id"] = frames["frame_id"].astype("int64")
    jb = released.groupby("rtp_ts", as_index=False).t_ns.min()
    jb = jb.rename(columns={"t_ns": "jitterbuffer_out_ns"}).astype({"rtp_ts": "int64"})
    frames = frames.merge(jb, on="rtp_ts", how="left").drop(columns=["rel"])
    table = src.merge(frames, on="frame_id", how="left")
    table["rtp_ts"] = table.rtp_ts.fillna(table.src_rtp_ts).astype("int64")
    for col in ("sent_first_ns", "sent_last_ns", "recv_first_ns", "complete_ns",
                "jitterbuffer_out_ns"):  # fmt: skip
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
    table["latency_dropaware_ns"] = drop_aware_latency(table)
    return table[list(COLUMNS)]


def drop_aware_latency(table: pd.DataFrame) -> pd.Series:
    """What a viewer waits for each sent frame (the studies of AI video chat report it): a
    complete frame its latency; a lost one until the next frame (in frame order) that does
    complete arrives, counted from its own first packet; null for frames never sent or with
    no complete frame after them."""
    order = table.sort_values("frame_id")
    completes = order.complete_ns.where(order.status == "complete")
    next_complete = completes[::-1].cummin()[::-1].bfill()  # the first completion from here on
    wait = (next_complete - order.sent_first_ns).where(order.status != "not_sent")
    out = order.latency_ns.where(order.status == "complete", wait)
    return out.reindex(table.index).astype("Int64")


def _infer_rtx_originals(sent_labelled: pd.DataFrame, recv_labelled: pd.DataFrame,
                         packets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """RTX packets whose original is unreadable (SRTP encrypts the payload that names it) get
    one inferred: an RTX packet keeps its frame's RTP timestamp, so the n-th retransmission of a
    frame (in send order) repairs the frame's n-th original lost on the wire (by sequence
    number, cycling for repeats; all its originals where none was lost)."""
    rtx = sent_labelled[(sent_labelled.kind == "rtx") & sent_labelled.original_seq.isna()]
    if rtx.empty:
        return sent_labelled, recv_labelled
    lost = packets[packets.t_orig.isna()].sort_values("seq").groupby("ts").seq.apply(list)
    every = packets.sort_values("t_sent").groupby("ts").seq.apply(list)
    guess: dict[tuple[int, int, int], int] = {}
    for ts, group in rtx.sort_values("t_ns").drop_duplicates(["ssrc", "seq", "ts"]).groupby("ts"):
        pool = lost.get(ts) or every.get(ts)
        if not pool:
            continue
        for n, (ssrc, seq) in enumerate(zip(group.ssrc, group.seq, strict=True)):
            guess[(int(ssrc), int(seq), int(ts))] = int(pool[n % len(pool)])

    def fill(df: pd.DataFrame) -> pd.DataFrame:
        keys = list(zip(df.ssrc, df.seq, df.ts, strict=True))
        inferred = pd.array(
            [guess.get((int(a), int(b), int(c))) for a, b, c in keys], dtype="Int64"
        )
        out = df.copy()
        todo = (out.kind == "rtx") & out.original_seq.isna()
        out.loc[todo, "original_seq"] = inferred[todo.to_numpy()]
        return out[~((out.kind == "rtx") & out.original_seq.isna())]

    return fill(sent_labelled), fill(recv_labelled)


def _as_original(rtx: pd.DataFrame) -> pd.DataFrame:
    """RTX rows keyed by the original they carry (seq := original_seq)."""
    return rtx.assign(seq=rtx.original_seq.astype("int64"))


def _wire_payload_sizes(frames: pd.DataFrame, sent_labelled: pd.DataFrame) -> Any:
    """Encoded frames: bytes on the wire minus IP/UDP/RTP/SRTP overheads, per RTP timestamp."""
    media = sent_labelled[sent_labelled.kind == "media"].drop_duplicates(["seq", "ts"])
    per = (media.ip_bytes - 28 - 12 - 12 - 10).groupby(media.ts).sum()
    return frames.rtp_ts.map(per).fillna(0).astype("int64")


def _per_ts_bytes(labelled: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Packets and IP bytes of one kind (rtx, fec) per RTP timestamp, on a labelled wire."""
    cols = ["rtp_ts", f"{kind}_packets", f"{kind}_bytes"]
    g = labelled[labelled.kind == kind].groupby("ts")
    out = pd.DataFrame({f"{kind}_packets": g.size(), f"{kind}_bytes": g.ip_bytes.sum()})
    return out.reset_index().rename(columns={"ts": "rtp_ts"}).reindex(columns=cols)


def _fec_blocks(sent_packets: pd.DataFrame) -> list[tuple[int, int, int, list[int]]]:
    """(rtp ts, first protected seq, k, repair seqs) per FEC block, from the sender's record."""
    fec = sent_packets[(sent_packets.kind == "fec") & sent_packets.original_seq.notna()
                       & sent_packets["mask"].isna()]  # fmt: skip
    return [
        (int(ts), int(first), int(group.protected.iloc[0]), [int(x) for x in group.seq])
        for (ts, first), group in fec.groupby(["rtp_ts", "original_seq"])
    ]


def _masked_fec(sent_labelled: pd.DataFrame, packets: pd.DataFrame) -> pd.DataFrame:
    """FEC packets with a protection mask (ULPFEC, FlexFEC), one row each: (ssrc, seq, ts) on
    the wire, the media rows of `packets` they protect (`members`), and `frame_ts`: the RTP
    timestamp of the newest frame they protect (FlexFEC packets run a clock of their own).
    A protected sequence number is the media packet with it sent last before the FEC packet."""
    fec = sent_labelled[(sent_labelled.kind == "fec") & sent_labelled["mask"].notna()]
    fec = fec.sort_values("t_ns").drop_duplicates(["ssrc", "seq", "ts"])
    cols = ["ssrc", "seq", "ts", "members", "frame_ts"]
    if fec.empty:
        return pd.DataFrame(columns=cols)
    by_seq: dict[int, list[tuple[float, int]]] = {}
    for i, (seq, t) in enumerate(zip(packets.seq, packets.t_sent, strict=True)):
        by_seq.setdefault(int(seq), []).append((float(t), i))
    for rows in by_seq.values():
        rows.sort()
    ts_of = packets.ts.to_numpy()
    out = []
    for ssrc, seq, ts, t, base, mask in zip(fec.ssrc, fec.seq, fec.ts, fec.t_ns,
                                            fec.original_seq, fec["mask"], strict=True):  # fmt: skip
        members = []
        for bit in range(int(mask).bit_length()):
            if int(mask) >> bit & 1:
                sent = [i for tt, i in by_seq.get((int(base) + bit) % U16, []) if tt <= t]
                if sent:
                    members.append(sent[-1])
        frame_ts = int(ts_of[max(members)]) if members else int(ts)
        out.append((int(ssrc), int(seq), int(ts), members, frame_ts))
    return pd.DataFrame(out, columns=cols)


def _mask_decodable(packets: pd.DataFrame, recv_labelled: pd.DataFrame,
                    masked: pd.DataFrame) -> pd.Series:  # fmt: skip
    """Per media packet: when XOR repair packets with masks could first rebuild it on the
    receiver's wire (NaN: never). A repair packet rebuilds its one missing member once it and
    all its other members are there (originals, or packets rebuilt before): iterated to a
    fixed point, as a receiver's recovery loop does."""
    none = pd.Series(np.nan, index=packets.index, dtype="float64")
    if masked.empty:
        return none
    arrived = recv_labelled[recv_labelled.kind == "fec"].groupby(["ssrc", "seq", "ts"]).t_ns.min()
    have = packets.t_orig.to_numpy(dtype="float64").copy()
    have[np.isnan(have)] = np.inf
    repairs = []
    for ssrc, seq, ts, members in zip(masked.ssrc, masked.seq, masked.ts, masked.members,
                                      strict=True):  # fmt: skip
        at = arrived.get((ssrc, seq, ts))
        if at is not None and members:
            repairs.append((float(at), np.asarray(members, dtype="int64")))
    for _ in range(20):
        changed = False
        for at, members in repairs:
            times = have[members]
            missing = np.isinf(times)
            if missing.sum() != 1:
                continue
            j = members[missing.argmax()]
            others = times[~missing]
            when = max(at, float(others.max()) if len(others) else at)
            if when < have[j]:
                have[j] = when
                changed = True
        if not changed:
            break
    rebuilt = np.where(packets.t_orig.isna().to_numpy() & np.isfinite(have), have, np.nan)
    return pd.Series(rebuilt, index=packets.index)


def _fec_to_frames(sent_labelled: pd.DataFrame, masked: pd.DataFrame) -> pd.DataFrame:
    """Masked FEC rows carry the RTP timestamp of the frame they protect (for per-frame counts)."""
    if masked.empty:
        return sent_labelled
    key = masked.set_index(["ssrc", "seq", "ts"]).frame_ts
    idx = pd.MultiIndex.from_frame(sent_labelled[["ssrc", "seq", "ts"]])
    frame_ts = key.reindex(idx).to_numpy()
    fec = (sent_labelled.kind == "fec").to_numpy() & ~pd.isna(frame_ts)
    out = sent_labelled.copy()
    out.loc[fec, "ts"] = frame_ts[fec].astype("int64")
    return out


def _fec_decodable(
    packets: pd.DataFrame,
    recv_labelled: pd.DataFrame,
    blocks: list[tuple[int, int, int, list[int]]],
) -> pd.Series:
    """Per media packet: when its FEC block became decodable on the receiver's wire (NaN: never)."""
    if not blocks:
        return pd.Series(np.nan, index=packets.index, dtype="float64")
    rep = recv_labelled[recv_labelled.kind == "fec"]
    repair_at = rep.groupby(["seq", "ts"]).t_ns.min().to_dict()
    index = {
        (int(s), int(t)): i for i, (s, t) in enumerate(zip(packets.seq, packets.ts, strict=True))
    }
    t_orig = packets.t_orig.to_numpy(dtype="float64")
    at_fec = np.full(len(packets), np.nan)
    for ts, first, k, repairs in blocks:
        rows = [index.get(((first + i) % U16, ts)) for i in range(k)]
        times = [t_orig[r] for r in rows if r is not None]
        times = [t for t in times if not np.isnan(t)]
        times += [repair_at[(seq, ts)] for seq in repairs if (seq, ts) in repair_at]
        if len(times) >= k:
            at = sorted(times)[k - 1]
            for r in rows:
                if r is not None:
                    at_fec[r] = at
    return pd.Series(at_fec, index=packets.index)


def _nacks_per_packet(packets: pd.DataFrame, nack_entries: pd.DataFrame) -> pd.Series:
    """NACK entries per packet: each requested seq goes to the latest packet sent before it."""
    if nack_entries.empty:
        return pd.Series(0, index=packets.index, dtype="int64")
    req = nack_entries[["t_ns", "seq"]].sort_values("t_ns")
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
    table["rtp_ts"] = table["rtp_ts"].astype("Int64")
    for col in COLUMNS:
        if col not in table:
            table[col] = pd.NA
    table["status"] = "not_sent"
    return table[list(COLUMNS)]
