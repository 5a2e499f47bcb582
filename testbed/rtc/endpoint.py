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
import os
import re
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from testbed.abr.base import Feedback
from testbed.abr.driver import AbrDriver
from testbed.abr.framefeedback import latency_estimate_ms
from testbed.abr.registry import make as make_controller
from testbed.fec.receiver import FecReceiver
from testbed.fec.sender import FecSender
from testbed.roi.quality import QualityMeter, index_from
from testbed.rtc import aiortc_compat as compat
from testbed.rtc.loops import BackgroundLoop
from testbed.rtc.signaling import Inbox, emit
from testbed.rtc.sources import MIN_FRAME_BYTES, make_track
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


def _check_fec_payload_type(sdp: str) -> None:
    if re.search(rf"a=rtpmap:{compat.FEC_PAYLOAD_TYPE} ", sdp):
        raise RuntimeError(
            f"payload type {compat.FEC_PAYLOAD_TYPE} (FEC) was negotiated for something else"
        )


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


VIDEO_MIN_BPS, VIDEO_MAX_BPS = 50_000, 1_000_000_000
TICK_S = 0.2


class RateControl(BackgroundLoop):
    """Feeds the controller and applies its target: exactly to the synthetic source, as the
    target to the video encoder; FEC's `table` policy hears the reported loss too."""

    def __init__(self, spec: StreamSpec, track: Any, tap: compat.SenderTap) -> None:
        self.spec, self.track, self.tap = spec, track, tap
        floor = sources_min_bps(spec)
        controller = make_controller(spec.abr, spec.abr_params, spec.bitrate_mbps * 1e6, spec.fps)
        self.driver = AbrDriver(controller, spec.bitrate_mbps * 1e6, floor_bps=floor)
        self.frame_estimates: list[tuple[int, float | None]] = []  # rtp ts, latency estimate ms
        self.sender: Any = None

    def on_frame_report(
        self, sender: Any, entries: list[tuple[int, int, int]], now_ns: int
    ) -> None:
        """Frames the receiver completed: one `frame` event each, latency estimated here."""
        rtt = getattr(sender, "_RTCRtpSender__rtt", None) if sender is not None else None
        rtt_ms = None if rtt is None else rtt * 1000
        for ts, assembly_us, age_us in entries:
            latency = latency_estimate_ms(now_ns, age_us, rtt_ms, self.tap.first_sent.get(ts))
            self.frame_estimates.append((ts, latency))
            event = Feedback(now_ns / 1e6, "frame", rtt_ms=rtt_ms, frame_rtp_ts=ts,
                             frame_assembly_ms=assembly_us / 1000, frame_latency_ms=latency)  # fmt: skip
            self.apply(self.driver.feed(event))

    def on_feedback(self, sender: Any, event: Feedback) -> None:
        self.sender = sender
        if event.kind == "report" and self.tap.fec is not None:
            self.tap.fec.on_report(
                event.now_ms, event.loss_fraction, event.packets_lost, event.packets_sent
            )
        self.apply(self.driver.feed(event))

    def apply(self, target_bps: float) -> None:
        self.track.target_bps = target_bps
        if self.spec.source == "video" and self.spec.abr != "fixed" and self.sender is not None:
            compat.set_encoder_bitrate(self.sender, int(target_bps))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.apply(self.driver.feed(Feedback(time.monotonic_ns() / 1e6, "tick")))

    def start_with(self, sender: Any) -> None:
        self.sender = sender
        self.start()

    def result(self) -> dict[str, Any]:
        d = self.driver
        return {"controller": self.spec.abr, "params": self.spec.abr_params, "events": d.events,
                "errors": d.errors, "first_error": d.first_error, "final_target_bps": d.target_bps,
                "frame_estimates": self.frame_estimates}  # fmt: skip


def sources_min_bps(spec: StreamSpec) -> float:
    """The lowest bitrate the source can make: 16-byte synthetic frames, or 50 kbps of video."""
    return MIN_FRAME_BYTES * 8 * spec.fps if spec.source == "synthetic" else VIDEO_MIN_BPS


