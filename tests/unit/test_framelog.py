"""The per-frame table from hand-made endpoint records and wire captures: loss, RTX mapping,
FEC, give-up, jitter buffer, and the one warm-up rule."""

from __future__ import annotations

from typing import Any

import pandas as pd

from testbed.rtc.framelog import COLUMNS, after_warmup, frame_table
from testbed.rtc.record import EndpointRecord
from testbed.rtc.record import table as record_table

MEDIA, RTX, FEC = 97, 98, 120
SSRC = {MEDIA: 1, RTX: 2, FEC: 3}
ORIGIN = 1000
MS = 1_000_000


def wire(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """rows of (t_ns, pt, seq, ts) as capture.to_frame makes them."""
    return pd.DataFrame(
        [(t, "a", "b", 1368, "rtp", pt, 0, seq, ts, SSRC[pt]) for t, pt, seq, ts in rows],
        columns=["t_ns", "src", "dst", "ip_bytes", "kind", "pt", "marker", "seq", "ts", "ssrc"],
    )


def _sent() -> pd.DataFrame:
    return wire([(1 * MS, MEDIA, 10, ORIGIN), (2 * MS, MEDIA, 11, ORIGIN),
                 (34 * MS, MEDIA, 12, ORIGIN + 3000), (35 * MS, MEDIA, 13, ORIGIN + 3000),
                 (100 * MS, RTX, 500, ORIGIN + 3000), (101 * MS, RTX, 501, ORIGIN + 3000)])  # fmt: skip


def _recv() -> pd.DataFrame:
    return wire([(31 * MS, MEDIA, 10, ORIGIN), (32 * MS, MEDIA, 11, ORIGIN),
                 (65 * MS, MEDIA, 13, ORIGIN + 3000), (131 * MS, RTX, 501, ORIGIN + 3000)])  # fmt: skip


def records(origin: int = ORIGIN, fec: bool = False,
            recovered: list[Any] | None = None) -> tuple[EndpointRecord, EndpointRecord]:  # fmt: skip
    u32 = 1 << 32
    frames = [(0, 0, origin, 2000, True, 1e6), (1, 33 * MS, (origin + 3000) % u32, 2000, False, 1e6),
              (2, 66 * MS, (origin + 6000) % u32, 2000, False, 2e6)]  # fmt: skip
    packets: list[tuple[Any, ...]] = [
        (0, "media", 1, 10, ORIGIN, MEDIA, False, None, None, None),
        (0, "media", 1, 11, ORIGIN, MEDIA, True, None, None, None),
        (0, "media", 1, 12, ORIGIN + 3000, MEDIA, False, None, None, None),
        (0, "media", 1, 13, ORIGIN + 3000, MEDIA, True, None, None, None),
        (0, "rtx", 2, 500, ORIGIN + 3000, RTX, False, 12, None, None),
        (0, "rtx", 2, 501, ORIGIN + 3000, RTX, False, 12, None, None),
    ]
    if fec:  # one repair packet protecting seqs 12 and 13
        packets.append((0, "fec", 3, 900, ORIGIN + 3000, FEC, False, 12, 2, None))
    sender = EndpointRecord("sender", "test", tables={
        "frames": record_table("sender", "frames").frame(frames),
        "packets": record_table("sender", "packets").frame(packets),
    })  # fmt: skip
    receiver = EndpointRecord("receiver", "test", tables={
        "frames": record_table("receiver", "frames").frame(
            [(40 * MS, ORIGIN, "released", 2000), (140 * MS, ORIGIN + 3000, "released", 2000)]),
        "feedback": record_table("receiver", "feedback").frame(
            [(66 * MS, "nack", 12), (90 * MS, "nack", 12), (91 * MS, "pli", None)]),
        "recovered": record_table("receiver", "recovered").frame(recovered or []),
    })  # fmt: skip
    return sender, receiver


def table(giveup_ns: int = 1000 * MS, origin: int = ORIGIN, sent: pd.DataFrame | None = None,
          recv: pd.DataFrame | None = None, **kw: Any) -> pd.DataFrame:  # fmt: skip
    snd, rcv = records(origin, **kw)
    return frame_table(snd, rcv, _sent() if sent is None else sent,
                       _recv() if recv is None else recv, giveup_ns)  # fmt: skip


def test_columns_and_one_row_per_source_frame() -> None:
    t = table()
    assert list(t.columns) == list(COLUMNS)
    assert list(t.frame_id) == [0, 1, 2]


def test_clean_frame() -> None:
    f = table().iloc[0]
    assert f.status == "complete" and f.latency_ns == 31 * MS
    assert f.sent_first_ns == 1 * MS and f.sent_last_ns == 2 * MS and f.packets == 2
    assert f.jitterbuffer_out_ns == 40 * MS and f.packets_lost_first_try == 0


def test_frame_completed_by_the_second_retransmission() -> None:
    f = table().iloc[1]
    assert f.packets_lost_first_try == 1
    assert f.retransmissions == 2 and f.nacks == 2
    assert f.recv_first_ns == 65 * MS
    assert f.complete_ns == 131 * MS and f.latency_ns == (131 - 34) * MS


def test_give_up_makes_a_frame_lost() -> None:
    f = table(giveup_ns=50 * MS).iloc[1]
    assert f.status == "lost" and pd.isna(f.complete_ns) and pd.isna(f.latency_ns)


def test_frame_never_sent() -> None:
    f = table().iloc[2]
    assert f.status == "not_sent" and f.packets == 0 and f.rtp_ts == ORIGIN + 6000


def test_rtp_timestamp_rounded_by_a_tick_still_joins() -> None:
    t = table(origin=ORIGIN + 1)
    assert list(t.status) == ["complete", "complete", "not_sent"]


def test_rtp_clock_wrapping_inside_a_session_still_joins() -> None:
    """Frames on both sides of 2^32 keep their order (the join is relative to frame 0)."""
    base = (1 << 32) - 3000
    snd, rcv = records(origin=base)
    packets = snd["packets"].assign(rtp_ts=lambda d: (d.rtp_ts - ORIGIN + base) % (1 << 32))
    snd.tables["packets"] = packets
    shift = lambda w: w.assign(ts=(w.ts - ORIGIN + base) % (1 << 32))  # noqa: E731
    rcv.tables["frames"] = rcv["frames"].assign(
        rtp_ts=lambda d: (d.rtp_ts - ORIGIN + base) % (1 << 32)
    )
    t = frame_table(snd, rcv, shift(_sent()), shift(_recv()), 1000 * MS)
    assert list(t.status) == ["complete", "complete", "not_sent"]
    assert t.rtp_ts.tolist() == [base, 0, 3000]


def test_fec_completes_a_frame_before_the_retransmission() -> None:
    """Frame 1 lost seq 12; its block (12, 13; one repair) decodes when the repair arrives at
    67 ms, before the RTX at 131 ms: completed by FEC, latency 67 - 34 = 33 ms."""
    base = table()
    sent = pd.concat([wire([(36 * MS, FEC, 900, ORIGIN + 3000)]), _sent()])
    recv = pd.concat([wire([(67 * MS, FEC, 900, ORIGIN + 3000)]), _recv()])
    t = table(sent=sent, recv=recv, fec=True, recovered=[(68 * MS, 12, ORIGIN + 3000)])
    assert base.completed_by.tolist() == ["media", "rtx", "none"]
    assert t.completed_by.tolist() == ["media", "fec", "none"]
    assert t.latency_ns[1] == 33 * MS and base.latency_ns[1] == 97 * MS
    assert (
        t.fec_packets.tolist() == [0, 1, 0] and t.fec_bytes[1] == 1368 and t.fec_recovered[1] == 1
    )
    assert t.rtx_bytes[1] == 2 * 1368 and t.target_bitrate_bps.tolist() == [1e6, 1e6, 2e6]
    # the repair lost too: back to the retransmission
    t2 = table(sent=sent, fec=True)
    assert t2.completed_by[1] == "rtx" and t2.latency_ns[1] == 97 * MS


def test_packets_the_sender_never_recorded_are_not_media() -> None:
    """A wire packet with a media SSRC but a sequence the record lacks (a stray, a forgery)
    is not counted in any frame."""
    stray = pd.concat([_sent(), wire([(3 * MS, MEDIA, 77, ORIGIN)])])
    assert table(sent=stray).packets.tolist() == table().packets.tolist()


def test_warmup_is_measured_from_the_first_capture() -> None:
    t = table()
    assert after_warmup(t, 0.0) is t
    assert after_warmup(t, 0.033).frame_id.tolist() == [1, 2]


def _with_masked_fec(ts: int) -> tuple[EndpointRecord, EndpointRecord, pd.DataFrame, pd.DataFrame]:
    """Frame 1 (seqs 12, 13; 12 lost) plus one XOR repair packet whose mask covers 12 and 13,
    sent at 36 ms and arriving at 70 ms (before the RTX at 131 ms); `ts` is its own RTP
    timestamp (FlexFEC runs a clock of its own)."""
    snd, rcv = records()
    row = record_table("sender", "packets").frame([(0, "fec", 3, 900, ts, FEC, False, 12, 2, 0b11)])
    snd.tables["packets"] = pd.concat([snd["packets"], row], ignore_index=True)
    sent = pd.concat([_sent(), wire([(36 * MS, FEC, 900, ts)])], ignore_index=True)
    recv = pd.concat([_recv(), wire([(70 * MS, FEC, 900, ts)])], ignore_index=True)
    return snd, rcv, sent, recv


def test_a_masked_repair_packet_rebuilds_the_one_missing_packet() -> None:
    for own_clock in (ORIGIN + 3000, 777):
        snd, rcv, sent, recv = _with_masked_fec(own_clock)
        f = frame_table(snd, rcv, sent, recv, 1000 * MS).iloc[1]
        assert f.completed_by == "fec" and f.complete_ns == 70 * MS
        assert f.fec_packets == 1  # counted for the frame it protects, whatever its clock


def test_a_masked_repair_packet_with_two_missing_rebuilds_nothing() -> None:
    snd, rcv, sent, recv = _with_masked_fec(ORIGIN + 3000)
    recv = recv[~((recv.pt == MEDIA) & (recv.seq == 13))]  # 13 lost too
    f = frame_table(snd, rcv, sent, recv, 1000 * MS).iloc[1]
    assert f.completed_by != "fec" and f.packets_lost_first_try == 2


def test_rtx_originals_inferred_when_encrypted() -> None:
    """SRTP hides an RTX packet's original; the frame's lost original is inferred."""
    snd, rcv = records()
    snd.tables["packets"] = snd["packets"].assign(original_seq=pd.array([None] * 6, dtype="Int64"))
    f = frame_table(snd, rcv, _sent(), _recv(), 1000 * MS).iloc[1]
    assert f.completed_by == "rtx" and f.complete_ns == 131 * MS and f.retransmissions == 2
