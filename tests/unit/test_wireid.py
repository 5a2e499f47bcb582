"""Packets identified from the wire (testbed.rtc.wireid): pcaps crafted with scapy, the way
Chromium sends them (RTX with the original's sequence number, padding, RED, ULPFEC, FlexFEC-03,
RTCP NACK/PLI). Pure: no browser."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
from scapy.all import IP, UDP, Ether, Raw, wrpcap  # type: ignore[attr-defined]

from testbed.rtc.record import table
from testbed.rtc.wireid import (
    PayloadTypes,
    payload_padding,
    payload_types,
    receiver_feedback,
    sender_packets,
)

A, B = "10.77.0.1", "10.77.1.1"
PTS = PayloadTypes({96: "vp8"}, {97: 96, 119: 118}, red=118, ulpfec=120, flexfec=49)
SDP = (
    "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 118 119 120 49\r\n"
    "a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
    "a=rtpmap:118 red/90000\r\na=rtpmap:119 rtx/90000\r\na=fmtp:119 apt=118\r\n"
    "a=rtpmap:120 ulpfec/90000\r\na=rtpmap:49 flexfec-03/90000\r\n"
)


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, padding: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80 | (0x20 if padding else 0), pt, seq, ts, ssrc) + payload


def pcap(path: Path, datagrams: list[tuple[str, str, bytes]]) -> Path:
    pkts = []
    for i, (src, dst, data) in enumerate(datagrams):
        p = Ether() / IP(src=src, dst=dst) / UDP(sport=5000, dport=6000) / Raw(data)
        p.time = 1.0 + i / 1000
        pkts.append(p)
    wrpcap(str(path), pkts)
    return path


def test_payload_types_from_an_sdp() -> None:
    assert payload_types(SDP) == PTS
    assert PayloadTypes.from_dict(PTS.to_dict()) == PTS


def test_every_kind_of_sender_packet(tmp_path: Path) -> None:
    ulpfec = (
        bytes([120])
        + struct.pack("!BBHIH", 0x00, 96, 1000, 0, 0)
        + struct.pack("!HH", 100, 0b1010 << 12)
    )
    flexfec = (
        struct.pack("!BBHIB3x", 0, 96, 0, 0, 1)
        + struct.pack("!IH", 7, 2000)
        + struct.pack("!H", 0x8000 | 0b101)
    )
    data = [
        (A, B, rtp(96, 1, 90, 7, b"\x10" * 50)),  # media
        (A, B, rtp(97, 5, 90, 8, struct.pack("!H", 1) + b"\x10" * 50)),  # rtx of seq 1
        (A, B, rtp(97, 6, 90, 8, b"\0" * 9 + b"\x0a", padding=True)),  # padding only
        (A, B, rtp(118, 2, 180, 7, bytes([96]) + b"\x10" * 40)),  # media inside RED
        (A, B, rtp(118, 3, 180, 7, ulpfec)),  # ULPFEC inside RED
        (A, B, rtp(49, 40, 5555, 9, flexfec)),  # FlexFEC, its own SSRC and clock
        (B, A, rtp(96, 1, 90, 7, b"x" * 20)),  # the other direction: not the sender's
        (A, B, bytes([0x80, 200]) + b"\0" * 30),  # RTCP: not an RTP packet
    ]
    got = sender_packets(pcap(tmp_path / "s.pcap", data), A, B, PTS, 0, encrypted=False)
    assert list(got.kind) == ["media", "rtx", "padding", "media", "fec", "fec"]
    assert got.original_seq[1] == 1
    ulp, flex = got.iloc[4], got.iloc[5]
    assert (ulp.original_seq, ulp["mask"], ulp.protected) == (1000, 0b0101, 2)  # bits 0, 2
    # FlexFEC: 15-bit mask after the K bit, first bit = base + 0
    assert (flex.original_seq, flex.protected) == (2000, 2) and flex["mask"] == (1 << 12) | (
        1 << 14
    )
    assert list(got.columns) == table("sender", "packets").names
    enc = sender_packets(tmp_path / "s.pcap", A, B, PTS, 0, encrypted=True)
    assert enc.original_seq.isna().all()  # SRTP: nothing past the header is readable


def test_receiver_feedback_nack_entries_and_pli(tmp_path: Path) -> None:
    rr = struct.pack("!BBHI", 0x80, 201, 1, 1)
    nack = struct.pack("!BBHII", 0x81, 205, 3, 1, 7) + struct.pack("!HH", 100, 0b101)
    pli = struct.pack("!BBHII", 0x81, 206, 2, 1, 7)
    got = receiver_feedback(pcap(tmp_path / "r.pcap", [(B, A, rr + nack), (B, A, pli)]), B, A, 0)
    assert list(got.kind) == ["nack", "nack", "nack", "pli"]
    assert list(got.seq[:3]) == [100, 101, 103]


def test_rtx_never_asked_for_is_payload_padding() -> None:
    packets = table("sender", "packets").frame([
        (10, "rtx", 8, 5, 90, 97, False, 1, None, None),
        (30, "rtx", 8, 6, 90, 97, False, 2, None, None),
        (40, "rtx", 8, 7, 90, 97, False, 3, None, None),
    ])  # fmt: skip
    nacks = table("receiver", "feedback").frame([(20, "nack", 2), (50, "nack", 3)])
    got = payload_padding(packets, nacks)
    assert list(got.kind) == ["padding", "rtx", "padding"]  # 3 was resent before its NACK
    assert isinstance(got, pd.DataFrame)