async def run_sender(spec: StreamSpec, out: Path) -> None:
    tap = compat.install_sender(spec.history_packets)
    if spec.source == "video":
        if spec.abr == "fixed":
            compat.pin_video_bitrate(int(spec.bitrate_mbps * 1e6))
        else:
            compat.unclamp_video_bitrate(VIDEO_MIN_BPS, VIDEO_MAX_BPS)
    inbox = Inbox()
    await inbox.open()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = make_track(spec)
    rate = RateControl(spec, track, tap)
    tap.on_feedback = rate.on_feedback
    tap.on_frame_report = rate.on_frame_report
    tap.take_remb = spec.abr != "fixed"
    tap.on_keyframe_request = getattr(track, "request_keyframe", None)
    fec = spec.fec_spec()
    if fec.enabled:
        tap.fec = FecSender(fec, compat.FEC_PAYLOAD_TYPE)
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
    tap.media_pt = media_pt
    _check_fec_payload_type(answer["sdp"])
    await _connected(pc, spec.connect_timeout_s)
    emit({"type": "connected"})
    rate.start_with(pc.getSenders()[0])
    await track.finished.wait()
    await asyncio.sleep(spec.drain_s)
    await rate.close()
    emit({"type": "done"})
    await inbox.expect("stop")
    result = {
        "media_pt": media_pt, "rtx_pt": tap.rtx_pt, "history_packets": spec.history_packets,
        "frames": track.frames, "packets": tap.packets, "rtcp_received": tap.rtcp_received,
        "track_start_ns": track.start_ns, "rtp_origin": tap.origin, "cpu": _cpu(),
        "abr": rate.result(), "fec_pt": compat.FEC_PAYLOAD_TYPE if tap.fec else None,
        "fec_blocks": [asdict(b) for b in tap.fec.blocks] if tap.fec else [],
        "roi_frames": getattr(track, "roi_frames", []), "keyframe_requests": tap.keyframe_requests,
    }  # fmt: skip
    (out / "sender.json").write_text(json.dumps(result))
    await pc.close()


async def run_receiver(spec: StreamSpec, out: Path) -> None:
    tap = compat.install_receiver(
        spec.source == "synthetic", spec.history_packets, spec.late_packets == "drop"
    )
    fec = spec.fec_spec()
    if fec.enabled:
        tap.fec = FecReceiver(nack_wait_ns=int(fec.nack_wait_ms * 1e6))
    inbox = Inbox()
    await inbox.open()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    decoded = 0
    consumers: set[asyncio.Task[None]] = set()
    meter = QualityMeter(spec) if spec.source == "roi" else None

    async def measure(frame: Any) -> None:
        assert meter is not None
        heads = {ts: head for _, ts, _, head in tap.frames[-64:]}
        ts = compat.decoded_rtp_timestamp(tap, frame.pts)
        index = index_from(heads.get(ts, b"")) if ts is not None else None
        if index is not None:  # PSNR off the event loop: packets keep flowing meanwhile
            luma = frame.to_ndarray()
            await asyncio.get_running_loop().run_in_executor(None, meter.add, index, luma)

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def consume() -> None:
            nonlocal decoded
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                decoded += 1
                if meter is not None:
                    await measure(frame)

        task = asyncio.ensure_future(consume())
        consumers.add(task)
        task.add_done_callback(consumers.discard)

    offer = await inbox.expect("offer")
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    tap.media_pt = _media_payload_type(offer["sdp"], spec.codec)
    tap.rtx_pt = _rtx_payload_type(offer["sdp"], tap.media_pt)
    await pc.setLocalDescription(await pc.createAnswer())
    emit({"type": "answer", "sdp": pc.localDescription.sdp})
    receiver = pc.getReceivers()[0]
    retrier = None
    if spec.nack == "off":
        compat.disable_nack(receiver)
    elif spec.nack == "retry":
        retrier = compat.NackRetrier(receiver, tap, spec.nack_retry_ms, spec.nack_max_retries)
        retrier.start()
    releaser = None
    if tap.fec is not None and spec.nack != "off":
        releaser = compat.FecNackReleaser(receiver, tap)
        releaser.start()
    frame_feedback = None
    if (
        spec.abr != "fixed"
    ):  # a controller may use per-frame feedback; the baseline's wire is unchanged
        frame_feedback = compat.FrameFeedbackSender(receiver, tap)
        frame_feedback.start()
    await _connected(pc, spec.connect_timeout_s)
    emit({"type": "connected"})
    await inbox.expect("stop")
    for loop in (retrier, releaser, frame_feedback):
        if loop is not None:
            await loop.close()
    result = {
        "frames_out": [(t, ts, n, head.hex()) for t, ts, n, head in tap.frames],
        "nacks": tap.nacks, "plis": tap.plis, "jitter_events": tap.jitter_events, "decoded": decoded, "cpu": _cpu(),
        "rtp_in": tap.rtp_in, "fec_recovered": tap.fec.recovered if tap.fec else [],
        "fec_nacks_saved": tap.fec.nacks_saved if tap.fec else 0,
        "quality": meter.records if meter else [],
        "frame_feedback_reports": frame_feedback.reports if frame_feedback else 0,
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
    code = main()
    # Everything is written. A scorer thread (testbed.roi.scoring) may still be inside native
    # code (torch); a normal interpreter shutdown would abort the process under it ("terminate
    # called without an active exception"), so leave without one.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
