"""FEC: planning, codes, and the sender/receiver halves over a seeded lossy channel."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.errors import ConfigError
from testbed.fec import codec
from testbed.fec.receiver import FecReceiver
from testbed.fec.sender import FecSender
from testbed.fec.spec import FecSpec, parse_fec, plan_blocks, rs_table

MEDIA_PT, FEC_PT = 97, 118


def rtp(seq: int, ts: int, marker: bool, size: int) -> bytes:
    head = struct.pack("!BBHII", 0x80, MEDIA_PT | (0x80 if marker else 0), seq, ts, 1234)
    return head + bytes([seq % 251]) * size


def test_parse_rejects_bad_input() -> None:
    for bad, key in (({"scheme": "ldpc"}, "scheme"), ({"scheme": "rs", "overhead": 4.5}, "overhead"),
                     ({"scheme": "rs", "overhead": -0.1}, "overhead"), ({"scheme": "rs", "bogus": 1}, "bogus"),
                     ({"scheme": "xor", "policy": "table"}, "policy"), ({"scheme": "xor", "group_packets": 0}, "group_packets"),
                     ({"scheme": "rs", "overhead": float("nan")}, "overhead")):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            parse_fec(bad, "x.yaml")
        assert f"stream.fec.{key}" in str(e.value)
    assert parse_fec(None, "x").scheme == "none"
    assert parse_fec("xor", "x").group_packets == 5


def test_plans() -> None:
    assert plan_blocks(26, FecSpec("rs", 0.2)) == [(0, 26, 6)]
    assert plan_blocks(1, FecSpec("rs", 0.2)) == [
        (0, 1, 1)
    ]  # never zero repair when asked for some
    assert plan_blocks(12, FecSpec("xor", group_packets=5)) == [(0, 4, 1), (4, 4, 1), (8, 4, 1)]
    big = plan_blocks(300, FecSpec("rs", 1.0))
    assert sum(c for _, c, _ in big) == 300 and all(c + m <= 255 for _, c, m in big)
    assert plan_blocks(10, FecSpec("none")) == [] and plan_blocks(10, FecSpec("rs", 0.0)) == []
    # the table: more loss, more repair; none at zero loss
    assert rs_table(0.0, 10, 0.01) == 0
    assert rs_table(2.0, 10, 0.01) < rs_table(10.0, 10, 0.01) < rs_table(30.0, 10, 0.01)
    assert plan_blocks(10, FecSpec("rs", policy="table"), loss_pct=5.0)[0][2] == rs_table(
        5.0, 10, 0.01
    )


@given(k=st.integers(1, 60), m=st.integers(1, 30), seed=st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_rs_rebuilds_from_any_k(k: int, m: int, seed: int) -> None:
    rng = random.Random(seed)
    packets = [bytes(rng.getrandbits(8) for _ in range(rng.randint(20, 80))) for _ in range(k)]
    symbols = codec.to_symbols(packets)
    repairs = codec.encode("rs", symbols, m)
    keep = set(rng.sample(range(k + m), k))
    media = {i: symbols[i] for i in range(k) if i in keep}
    rep = {j: repairs[j] for j in range(m) if k + j in keep}
    rebuilt = codec.decode("rs", k, m, media, rep)
    for i, s in rebuilt.items():
        assert codec.from_symbol(s) == packets[i]
    assert set(rebuilt) == set(range(k)) - set(media)


def test_xor_rebuilds_one() -> None:
    packets = [b"abc", b"defgh", b"ij"]
    symbols = codec.to_symbols(packets)
    (parity,) = codec.encode("xor", symbols, 1)
    assert (
        codec.from_symbol(codec.decode("xor", 3, 1, {0: symbols[0], 2: symbols[2]}, {0: parity})[1])
        == b"defgh"
    )
    assert codec.decode("xor", 3, 1, {0: symbols[0]}, {0: parity}) == {}  # two lost: no


def channel(
    spec: FecSpec, loss: float, frames: int, seed: int
) -> tuple[int, int, int, FecReceiver]:
    """Frames through a seeded lossy channel: (lost media, rebuilt, frames complete, receiver)."""
    rng = random.Random(seed)
    tx = FecSender(spec, FEC_PT)
    rx = FecReceiver(nack_wait_ns=10**9)
    seq, lost, complete = 1000, 0, 0
    for f in range(frames):
        ts = f * 3000
        k = rng.randint(1, 30)
        got: set[int] = set()
        want = set()
        for i in range(k):
            p = rtp(seq, ts, i == k - 1, rng.randint(100, 1200))
            want.add(seq)
            repairs = tx.on_media(seq, ts, i == k - 1, p)
            if rng.random() >= loss:
                got.add(seq)
                for q in rx.on_media(seq, ts, p, now_ns=f):
                    got.add(struct.unpack_from("!H", q, 2)[0])
            else:
                lost += 1
            seq = (seq + 1) % 65536
            for r in repairs:
                if rng.random() >= loss:
                    for q in rx.on_repair(r[12:], ts, f):
                        got.add(struct.unpack_from("!H", q, 2)[0])
        complete += want <= got
    return lost, len(rx.recovered), complete, rx


def test_channel_rs_recovers_most_losses() -> None:
    lost, rebuilt, complete, _ = channel(FecSpec("rs", 0.5), loss=0.05, frames=300, seed=7)
    assert lost > 100 and rebuilt >= 0.9 * lost and complete >= 290
    _, none_rebuilt, none_complete, _ = channel(FecSpec("none"), loss=0.05, frames=300, seed=7)
    assert none_rebuilt == 0 and none_complete < complete


def test_rebuilt_packets_are_the_originals() -> None:
    tx = FecSender(FecSpec("rs", 0.5), FEC_PT)
    rx = FecReceiver(nack_wait_ns=10**9)
    packets = [rtp((65534 + i) % 65536, 9000, i == 3, 300 + i) for i in range(4)]  # seq wraps
    repairs = []
    for i, p in enumerate(packets):
        repairs += tx.on_media((65534 + i) % 65536, 9000, i == 3, p)
    assert len(repairs) == 2
    rx.on_media(65534, 9000, packets[0], 0)
    rx.on_media(1, 9000, packets[3], 0)
    out = rx.on_repair(repairs[0][12:], 9000, 1) + rx.on_repair(repairs[1][12:], 9000, 2)
    assert sorted(out) == sorted(packets[1:3])


def test_nack_deferred_until_fec_concludes() -> None:
    tx = FecSender(FecSpec("rs", 0.25), FEC_PT)
    rx = FecReceiver(nack_wait_ns=50)
    packets = [rtp(10 + i, 0, i == 3, 500) for i in range(4)]
    repairs = [r for i, p in enumerate(packets) for r in tx.on_media(10 + i, 0, i == 3, p)]
    rx.on_media(10, 0, packets[0], 0)
    rx.on_media(12, 0, packets[2], 1)
    assert rx.filter_nack([11], 2) == []  # FEC may still rebuild it: wait
    assert rx.due_nacks(3) == []
    rx.on_media(13, 0, packets[3], 4)
    assert rx.on_repair(repairs[0][12:], 0, 5) == [packets[1]]
    assert rx.due_nacks(100) == [] and rx.nacks_saved == 1
    # two lost, one repair: the block concludes with the repair, and the NACK goes at once
    tx2 = FecSender(FecSpec("rs", 0.25), FEC_PT)
    rx2 = FecReceiver(nack_wait_ns=10**9)
    packets = [rtp(20 + i, 3000, i == 3, 500) for i in range(4)]
    repairs = [r for i, p in enumerate(packets) for r in tx2.on_media(20 + i, 3000, i == 3, p)]
    rx2.on_media(20, 3000, packets[0], 0)
    rx2.on_media(23, 3000, packets[3], 1)
    assert rx2.filter_nack([21, 22], 1) == []
    assert rx2.on_repair(repairs[0][12:], 3000, 2) == []
    assert rx2.due_nacks(3) == [21, 22]
    # the timeout releases a NACK whose block never shows up
    rx3 = FecReceiver(nack_wait_ns=50)
    assert rx3.filter_nack([5], 0) == [] and rx3.due_nacks(49) == [] and rx3.due_nacks(50) == [5]


def test_garbage_repair_is_ignored() -> None:
    rx = FecReceiver(nack_wait_ns=1)
    assert rx.on_repair(b"\x01\x02", 0, 0) == []
    assert rx.on_repair(bytes(40), 0, 0) == []


def test_table_hears_the_loss_over_its_window() -> None:
    """One report's fraction jumps; the window's cumulative difference does not (and it forgets)."""
    sender = FecSender(FecSpec(scheme="rs", policy="table", loss_window_s=3.0), 120)
    sender.on_report(0, 0.0, 0, 0)
    assert sender.loss_pct == 0.0  # one report: its own fraction
    sender.on_report(1000, 0.05, 3, 60)  # 3 of 60
    sender.on_report(2000, 0.0, 3, 120)
    assert sender.loss_pct == pytest.approx(2.5)  # 3 of 120, not the last report's 0
    for t in range(3000, 8000, 1000):
        sender.on_report(t, 0.0, 3, 60 * (t // 1000 + 1))
    assert sender.loss_pct == 0.0  # the losses left the window
    last_only = FecSender(FecSpec(scheme="rs", policy="table", loss_window_s=0), 120)
    last_only.on_report(1000, 0.05, 3, 60)
    last_only.on_report(2000, 0.0, 3, 120)
    assert last_only.loss_pct == 0.0
