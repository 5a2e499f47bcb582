"""Real WebRTC sessions (aiortc peers in namespaces) over the emulated link, short."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed.config import load_topology
from testbed.rtc.capture import read_pcap
from testbed.rtc.record import EndpointRecord
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend
from testbed.shaping.linklog import read_link_log
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

P2P = ROOT / "topologies" / "p2p.yaml"


def session(run: str, out: Path, sets: list[str], **stream: object) -> pd.DataFrame:
    topo = load_topology(P2P, sets)
    spec = parse_stream({"bitrate_mbps": 2.0, "duration_s": 5.0, **stream}, "test")
    result = run_stream(topo, spec, out, make_backend("emu"), "test", run=run, seed=3)
    assert namespaces_of(run) == []
    return result.frames


def _wire(out: Path, role: str) -> list[tuple]:  # type: ignore[type-arg]
    return [r for r in read_pcap(out / f"{role}.pcap") if r[1] == "10.77.0.1"]


def test_lossless_session(run: str, tmp_path: Path) -> None:
    frames = session(run, tmp_path, [])
    assert len(frames) == 150
    assert (frames.status == "complete").all()
    assert (frames.latency_ns >= 30_000_000).all()
    # 2 Mbps / 30 fps = 8333 B = 7 packets (1300 B each at most)
    assert (frames.size_bytes == 8333).all() and (frames.packets == 7).all()
    # the jitter buffer never releases a frame before it is complete
    assert (
        frames.jitterbuffer_out_ns.dropna()
        >= frames.complete_ns[frames.jitterbuffer_out_ns.notna()]
    ).all()
    # packets and bytes on the receiver's wire agree with the emulator's link log
    log = read_link_log(tmp_path / "link-path-uplink.log")
    delivered = log[log.event == "deliver"]
    received = _wire(tmp_path, "receiver")
    assert len(delivered) == len(received)
    assert delivered.bytes.sum() == sum(r[3] for r in received)
    cell = json.loads((tmp_path / "cell.json").read_text())
    assert cell["stream"]["history_packets"] == 128 and cell["backend"] == "emu"
    assert cell["summary"]["achieved_mbps"] == pytest.approx(2.0, rel=0.02)
    assert cell["stack"] == {"sender": "aiortc", "receiver": "aiortc", "label": "aiortc"}
    # the sender's record names every RTP packet on its wire: all media, one SSRC
    sent = EndpointRecord.read(tmp_path, "sender")
    assert (sent["packets"].kind == "media").all() and sent["packets"].ssrc.nunique() == 1
    wire_rtp = [r for r in _wire(tmp_path, "sender") if r[4] == "rtp"]
    assert len(wire_rtp) == len(sent["packets"]) == frames.packets.sum()
    assert len(sent["frames"]) == 150 and sent["frames"].rtp_ts.notna().all()
    released = EndpointRecord.read(tmp_path, "receiver")["frames"]
    assert (released.event == "released").sum() >= 149


def test_lossy_session_retransmits_and_accounts_for_every_drop(run: str, tmp_path: Path) -> None:
    frames = session(run, tmp_path, ["uplink.loss_pct=5"])
    assert len(frames) == 150, "every frame has a row: none silently missing"
    assert set(frames.status) <= {"complete", "lost"}
    hit = frames[frames.packets_lost_first_try > 0]
    assert len(hit) > 5
    done = hit[hit.status == "complete"]
    assert (done.retransmissions > 0).all()
    floor_ns = 30e6 + 8333 * 8 / 10e6 * 1e9
    # a repaired frame waits at least one RTT (60 ms) more than the one-way delay: the NACK goes
    # back, the retransmission comes forward (its frame's other packets may already be there)
    assert (done.latency_ns >= 30e6 + 60e6).all()
    assert done.latency_ns.median() >= floor_ns + 50e6
    clean = frames[(frames.packets_lost_first_try == 0) & (frames.status == "complete")]
    assert clean.latency_ns.median() < floor_ns + 5e6
    # every packet the link dropped is a packet that left the sender and never arrived
    log = read_link_log(tmp_path / "link-path-uplink.log")
    sent, received = _wire(tmp_path, "sender"), _wire(tmp_path, "receiver")
    assert (log.event == "drop_loss").sum() == len(sent) - len(received)
    media_sent = {(r[7], r[8]) for r in sent if r[4] == "rtp" and r[5] == 97}
    media_recv = {(r[7], r[8]) for r in received if r[4] == "rtp" and r[5] == 97}
    assert frames.packets_lost_first_try.sum() == len(media_sent - media_recv)
    assert (
        frames.jitterbuffer_out_ns.dropna()
        >= frames.complete_ns[frames.jitterbuffer_out_ns.notna()]
    ).all()


def test_a_round_trip_over_half_a_second_keeps_the_session(run: str, tmp_path: Path) -> None:
    """aioice gives each ICE consent check 0.5 s and closes after six failures: at 400 ms one
    way the session died ~30 s in ("sender: no 'done'") until compat gave the checks STUN's
    retransmissions. 40 s at an 800 ms round trip completes."""
    frames = session(run, tmp_path, ["uplink.delay_ms=400", "downlink.delay_ms=400"],
                     bitrate_mbps=0.1, duration_s=40.0, width=160, height=120)  # fmt: skip
    assert len(frames) == 1200 and (frames.status == "complete").all()
    assert (frames.latency_ns >= 400_000_000).all()


def test_nack_off_means_no_retransmissions(run: str, tmp_path: Path) -> None:
    frames = session(run, tmp_path, ["uplink.loss_pct=5"], nack="off", duration_s=3.0)
    assert frames.retransmissions.sum() == 0 and frames.nacks.sum() == 0
    assert (frames[frames.packets_lost_first_try > 0].status == "lost").all()


def test_nack_retry_and_history_are_applied(run: str, tmp_path: Path) -> None:
    frames = session(
        run,
        tmp_path,
        ["uplink.loss_pct=10", "downlink.loss_pct=10"],
        nack="retry",
        nack_retry_ms=70.0,
        history_packets=512,
        duration_s=4.0,
    )
    cell = json.loads((tmp_path / "cell.json").read_text())
    assert cell["stream"]["nack"] == "retry" and cell["stream"]["history_packets"] == 512
    # with retries and a long history, (almost) every frame completes despite lost NACKs
    assert (frames.status == "complete").mean() > 0.97


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_video_source(run: str, tmp_path: Path, codec: str) -> None:
    frames = session(run, tmp_path, [], source="video", codec=codec, bitrate_mbps=1.0,
                     duration_s=3.0, width=320, height=240)  # fmt: skip
    assert (frames.status == "complete").mean() > 0.95
    assert frames.size_bytes.sum() > 0
    cell = json.loads((tmp_path / "cell.json").read_text())
    assert cell["stream"]["codec"] == codec
    assert cell["summary"]["achieved_mbps"] > 0.05
    sdp_pt = EndpointRecord.read(tmp_path, "sender").info["payload_types"]["media"]
    assert sdp_pt in set(pd.DataFrame(read_pcap(tmp_path / "receiver.pcap"))[5])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bitrate-mbps", "0"], "stream.bitrate_mbps: 0.0 is out of range"),
        (["--fps", "-1"], "stream.fps: -1.0 is out of range"),
        (["--source", "webcam"], "stream.source: 'webcam' is unknown; valid: synthetic, video"),
        (["--source", "video", "--video", "/etc/hostname"], "cannot be read as video"),
        (["--source", "video", "--video", "/no/such.mp4"], "no such video file"),
        (["--stack", "webrtc-rs"], "stream.stack: 'webrtc-rs' is unknown; valid: aiortc"),
        (["--codec", "av1", "--source", "video"], "'av1' is not offered by stack aiortc"),
    ],
)
def test_stream_bad_input(run: str, tmp_path: Path, args: list[str], message: str) -> None:
    res = run_cli("stream", str(P2P), "--name", run, "-o", str(tmp_path / "o"), *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert namespaces_of(run) == []


def test_stream_output_is_written_once(run: str, tmp_path: Path) -> None:
    """A stream's folder is never written into twice (raw results are write-once); a staging
    folder a killed stream left beside it is removed by the next stream to the same folder."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "frames.parquet").write_text("an earlier result")
    res = run_cli("stream", str(P2P), "--name", run, "-o", str(out), "--duration-s", "1")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"-o: {out}: exists and is not empty" in res.stderr
    assert namespaces_of(run) == [] and (out / "frames.parquet").read_text() == "an earlier result"
    stale = tmp_path / ".tmp-new-999999999"  # a pid no process has
    stale.mkdir()
    (stale / "sender.pcap").write_bytes(b"")
    res = run_cli("stream", str(P2P), "--name", run, "-o", str(tmp_path / "new"),
                  "--duration-s", "1", "--bitrate-mbps", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert not stale.exists() and (tmp_path / "new" / "cell.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "o"]


def test_precision_stopped_cells_stop_when_settled_and_say_why(run: str, tmp_path: Path) -> None:
    """A lossless cell stops long before duration_s; a lossy one runs until its interval is met
    or duration_s; each says why in cell.json."""
    from testbed.config import load_topology
    from testbed.rtc.session import run_stream
    from testbed.rtc.spec import parse_stream
    from testbed.shaping.backends import make_backend

    rule = {"metric": "p95", "ci_ms": 2, "ci_pct": 5, "min_s": 3}
    outcomes = {}
    for loss in (0, 5):
        out = tmp_path / f"loss{loss}"
        spec = parse_stream({"bitrate_mbps": 2.0, "duration_s": 20.0, "stop_when": rule}, "test")
        topo = load_topology(ROOT / "topologies" / "p2p.yaml", [f"uplink.loss_pct={loss}"])
        run_stream(topo, spec, out, make_backend("emu"), "test", run=run, seed=4)
        outcomes[loss] = json.loads((out / "cell.json").read_text())["stopped"]
    quiet, lossy = outcomes[0], outcomes[5]
    assert quiet["reason"] == "precision" and quiet["at_s"] < 10, quiet
    assert quiet["interval"]["high_ms"] - quiet["interval"]["low_ms"] <= 2 * 2 + 1e-9
    if lossy["reason"] == "precision":  # met: it had frames a repair delayed, and took longer
        assert lossy["at_s"] > quiet["at_s"] and lossy["interval"]["frames"] > 150
    else:
        assert lossy == {"reason": "duration", "at_s": 20.0, "interval": None}
