"""The sender and receiver processes. Each runs inside its host's namespace:

  python -m testbed.rtc.endpoint sender|receiver --spec JSON --out DIR

The sender offers, the receiver answers (relayed by the orchestrator), each reports
`connected` when ICE + DTLS are up. The sender streams for duration_s, waits drain_s for the
last retransmissions, says `done`; on `stop` both write what their taps saw and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from testbed.rtc import aiortc_compat as compat
from testbed.rtc.signaling import Inbox, emit
from testbed.rtc.sources import make_track
from testbed.rtc.spec import StreamSpec


def _rtx_payload_type(sdp: str, media_pt: int) -> int | None:
    for pt, apt in re.findall(r"a=fmtp:(\d+) apt=(\d+)", sdp):
        if int(apt) == media_pt:
            return int(pt)
    return None


def _media_payload_type(sdp: str, codec: str) -> int:
    m = re.search(rf"a=rtpmap:(\d+) {codec}/90000", sdp, re.IGNORECASE)
    if not m:
        raise RuntimeError(f"{codec} was not negotiated")
    return int(m.group(1))


async def _connected(pc: RTCPeerConnection, timeout_s: float) -> None:
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    if pc.connectionState != "connected":
        try:
            async with asyncio.timeout(timeout_s):
                await done.wait()
        except TimeoutError:
            raise RuntimeError(
                f"not connected after {timeout_s} s (state {pc.connectionState})"
            ) from None
    if pc.connectionState != "connected":
        raise RuntimeError(f"connection {pc.connectionState}")


STARTED = time.monotonic()


def _cpu() -> dict[str, float]:
    """CPU seconds this process used, and for how long it ran."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": u.ru_utime + u.ru_stime, "wall_s": time.monotonic() - STARTED}


async def run_sender(spec: StreamSpec, out: Path) -> None:
    tap = compat.install_sender(spec.history_packets)
    if spec.source == "video":
        compat.pin_video_bitrate(int(spec.bitrate_mbps * 1e6))
    inbox = Inbox()
    await inbox.open()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = make_track(spec)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    if spec.codec == "h264":
        caps = RTCRtpSender.getCapabilities("video")
        prefs = [c for c in caps.codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
        transceiver.setCodecPreferences(prefs)
    await pc.setLocalDescription(await pc.createOffer())
    emit({"type": "offer", "sdp": pc.localDescription.sdp})
    answer = await inbox.expect("answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    media_pt = _media_payload_type(answer["sdp"], spec.codec)
    tap.rtx_pt = _rtx_payload_type(answer["sdp"], media_pt)
    await _connected(pc, spec.connect_timeout_s)
    emit({"type": "connected"})
    await track.finished.wait()
    await asyncio.sleep(spec.drain_s)
    emit({"type": "done"})
    await inbox.expect("stop")
    result = {
        "media_pt": media_pt, "rtx_pt": tap.rtx_pt, "history_packets": spec.history_packets,
        "frames": track.frames, "packets": tap.packets, "rtcp_received": tap.rtcp_received,
        "track_start_ns": track.start_ns, "rtp_origin": tap.origin, "cpu": _cpu(),
    }  # fmt: skip
    (out / "sender.json").write_text(json.dumps(result))
    await pc.close()


async def run_receiver(spec: StreamSpec, out: Path) -> None:
    tap = compat.install_receiver(synthetic=spec.source == "synthetic")
    inbox = Inbox()
    await inbox.open()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    decoded = 0
    consumers: set[asyncio.Task[None]] = set()

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def consume() -> None:
            nonlocal decoded
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                decoded += 1

        task = asyncio.ensure_future(consume())
        consumers.add(task)
        task.add_done_callback(consumers.discard)

    offer = await inbox.expect("offer")
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    emit({"type": "answer", "sdp": pc.localDescription.sdp})
    receiver = pc.getReceivers()[0]
    retrier = None
    if spec.nack == "off":
        compat.disable_nack(receiver)
    elif spec.nack == "retry":
        retrier = compat.NackRetrier(receiver, tap, spec.nack_retry_ms, spec.nack_max_retries)
        retrier.start()
    await _connected(pc, spec.connect_timeout_s)
    emit({"type": "connected"})
    await inbox.expect("stop")
    if retrier is not None:
        await retrier.close()
    result = {
        "frames_out": [(t, ts, n, head.hex()) for t, ts, n, head in tap.frames],
        "nacks": tap.nacks, "plis": tap.plis, "decoded": decoded, "cpu": _cpu(),
        "rtp_in": tap.rtp_in,
    }  # fmt: skip
    (out / "receiver.json").write_text(json.dumps(result))
    await pc.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=["sender", "receiver"])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    spec = StreamSpec(**json.loads(args.spec))
    out = Path(args.out)
    run = run_sender if args.role == "sender" else run_receiver
    try:
        asyncio.run(run(spec, out))
    except Exception as e:
        emit({"type": "error", "error": f"{type(e).__name__}: {e}"})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
