"""The aiortc sender and receiver processes. Each runs inside its host's namespace:

  python -m testbed.rtc.aiortc.endpoint sender|receiver --spec SPEC.json --out CELL

The sender offers, the receiver answers (relayed by the orchestrator), each reports
`connected` when ICE + DTLS are up. The sender streams for duration_s, waits drain_s for the
last retransmissions, says `done`; on `stop` both write their endpoint record
(testbed.rtc.record) into CELL/ROLE/ and exit.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from testbed.abr.base import Feedback
from testbed.fec.receiver import FecReceiver
from testbed.fec.sender import FecSender
from testbed.roi.quality import QualityMeter, index_from
from testbed.rtc import record
from testbed.rtc.aiortc import compat
from testbed.rtc.aiortc.audio import ToneTrack
from testbed.rtc.aiortc.stack import AiortcOptions, options_of
from testbed.rtc.aiortc.track import SourceTrack
from testbed.rtc.ratecontrol import RateControl
from testbed.rtc.signaling import Inbox, emit, endpoint_args
from testbed.rtc.sources import VIDEO_MAX_BPS, VIDEO_MIN_BPS, make_source
from testbed.rtc.spec import StreamSpec
from testbed.rtc.wireid import audio_payload_types
from testbed.viewer.intake import Intake

U32 = 1 << 32


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


def _where() -> dict[str, str]:
    """Where this endpoint ran: a container host has its own hostname and the image's python."""
    return {"hostname": socket.gethostname(), "python": sys.executable}


def _cpu() -> dict[str, float]:
    """CPU seconds this process used, and for how long it ran."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": u.ru_utime + u.ru_stime, "wall_s": time.monotonic() - STARTED}


def _kind(pt: int, media_pt: int | None, rtx_pt: int | None, fec_pt: int | None,
          audio_pt: int | None = None) -> str:  # fmt: skip
    if pt == media_pt:
        return "media"
    if pt == rtx_pt:
        return "rtx"
    if audio_pt is not None and pt == audio_pt:
        return "audio"
    return "fec" if fec_pt is not None and pt == fec_pt else "other"


def _audio_payload_type(sdp: str) -> int | None:
    """Opus's payload type in the SDP's audio section (none without audio)."""
    return next((pt for pt, name in audio_payload_types(sdp).items() if name == "opus"), None)


async def _watch_precision(rate: RateControl, track: SourceTrack, spec: StreamSpec,
                           stopped: dict[str, Any]) -> None:  # fmt: skip
    """stop_when: every 0.5 s, end the source once the statistic is settled (testbed.rtc.stopping);
    the warm-up's frames do not count (they are left out of the reported statistic too)."""
    if rate.stopper is None:
        return
    t0 = time.monotonic()
    warm = spec.warmup_s
    while True:
        await asyncio.sleep(0.5)
        streamed = time.monotonic() - t0
        if warm and streamed >= warm and rate.stopper.values:
            rate.stopper.values.clear()  # the warm-up's estimates go
            warm = 0.0
        met = rate.stopper.met(streamed - spec.warmup_s)
        if met is not None:
            stopped.update(reason="precision", at_s=round(streamed, 3), interval=met)
            track.pacer.count = min(track.pacer.count, track.pacer.index)  # no more frames
            return


def sender_record(spec: StreamSpec, opts: AiortcOptions, track: SourceTrack,
                  tap: compat.SenderTap, rate: RateControl,
                  stopped: dict[str, Any] | None = None) -> record.EndpointRecord:  # fmt: skip
    """What the sender's taps saw, as the stack-neutral record."""
    fec_pt = tap.fec.payload_type if tap.fec else None
    covers: dict[tuple[int, int], tuple[int, int]] = {}  # (repair seq, ts) -> (first seq, k)
    for b in tap.fec.blocks if tap.fec else []:
        for j in range(b.m):
            covers[((b.repair_first_seq + j) % (1 << 16), b.ts)] = (b.first_seq, b.k)
    packets = []
    for t, pt, ssrc, seq, ts, marker, osn in tap.packets:
        kind = _kind(pt, tap.media_pt, tap.rtx_pt, fec_pt, tap.audio_pt)
        original, protected = (osn if kind == "rtx" else None), None
        if kind == "fec" and (seq, ts) in covers:
            original, protected = covers[(seq, ts)]
        packets.append((t, kind, ssrc, seq, ts, pt, bool(marker), original, protected, None))
    origin = tap.origin
    frames = [(i, cap, None if origin is None else (pts + origin) % U32, size, key, target)
              for i, pts, cap, size, key, target in track.frames]  # fmt: skip
    tables = {
        "frames": record.table("sender", "frames").frame(frames),
        "packets": record.table("sender", "packets").frame(packets),
        "controller": record.table("sender", "controller").frame(rate.controller_rows()),
        "estimates": record.table("sender", "estimates").frame(rate.estimates),
    }
    for name, rows in track.source.tables().items():
        tables[name] = record.table("sender", name).frame(rows)
    info = {
        "cpu": _cpu(), "where": _where(), "track_start_ns": track.pacer.start_ns, "rtcp_received": tap.rtcp_received,
        "keyframe_requests": tap.keyframe_requests, "rtt_samples": tap.rtt.samples, "abr": rate.summary(), "encrypted": True,
        "payload_types": {"media": tap.media_pt, "rtx": tap.rtx_pt, "fec": fec_pt, "audio": tap.audio_pt},
        "history_packets": opts.history_packets, "not_applied": track.not_applied,
        "stopped": stopped,
    }  # fmt: skip
    return record.EndpointRecord("sender", "aiortc", info, tables)


