"""Audio and pauses (pure): what is valid, what each stack can carry, the audio table from two
wires, the pacer that makes no frame in a pause."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from testbed.config import load_topology
from testbed.errors import ConfigError
from testbed.rtc.audiolog import audio_table, summarize_audio
from testbed.rtc.audiospec import AudioSpec, parse_audio
from testbed.rtc.chromium.endpoint import sender_frames
from testbed.rtc.sources import Pacer
from testbed.rtc.spec import parse_stream, session_streams
from testbed.rtc.wireid import audio_payload_types, payload_types
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        (None, AudioSpec()), (False, AudioSpec()), ("off", AudioSpec()),
        (True, AudioSpec(enabled=True)),
        ({"bitrate_kbps": 32}, AudioSpec(enabled=True, bitrate_kbps=32)),
        ({"enabled": False, "ptime_ms": 40}, AudioSpec(ptime_ms=40)),
    ],
)  # fmt: skip
def test_audio_values(value: object, spec: AudioSpec) -> None:
    assert parse_audio(value, "t") == spec


def test_audio_round_trips_in_the_stream_and_takes_the_budget_only_when_on() -> None:
    spec = parse_stream({"audio": {"bitrate_kbps": 24}})
    assert spec.audio_spec().bitrate_bps == 24_000 and parse_stream(spec.to_dict()) == spec
    assert parse_stream({}).audio_spec().bitrate_bps == 0


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"audio": {"codec": "g722"}}, "stream.audio.codec", "valid: opus"),
        ({"audio": {"bitrate_kbps": 5}}, "stream.audio.bitrate_kbps", "out of range"),
        ({"audio": {"ptime_ms": 40}}, "stream.audio.ptime_ms", "not offered by stack aiortc"),
        ({"audio": {"ptime": 20}}, "stream.audio.ptime", "unknown key"),
        ({"audio": "loud"}, "stream.audio", "expected a mapping"),
        ({"pauses": [[3, 2]]}, "stream.pauses[0]", "ends after it begins"),
        ({"pauses": [[1, 3], [2, 4]]}, "stream.pauses[1]", "after the one before"),
        ({"pauses": [[1, 30]]}, "stream.pauses[0]", "out of range"),
        ({"pauses": 5}, "stream.pauses", "[from_s, to_s] pairs"),
    ],
)  # fmt: skip
def test_bad_audio_and_pauses_name_the_key(data: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_stream({"duration_s": 20, **data}, "t")
    assert e.value.key == key and words in e.value.message, str(e.value)


def test_a_sessions_pauses_count_from_its_start_and_are_checked_on_the_cells_clock() -> None:
    dumbbell = ROOT / "topologies" / "dumbbell.yaml"
    topo = load_topology(dumbbell, ["sessions=[{name: a, sender: s1, receiver: r1}, {name: b, "
                                    "sender: s2, receiver: r2, start_s: 10, pauses: [[20, 25]]}]"])  # fmt: skip
    (_, _, a), (_, _, b) = session_streams(topo, parse_stream({"duration_s": 40}, "t"))
    assert a.pauses == () and b.pauses == ((10.0, 15.0),)
    with pytest.raises(ConfigError, match=r"sessions.b.pauses\[0\]"):
        load_topology(dumbbell, ["sessions=[{name: a, sender: s1, receiver: r1}, {name: b, "
                                 "sender: s2, receiver: r2, start_s: 10, pauses: [[5, 12]]}]"])  # fmt: skip


SDP = """v=0\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
a=rtpmap:96 VP8/90000\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r
a=rtpmap:111 opus/48000/2\r
a=rtpmap:63 red/48000/2\r
"""


def test_payload_types_of_the_audio_beside_the_video() -> None:
    assert audio_payload_types(SDP) == {111: "opus", 63: "red"}
    pts = payload_types(SDP)
    assert pts.media == {96: "vp8"} and pts.rtx == {97: 96} and 111 in pts.audio
    assert type(pts).from_dict(pts.to_dict()) == pts
    assert audio_payload_types(SDP.split("m=audio")[0]) == {}


def _wire(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"t_ns": t, "kind": "rtp", "pt": pt, "ssrc": 7, "seq": seq,
                          "ts": seq * 960, "ip_bytes": 106} for t, pt, seq in rows])  # fmt: skip


def test_audio_table_first_arrival_losses_and_the_video_left_out() -> None:
    sent = _wire([(0, 111, 1), (20, 111, 2), (40, 111, 3), (41, 96, 1)])
    recv = _wire([(30, 111, 1), (55, 111, 3), (70, 111, 3), (71, 96, 1)])  # 3 twice, 2 lost
    t = audio_table(sent, recv, [111])
    assert t.seq.tolist() == [1, 2, 3] and t.status.tolist() == ["received", "lost", "received"]
    assert t.latency_ns.tolist()[0] == 30 and pd.isna(t.latency_ns[1]) and t.latency_ns[2] == 15
    s = summarize_audio(t, 0)
    assert s["packets"] == 3 and s["lost"] == 1 and s["latency_ms"]["p50"] == 22.5e-6


def test_the_pacer_makes_no_frame_inside_a_pause() -> None:
    async def indices() -> list[int]:
        pacer = Pacer(100.0, 0.1, pauses=((0.02, 0.05),))
        got = []
        while (turn := await pacer.next()) is not None:
            got.append(turn[0])
        return got

    assert asyncio.run(indices()) == [0, 1, 5, 6, 7, 8, 9]


def test_chromium_frames_in_a_pause_are_not_dropped_frames() -> None:
    raw = [[0, 0.0, 100, 100, True], [90000, 1000.0, 100, 100, False]]  # 30 fps: 1 s apart
    gaps = sender_frames(raw, 30.0, 0, lambda t: 1e6)
    assert len(gaps) == 31  # 29 the encoder dropped
    paused = sender_frames(raw, 30.0, 0, lambda t: 1e6, lambda t_ns: 100e6 <= t_ns < 900e6)
    assert len(paused) == 31 - 24 and paused[-1][0] == 30  # frame ids still count source frames
