"""Audio beside the video, and pauses, on real stacks: every audio packet on the sender's wire
is in audio.parquet, counted against the receiver's wire and the link log; a paused sender
sends nothing in its pause on either stack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.config import load_topology
from testbed.rtc.capture import read_pcap
from testbed.rtc.chromium.browser import missing
from testbed.rtc.record import EndpointRecord
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_link_log
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

P2P = ROOT / "topologies" / "p2p.yaml"
no_chromium = pytest.mark.skipif(missing() is not None, reason=str(missing()))


def cell(run: str, out: Path, sets: list[str], **stream: object) -> pd.DataFrame:
    spec = parse_stream({"bitrate_mbps": 1.0, "duration_s": 6.0, **stream}, "test")
    result = run_stream(load_topology(P2P, sets), spec, out, make_backend("emu"), "test",
                        run=run, seed=5)  # fmt: skip
    assert namespaces_of(run) == []
    return result.frames


def audio_on_wire(pcap: Path, pt: int) -> int:
    return sum(
        1 for r in read_pcap(pcap) if r[4] == "rtp" and r[5] == pt
    )  # only the sender sends RTP


def test_aiortc_audio_packets_add_up_on_both_wires_and_the_link_log(
    run: str, tmp_path: Path
) -> None:
    cell(run, tmp_path, ["uplink.loss_pct=5"], audio={"bitrate_kbps": 20})
    audio = pd.read_parquet(tmp_path / "audio.parquet")
    pt = int(audio.pt.iloc[0])
    assert len(audio) == audio_on_wire(tmp_path / "sender.pcap", pt)
    received = audio[audio.status == "received"]
    assert len(received) == audio_on_wire(tmp_path / "receiver.pcap", pt)
    # one packet per 20 ms for 6 s, each the same size (Opus CBR)
    assert 295 <= len(audio) <= 305 and audio.ip_bytes.nunique() == 1
    gaps = np.diff(np.sort(audio.sent_ns.to_numpy())) / 1e6
    assert abs(np.median(gaps) - 20) < 1
    # the link log: packets of the audio's size delivered / dropped = received / lost
    log = read_link_log(tmp_path / "link-path-uplink.log")
    voice = log[log.bytes == int(audio.ip_bytes.iloc[0])]
    assert (voice.event == "deliver").sum() == len(received)
    assert (voice.event != "deliver").sum() == (audio.status == "lost").sum() > 0
    assert (received.latency_ns >= 30e6).all() and (received.latency_ns < 40e6).mean() > 0.95
    sent = EndpointRecord.read(tmp_path, "sender")["packets"]
    assert (sent.kind == "audio").sum() == len(audio)  # its own kind in the sender's table
    summary = json.loads((tmp_path / "cell.json").read_text())["summary"]["audio"]
    assert summary["packets"] == len(audio) and summary["lost"] == (audio.status == "lost").sum()


@no_chromium
def test_chromium_audio_at_its_ptime_to_an_aiortc_receiver(run: str, tmp_path: Path) -> None:
    cell(run, tmp_path, [], stack="chromium", receiver_stack="aiortc", source="video",
         audio={"bitrate_kbps": 32, "ptime_ms": 40})  # fmt: skip
    audio = pd.read_parquet(tmp_path / "audio.parquet")
    gaps = np.diff(np.sort(audio.sent_ns.to_numpy())) / 1e6
    assert abs(np.median(gaps) - 40) < 2, np.median(gaps)
    assert (audio.status == "received").all() and 140 <= len(audio) <= 175
    stats = EndpointRecord.read(tmp_path, "sender").info["audio_rtp_stats"]
    assert stats["targetBitrate"] == 32000
    # 32 kbps in 40 ms frames: 160 bytes of Opus per packet (CBR)
    assert round(stats["bytesSent"] / stats["packetsSent"]) == 160


@pytest.mark.parametrize("stack", ["aiortc", pytest.param("chromium", marks=no_chromium)])
def test_a_paused_sender_sends_no_media_in_its_pause(run: str, tmp_path: Path, stack: str) -> None:
    source = "video" if stack == "chromium" else "synthetic"
    frames = cell(run, tmp_path, [], stack=stack, source=source, duration_s=8.0, audio=True,
                  pauses=[[2.0, 5.0]])  # fmt: skip
    audio = pd.read_parquet(tmp_path / "audio.parquet")
    t0 = frames.sent_first_ns.min()
    video_s = (frames.sent_first_ns.dropna() - t0) / 1e9
    audio_s = (audio.sent_ns - t0) / 1e9
    for times in (video_s, audio_s):
        assert not ((times > 2.2) & (times < 4.9)).any(), "media inside the pause"
        assert (times > 5.1).sum() > 0 and (times < 1.9).sum() > 0, "media before and after"
    assert (frames.status != "lost").all()


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (["audio.ptime_ms=40"], "stream.audio.ptime_ms: 40 is not offered by stack aiortc; valid: 20"),
        (["audio.codec=g722"], "stream.audio.codec"),
        (["audio.bitrate_kbps=600"], "stream.audio.bitrate_kbps: 600 is out of range"),
        (["audio={ptime_ms: 30}"], "stream.audio.ptime_ms: 30: valid: 10, 20, 40, 60"),
        (["pauses=[[5, 3]]"], "stream.pauses[0]"),
        (["pauses=[[1, 99]]"], "stream.pauses[0]: 99 is out of range"),
    ],
)  # fmt: skip
def test_bad_audio_or_pauses_are_one_line_exit_2_before_anything(
    run: str, tmp_path: Path, sets: list[str], words: str
) -> None:
    args = [a for s in sets for a in ("--stream-set", s)]
    res = run_cli("stream", str(P2P), "--duration-s", "5", *args, "-o", str(tmp_path / "o"),
                  "--name", run)  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and words in lines[0], res.stderr
    assert namespaces_of(run) == [] and not (tmp_path / "o").exists()