async def run_sender(spec: StreamSpec, out: Path) -> None:
    opts = options_of(spec)
    tap = compat.install_sender(opts.history_packets)
    if spec.source == "video":
        if spec.abr == "fixed":
            compat.pin_video_bitrate(int(spec.bitrate_mbps * 1e6))
        else:
            compat.unclamp_video_bitrate(VIDEO_MIN_BPS, VIDEO_MAX_BPS)
    inbox = Inbox()
    await inbox.open()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = SourceTrack(make_source(spec), spec)
    fec = spec.fec_spec()
    if fec.enabled:
        tap.fec = FecSender(fec, compat.FEC_PAYLOAD_TYPE)

    def fec_hears(event: Feedback) -> None:
        if tap.fec is not None:
            tap.fec.on_report(event.now_ms, event.loss_fraction, event.packets_lost,
                              event.packets_sent)  # fmt: skip

    audio = spec.audio_spec()
    tone = None
    if audio.enabled:  # before the video's controller: it leaves the audio its share
        compat.set_opus_bitrate(int(audio.bitrate_bps))
        tone = ToneTrack(audio.ptime_ms, spec.duration_s, spec.pauses)
    rate = RateControl(spec, track, on_report=fec_hears)
    tap.on_feedback = lambda sender, event: rate.on_feedback(event)
    tap.on_frame_report = lambda sender, entries, now_ns: rate.on_frame_report(
        entries, now_ns, tap.rtt.rtt_ms, tap.first_sent
    )
    tap.take_remb = spec.abr != "fixed"
    tap.on_keyframe_request = track.request_keyframe
    transceiver = pc.addTransceiver(track, direction="sendonly")
    if spec.codec == "h264":
        caps = RTCRtpSender.getCapabilities("video")
        prefs = [c for c in caps.codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
        transceiver.setCodecPreferences(prefs)
    if tone is not None:
        voice = pc.addTransceiver(tone, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("audio")
        voice.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == "audio/opus"])
    await pc.setLocalDescription(await pc.createOffer())
    emit({"type": "offer", "sdp": pc.localDescription.sdp})
    answer = await inbox.expect("answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    media_pt = _media_payload_type(answer["sdp"], spec.codec)
    tap.rtx_pt = _rtx_payload_type(answer["sdp"], media_pt)
    tap.media_pt = media_pt
    tap.audio_pt = _audio_payload_type(answer["sdp"]) if tone is not None else None
    _check_fec_payload_type(answer["sdp"])
    await _connected(pc, spec.connect_timeout_s)
    emit({"type": "connected"})
    track.sender = pc.getSenders()[0]
    rate.start()
    stopped = {"reason": "duration", "at_s": spec.duration_s, "interval": None}
    watcher = asyncio.ensure_future(_watch_precision(rate, track, spec, stopped))
    await track.finished.wait()
    watcher.cancel()
    if tone is not None:
        tone.stop()
    await asyncio.sleep(spec.drain_s)
    await rate.close()
    emit({"type": "done"})
    await inbox.expect("stop")
    sender_record(spec, opts, track, tap, rate, stopped).write(out)
    await pc.close()


def receiver_record(tap: compat.ReceiverTap, decoded: list[tuple[int, int]],
                    meter: QualityMeter | None, frame_feedback: Any,
                    intake: Intake | None) -> record.EndpointRecord:  # fmt: skip
    fec_pt = compat.FEC_PAYLOAD_TYPE if tap.fec else None
    frames: list[tuple[int, int, str, int | None]] = [
        (t, ts, "released", n) for t, ts, n, _ in tap.frames
    ]
    frames += [(t, ts, "decoded", None) for t, ts in decoded]
    feedback: list[tuple[int, str, int | None]] = [
        (t, "nack", seq) for t, seqs in tap.nacks for seq in seqs
    ]
    feedback += [(t, "pli", None) for t in tap.plis]
    tables = {
        "frames": record.table("receiver", "frames").frame(frames),
        "feedback": record.table("receiver", "feedback").frame(sorted(feedback, key=lambda r: r[0])),
        "recovered": record.table("receiver", "recovered").frame(tap.fec.recovered if tap.fec else []),
        "drops": record.table("receiver", "drops").frame(tap.jitter_events),
        "packets_in": record.table("receiver", "packets_in").frame(
            (t, _kind(pt, tap.media_pt, tap.rtx_pt, fec_pt, tap.audio_pt), pt, seq, ts) for t, pt, seq, ts in tap.rtp_in
        ),
        "quality": record.table("receiver", "quality").frame(meter.records if meter else []),
        "intake": record.table("receiver", "intake").frame(intake.rows if intake else []),
    }  # fmt: skip
    info = {
        "cpu": _cpu(), "where": _where(), "decoded": len(decoded), "plis": len(tap.plis),
        "fec_nacks_saved": tap.fec.nacks_saved if tap.fec else 0,
        "fec_malformed": tap.fec.malformed if tap.fec else 0,
        "frame_feedback_reports": frame_feedback.reports if frame_feedback else 0,
    }  # fmt: skip
    return record.EndpointRecord("receiver", "aiortc", info, tables)


async def run_receiver(spec: StreamSpec, out: Path) -> None:
    opts = options_of(spec)
    tap = compat.install_receiver(
        spec.source == "synthetic", opts.history_packets, opts.late_packets == "drop"
    )
    fec = spec.fec_spec()
    if fec.enabled:
        tap.fec = FecReceiver(nack_wait_ns=int(fec.nack_wait_ms * 1e6))
    inbox = Inbox()
    await inbox.open()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    decoded: list[tuple[int, int]] = []  # mono_ns, rtp ts
    audio_decoded = [0]  # audio frames out of the decoder
    consumers: set[asyncio.Task[None]] = set()
    meter = None
    if spec.source == "roi":
        meter = QualityMeter(spec.roi_spec(), spec.video, spec.width, spec.height)
    viewer = spec.viewer_spec()
    intake = Intake(viewer, out) if viewer.enabled else None

    async def take(frame: Any, ts: int, decoded_ns: int) -> None:
        assert intake is not None
        slot = intake.due(ts)
        if slot is not None:  # PNG off the event loop, as the PSNR
            rgb = frame.to_ndarray(format="rgb24")
            await asyncio.get_running_loop().run_in_executor(None, intake.take, slot, ts,
                                                             decoded_ns, rgb)  # fmt: skip

    async def measure(frame: Any, ts: int | None) -> None:
        assert meter is not None
        heads = {ts: head for _, ts, _, head in tap.frames[-64:]}
        index = index_from(heads.get(ts, b"")) if ts is not None else None
        if index is not None:  # PSNR off the event loop: packets keep flowing meanwhile
            luma = frame.to_ndarray()
            await asyncio.get_running_loop().run_in_executor(None, meter.add, index, luma)

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def drain() -> None:  # the voice is decoded and let go: the wire times it
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                audio_decoded[0] += 1

        async def consume() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                ts = compat.decoded_rtp_timestamp(tap, frame.pts)
                if ts is not None:
                    decoded.append((time.monotonic_ns(), ts))
                    if intake is not None:
                        await take(frame, ts, decoded[-1][0])
                if meter is not None:
                    await measure(frame, ts)

        task = asyncio.ensure_future(drain() if track.kind == "audio" else consume())
        consumers.add(task)
        task.add_done_callback(consumers.discard)

    offer = await inbox.expect("offer")
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    tap.media_pt = _media_payload_type(offer["sdp"], spec.codec)
    tap.rtx_pt = _rtx_payload_type(offer["sdp"], tap.media_pt)
    tap.audio_pt = _audio_payload_type(offer["sdp"])
    await pc.setLocalDescription(await pc.createAnswer())
    emit({"type": "answer", "sdp": pc.localDescription.sdp})
    receiver = next(r for r in pc.getReceivers() if r.track.kind == "video")
    retrier = None
    if opts.nack == "off":
        compat.disable_nack(receiver)
    elif opts.nack == "retry":
        retrier = compat.NackRetrier(receiver, tap, opts.nack_retry_ms, opts.nack_max_retries)
        retrier.start()
    releaser = None
    if tap.fec is not None and opts.nack != "off":
        releaser = compat.FecNackReleaser(receiver, tap)
        releaser.start()
    frame_feedback = None
    if (
        spec.abr != "fixed" or spec.stop_when
    ):  # a controller (or stop_when) may use per-frame feedback; the baseline's wire is unchanged
        frame_feedback = compat.FrameFeedbackSender(receiver, tap)
        frame_feedback.start()
    await _connected(pc, spec.connect_timeout_s)
    emit({"type": "connected"})
    await inbox.expect("stop")
    for loop in (retrier, releaser, frame_feedback):
        if loop is not None:
            await loop.close()
    rec = receiver_record(tap, decoded, meter, frame_feedback, intake)
    rec.info["audio_decoded"] = audio_decoded[0]
    rec.write(out)
    await pc.close()


def main(argv: list[str] | None = None) -> int:
    role, spec, out = endpoint_args(argv, __doc__)
    try:
        asyncio.run((run_sender if role == "sender" else run_receiver)(spec, out))
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
