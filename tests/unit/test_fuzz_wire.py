"""Hostile bytes from the wire: every packet parser the testbed's own code runs survives
anything (returns None / nothing for what it cannot read, never raises). Hypothesis drives
random bytes and mangled valid packets through each."""

from __future__ import annotations

import random
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import IP, UDP, Ether, Raw, wrpcap  # type: ignore[attr-defined]

from testbed.abr.framefeedback import unpack_app
from testbed.fec import codec
from testbed.fec.receiver import FecReceiver
from testbed.net.hostile import KINDS, craft
from testbed.rtc.capture import classify, read_pcap
from testbed.rtc.rtp import parse_rtp_header
from testbed.rtc.signaling import candidate_port
from testbed.rtc.sources import decode_frame_header
from testbed.rtc.wireid import (
    PayloadTypes,
    flexfec_protection,
    receiver_feedback,
    rtp_payload,
    sender_packets,
    ulpfec_protection,
)

TRIES = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
RTP = struct.pack("!BBHII", 0x90, 96, 1, 90, 7) + struct.pack("!HH", 0xBEDE, 1) + b"\x10\0\0\0"
RTCP_NACK = struct.pack("!BBHII", 0x81, 205, 3, 1, 7) + struct.pack("!HH", 100, 5)
REPAIR = codec.RepairHeader("rs", 1, 10, 2, 1, 0, 4).pack() + b"abcd"


def mangle(valid: bytes) -> st.SearchStrategy[bytes]:
    cut = st.integers(0, len(valid)).map(lambda i: valid[:i])
    flip = st.tuples(st.integers(0, max(0, len(valid) - 1)), st.integers(0, 255)).map(
        lambda t: valid[: t[0]] + bytes([t[1]]) + valid[t[0] + 1 :]
    )
    return st.one_of(
        cut, flip, st.binary(max_size=300), st.binary(max_size=300).map(lambda b: valid + b)
    )


HOSTILE = st.builds(
    lambda kind, seed: craft(kind, random.Random(seed)),
    st.sampled_from(KINDS),
    st.integers(0, 2**32),
)  # what the live bursts send (testbed.net.hostile)
PACKETS = st.one_of(mangle(RTP), mangle(RTCP_NACK), mangle(REPAIR), HOSTILE)


@TRIES
@given(PACKETS)
def test_packet_parsers_never_raise(data: bytes) -> None:
    parse_rtp_header(data)
    classify(data)
    rtp_payload(data)
    ulpfec_protection(data)
    flexfec_protection(data)
    unpack_app(data)
    decode_frame_header(data)
    codec.RepairHeader.unpack(data)


@TRIES
@given(st.lists(st.tuples(st.booleans(), PACKETS), max_size=30))
def test_the_fec_receiver_takes_anything(stream: list[tuple[bool, bytes]]) -> None:
    rx = FecReceiver(nack_wait_ns=1)
    for i, (repair, data) in enumerate(stream):
        if repair:
            rx.on_repair(data, 90, i)
        else:
            rx.on_media(i % 65536, 90, data, i)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(PACKETS, max_size=25))
def test_captures_of_hostile_datagrams_parse(datagrams: list[bytes]) -> None:
    pts = PayloadTypes({96: "vp8"}, {97: 96, 119: 118}, red=118, ulpfec=120, flexfec=49)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.pcap"
        pkts = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b) for b in datagrams]
        wrpcap(str(path), pkts or [Ether() / IP() / UDP()])
        read_pcap(path)
        for encrypted in (False, True):
            sender_packets(path, "10.0.0.1", "10.0.0.2", pts, 0, encrypted)
        receiver_feedback(path, "10.0.0.1", "10.0.0.2", 0)


@TRIES
@given(st.one_of(st.text(max_size=400), st.lists(st.sampled_from(
    ["a=candidate:2", "1", "udp", "9", "10.77.0.1", "x5", "6000", "typ", "host", "\n"]),
    max_size=20).map(" ".join)), st.sampled_from(["10.77.0.1", ""]))  # fmt: skip
def test_sdp_candidates_parse_or_are_none(sdp: str, address: str) -> None:
    port = candidate_port("a=candidate:1 1 udp 1 10.77.0.1 5000 typ host\n" + sdp, address)
    assert port is None or port >= 0
