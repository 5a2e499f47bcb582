"""The per-frame table from hand-made wire records: loss, RTX mapping, give-up, jitter buffer."""

from __future__ import annotations

import pandas as pd

from testbed.rtc.framelog import COLUMNS, build_frame_table

MEDIA, RTX, ORIGIN = 97, 98, 1000
MS = 1_000_000


def wire(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """rows of (t_ns, pt, seq, ts) as capture.to_frame makes them."""
    return pd.DataFrame(
        [(t, "a", "b", 1368, "rtp", pt, 0, seq, ts, 1) for t, pt, seq, ts in rows],
        columns=["t_ns", "src", "dst", "ip_bytes", "kind", "pt", "marker", "seq", "ts", "ssrc"],
    )


def table(**kw: object) -> pd.DataFrame:
    src = [(0, 0, 0, 2000, True, 1e6), (1, 3000, 33 * MS, 2000, False, 1e6),
           (2, 6000, 66 * MS, 2000, False, 2e6)]  # fmt: skip
    tap = [
        (0, MEDIA, 1, 10, ORIGIN, 0, -1), (0, MEDIA, 1, 11, ORIGIN, 1, -1),
        (0, MEDIA, 1, 12, ORIGIN + 3000, 0, -1), (0, MEDIA, 1, 13, ORIGIN + 3000, 1, -1),
        (0, RTX, 2, 500, ORIGIN + 3000, 0, 12), (0, RTX, 2, 501, ORIGIN + 3000, 0, 12),
    ]  # fmt: skip
    sent = wire([(1 * MS, MEDIA, 10, ORIGIN), (2 * MS, MEDIA, 11, ORIGIN),
                 (34 * MS, MEDIA, 12, ORIGIN + 3000), (35 * MS, MEDIA, 13, ORIGIN + 3000),
                 (100 * MS, RTX, 500, ORIGIN + 3000), (101 * MS, RTX, 501, ORIGIN + 3000)])  # fmt: skip
    recv = wire([(31 * MS, MEDIA, 10, ORIGIN), (32 * MS, MEDIA, 11, ORIGIN),
                 (65 * MS, MEDIA, 13, ORIGIN + 3000), (131 * MS, RTX, 501, ORIGIN + 3000)])  # fmt: skip
    args = dict(
        source_frames=src, tap_packets=tap, sent_wire=sent, recv_wire=recv,
        jitter_frames=[(40 * MS, ORIGIN, 2000, b""), (140 * MS, ORIGIN + 3000, 2000, b"")],
        nacks=[(66 * MS, [12]), (90 * MS, [12])], media_pt=MEDIA, rtx_pt=RTX,
        giveup_ns=1000 * MS, origin=ORIGIN,
    )  # fmt: skip
    args.update(kw)
    return build_frame_table(**args)  # type: ignore[arg-type]


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
    assert f.status == "not_sent" and f.packets == 0


def test_pts_rounded_by_a_tick_still_joins() -> None:
    t = table(origin=ORIGIN + 1)
    assert list(t.status) == ["complete", "complete", "not_sent"]


FEC = 120


def test_fec_completes_a_frame_before_the_retransmission() -> None:
    """Frame 1 lost seq 12; its block (12, 13; one repair) decodes when the repair arrives at
    67 ms, before the RTX at 131 ms: completed by FEC, latency 67 - 34 = 33 ms."""
    base = table()
    sent = pd.concat([wire([(36 * MS, FEC, 900, ORIGIN + 3000)]), _sent()])
    recv = pd.concat([wire([(67 * MS, FEC, 900, ORIGIN + 3000)]), _recv()])
    t = table(sent_wire=sent, recv_wire=recv, fec_pt=FEC,
              fec_blocks=[{"ts": ORIGIN + 3000, "block_id": 0, "first_seq": 12, "k": 2, "m": 1, "repair_first_seq": 900}],
              fec_recovered=[(68 * MS, 12, ORIGIN + 3000)])  # fmt: skip
    assert base.completed_by.tolist() == ["media", "rtx", "none"]
    assert t.completed_by.tolist() == ["media", "fec", "none"]
    assert t.latency_ns[1] == 33 * MS and base.latency_ns[1] == 97 * MS
    assert (
        t.fec_packets.tolist() == [0, 1, 0] and t.fec_bytes[1] == 1368 and t.fec_recovered[1] == 1
    )
    assert t.rtx_bytes[1] == 2 * 1368 and t.target_bitrate_bps.tolist() == [1e6, 1e6, 2e6]
    # the repair lost too: back to the retransmission
    t2 = table(sent_wire=sent, fec_pt=FEC,
               fec_blocks=[{"ts": ORIGIN + 3000, "block_id": 0, "first_seq": 12, "k": 2, "m": 1, "repair_first_seq": 900}])  # fmt: skip
    assert t2.completed_by[1] == "rtx" and t2.latency_ns[1] == 97 * MS


def _sent() -> pd.DataFrame:
    return wire([(1 * MS, MEDIA, 10, ORIGIN), (2 * MS, MEDIA, 11, ORIGIN),
                 (34 * MS, MEDIA, 12, ORIGIN + 3000), (35 * MS, MEDIA, 13, ORIGIN + 3000),
                 (100 * MS, RTX, 500, ORIGIN + 3000), (101 * MS, RTX, 501, ORIGIN + 3000)])  # fmt: skip


def _recv() -> pd.DataFrame:
    return wire([(31 * MS, MEDIA, 10, ORIGIN), (32 * MS, MEDIA, 11, ORIGIN),
                 (65 * MS, MEDIA, 13, ORIGIN + 3000), (131 * MS, RTX, 501, ORIGIN + 3000)])  # fmt: skip
