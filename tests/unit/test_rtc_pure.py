from __future__ import annotations

import pytest

from testbed.errors import ConfigError
from testbed.rtc.capture import classify
from testbed.rtc.rtp import parse_rtp_header
from testbed.rtc.sources import FRAME_HEADER, MAGIC, decode_frame_header, frame_sizes
from testbed.rtc.spec import StreamSpec, parse_stream


def test_frame_sizes_keep_the_mean_bitrate() -> None:
    spec = StreamSpec(bitrate_mbps=4, fps=30, keyframe_period_s=1, keyframe_ratio=5)
    delta, key = frame_sizes(spec)
    assert key == pytest.approx(5 * delta, abs=5)
    assert (key + 29 * delta) * 8 == pytest.approx(4e6, rel=1e-3)
    assert frame_sizes(StreamSpec(bitrate_mbps=2, fps=30)) == (8333, 8333)


def test_frame_header_round_trip() -> None:
    head = FRAME_HEADER.pack(1, MAGIC, 42, 123456789)
    assert decode_frame_header(head + b"\0" * 10) == (42, 123456789)
    assert decode_frame_header(b"\0" * 20) is None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bitrate_mbps": 0}, "stream.bitrate_mbps"),
        ({"fps": -3}, "stream.fps"),
        ({"source": "camera"}, "stream.source"),
        ({"nack": "sometimes"}, "stream.nack"),
        ({"history_packets": 0}, "stream.history_packets"),
        ({"colour": 1}, "stream.colour"),
        ({"video": "/no/such/file.mp4"}, "stream.video"),
    ],
)
def test_bad_stream_values(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_stream(data)
    assert e.value.key == key and e.value.exit_code == 2


def test_rtp_header_and_rfc7983_demux() -> None:
    rtp = bytes([0x90, 0x80 | 97, 0, 5, 0, 0, 0, 9, 0, 0, 0, 1, 0xBE, 0xDE, 0, 1, 1, 2, 3, 4, 0xAA])
    assert parse_rtp_header(rtp) == (97, 1, 5, 9, 1, 20)
    assert classify(rtp)[:4] == ("rtp", 97, 1, 5)
    assert classify(bytes([0x80, 200]) + bytes(10))[0] == "rtcp"
    assert classify(bytes([0, 1]) + bytes(18))[0] == "stun"
    assert classify(bytes([22, 254, 253]))[0] == "dtls"


def test_jitter_event_predicts_what_aiortcs_jitter_buffer_does() -> None:
    """jitter_event reads aiortc's JitterBuffer logic; checked against the real class."""
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    from testbed.rtc.aiortc.compat import jitter_event

    def packet(seq: int) -> RtpPacket:
        p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000)
        p._data = b"x"  # type: ignore[attr-defined]  # the depacketized payload, as aiortc sets it
        return p

    jb = JitterBuffer(capacity=16, is_video=True)
    for seq in range(1000, 1011):  # one packet per frame: each releases the previous frame
        assert jitter_event(jb, seq) is None
        jb.add(packet(seq))
    origin = jb._origin
    assert jitter_event(jb, origin - 5) == "stale"
    assert jb.add(packet(origin - 5)) == (False, None)  # silently dropped
    assert jb._origin == origin
    assert jitter_event(jb, origin + 16) == "overflow"
    assert jitter_event(jb, origin - 150) == "reset"
    pli, _ = jb.add(packet(origin - 150))
    assert pli and jb._origin == origin - 150  # flushed and restarted at the late packet
