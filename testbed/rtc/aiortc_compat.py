"""The ONLY module that touches aiortc internals. Written for aiortc 1.16.0.

What it changes, and why (each a documented research knob, recorded in results):
- the sender's retransmission history (aiortc: 128 packets, module constant RTP_HISTORY_SIZE);
- the receiver's NACK behaviour: aiortc sends a NACK only when a new gap appears and never
  again; `retry` re-requests still-missing packets every interval up to a limit (like
  libwebrtc's NACK module); `off` sends none;
- a decoder that accepts synthetic frames silently (no PLI storm for undecodable bytes);
- pinned video bitrate: the VP8/H.264 clamp constants set to one value, so REMB cannot move it.

And what it observes, for identification only (timing comes from wire captures):
- every RTP packet the sender hands to DTLS (plain, before SRTP): RTX -> original seq;
- frames leaving the receiver's jitter buffer, NACKs and PLIs the receiver sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import aiortc
from aiortc import rtcdtlstransport, rtcrtpreceiver, rtcrtpsender
from aiortc.codecs import h264, vpx
from aiortc.jitterbuffer import JitterBuffer

from testbed.errors import UnavailableError

SUPPORTED_AIORTC = "1.16.0"
DEFAULT_HISTORY_PACKETS = 128


def check_version() -> None:
    if aiortc.__version__ != SUPPORTED_AIORTC:
        raise UnavailableError(
            f"aiortc {aiortc.__version__} is installed, but testbed.rtc.aiortc_compat was "
            f"written for {SUPPORTED_AIORTC} (it patches internals); install "
            f"aiortc=={SUPPORTED_AIORTC} (make setup does)"
        )


def parse_rtp_header(data: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(payload_type, marker, seq, timestamp, ssrc, header_len) of a plain RTP packet."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    pt_byte = data[1]
    if 192 <= pt_byte <= 223:  # RTCP (RFC 5761)
        return None
    cc = data[0] & 0x0F
    hlen = 12 + 4 * cc
    if data[0] & 0x10 and len(data) >= hlen + 4:  # header extension
        hlen += 4 + 4 * struct.unpack_from("!H", data, hlen + 2)[0]
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    return pt_byte & 0x7F, pt_byte >> 7, seq, ts, ssrc, hlen


# --- sender ---------------------------------------------------------------------------------


@dataclass
class SenderTap:
    """Every RTP packet the sender sends: (mono_ns, pt, ssrc, seq, ts, marker, rtx_of_seq)."""

    rtx_pt: int | None = None
    packets: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)
    rtcp_received: dict[str, int] = field(default_factory=dict)
    # wire RTP timestamp = (origin + the frame's pts in 90 kHz) mod 2^32; aiortc draws origin
    # at random: it is learnt from the first frame that is sent
    origin: int | None = None
    pending_pts: int | None = None


def install_sender(history_packets: int) -> SenderTap:
    """Set the retransmission history and observe what the sender sends."""
    check_version()
    rtcrtpsender.RTP_HISTORY_SIZE = history_packets  # type: ignore[attr-defined]  # read at use
    tap = SenderTap()
    original = rtcdtlstransport.RTCDtlsTransport._send_rtp

    async def _send_rtp(self: Any, data: bytes) -> None:
        head = parse_rtp_header(data)
        if head is not None:
            pt, marker, seq, ts, ssrc, hlen = head
            osn = -1
            if pt == tap.rtx_pt and len(data) >= hlen + 2:
                osn = struct.unpack_from("!H", data, hlen)[0]
            tap.packets.append((time.monotonic_ns(), pt, ssrc, seq, ts, marker, osn))
            if tap.origin is None and tap.pending_pts is not None and pt != tap.rtx_pt:
                tap.origin = (ts - tap.pending_pts) % (1 << 32)
        await original(self, data)

    rtcdtlstransport.RTCDtlsTransport._send_rtp = _send_rtp  # type: ignore[method-assign]

    original_next = rtcrtpsender.RTCRtpSender._next_encoded_frame

    async def _next_encoded_frame(self: Any, codec: Any) -> Any:
        frame = await original_next(self, codec)
        if frame is not None and tap.origin is None:
            tap.pending_pts = frame.timestamp  # its packets are sent next
        return frame

    rtcrtpsender.RTCRtpSender._next_encoded_frame = _next_encoded_frame  # type: ignore[method-assign]

    original_rtcp = rtcrtpsender.RTCRtpSender._handle_rtcp_packet

    async def _handle_rtcp_packet(self: Any, packet: Any) -> None:
        name = type(packet).__name__
        if name == "RtcpRtpfbPacket":
            name = "nack"
        elif name == "RtcpPsfbPacket":
            name = {1: "pli", 4: "fir", 15: "remb"}.get(packet.fmt, "psfb")
        tap.rtcp_received[name] = tap.rtcp_received.get(name, 0) + 1
        await original_rtcp(self, packet)

    rtcrtpsender.RTCRtpSender._handle_rtcp_packet = _handle_rtcp_packet  # type: ignore[method-assign]
    return tap


def pin_video_bitrate(bitrate_bps: int) -> None:
    """Pin aiortc's VP8 and H.264 encoders to one bitrate: REMB is clamped to it."""
    check_version()
    for module in (vpx, h264):
        module.MIN_BITRATE = module.MAX_BITRATE = module.DEFAULT_BITRATE = bitrate_bps  # type: ignore[attr-defined]


# --- receiver -------------------------------------------------------------------------------


@dataclass
class ReceiverTap:
    """Frames out of the jitter buffer (mono_ns, rtp_ts, bytes, head), NACKs and PLIs sent."""

    frames: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    nacks: list[tuple[int, list[int]]] = field(default_factory=list)
    plis: list[int] = field(default_factory=list)
    media_ssrc: int | None = None
    rtp_in: list[tuple[int, int, int, int]] = field(default_factory=list)  # mono_ns, pt, seq, ts


class NullDecoder:
    """Accepts any frame and returns no picture: synthetic frames are not a real bitstream."""

    def decode(self, encoded_frame: Any) -> list[Any]:
        return []


def install_receiver(synthetic: bool) -> ReceiverTap:
    check_version()
    tap = ReceiverTap()
    original_add = JitterBuffer.add

    def add(self: JitterBuffer, packet: Any) -> tuple[bool, Any]:
        pli, frame = original_add(self, packet)
        if frame is not None:
            tap.frames.append(
                (time.monotonic_ns(), frame.timestamp, len(frame.data), frame.data[:32])
            )
        return pli, frame

    JitterBuffer.add = add  # type: ignore[method-assign]

    original_handle = rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet

    async def _handle_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
        # what a hook-timed measurement would see (compared with the wire in bench floor)
        tap.rtp_in.append(
            (time.monotonic_ns(), packet.payload_type, packet.sequence_number, packet.timestamp)
        )
        await original_handle(self, packet, arrival_time_ms)

    rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet = _handle_rtp_packet  # type: ignore[method-assign]

    original_nack = rtcrtpreceiver.RTCRtpReceiver._send_rtcp_nack

    async def _send_rtcp_nack(self: Any, media_ssrc: int, lost: list[int]) -> None:
        tap.nacks.append((time.monotonic_ns(), list(lost)))
        tap.media_ssrc = media_ssrc
        await original_nack(self, media_ssrc, lost)

    rtcrtpreceiver.RTCRtpReceiver._send_rtcp_nack = _send_rtcp_nack  # type: ignore[method-assign]

    original_pli = rtcrtpreceiver.RTCRtpReceiver._send_rtcp_pli

    async def _send_rtcp_pli(self: Any, media_ssrc: int) -> None:
        tap.plis.append(time.monotonic_ns())
        await original_pli(self, media_ssrc)

    rtcrtpreceiver.RTCRtpReceiver._send_rtcp_pli = _send_rtcp_pli  # type: ignore[method-assign]

    if synthetic:
        real_get_decoder = rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]

        def get_decoder(codec: Any) -> Any:
            if codec.mimeType.lower() == "video/vp8":
                return NullDecoder()
            return real_get_decoder(codec)

        rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[attr-defined]
    return tap


def _nack_generator(receiver: Any) -> Any:
    return getattr(receiver, "_RTCRtpReceiver__nack_generator", None)


def disable_nack(receiver: Any) -> None:
    """No NACKs at all (loss is then repaired by nothing, or by FEC)."""
    receiver._RTCRtpReceiver__nack_generator = None


class NackRetrier:
    """Re-request packets still missing every interval_ms, at most max_retries times each.

    aiortc NACKs a packet once, when its gap appears; a lost retransmission is then only
    re-requested if a NEW gap happens to appear. libwebrtc re-sends NACKs every RTT.
    """

    def __init__(
        self, receiver: Any, tap: ReceiverTap, interval_ms: float, max_retries: int
    ) -> None:
        self.receiver = receiver
        self.tap = tap
        self.interval_ns = int(interval_ms * 1e6)
        self.max_retries = max_retries
        self.sent: dict[int, tuple[int, int]] = {}  # seq -> (last NACK ns, retries)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            gen = _nack_generator(self.receiver)
            if gen is None or self.tap.media_ssrc is None:
                continue
            now = time.monotonic_ns()
            due = []
            for seq in list(gen.missing):
                last, retries = self.sent.get(seq, (now, 0))
                if seq not in self.sent:
                    self.sent[seq] = (now, 0)  # aiortc NACKed it when the gap appeared
                elif now - last >= self.interval_ns and retries < self.max_retries:
                    self.sent[seq] = (now, retries + 1)
                    due.append(seq)
            for seq in list(self.sent):
                if seq not in gen.missing:
                    del self.sent[seq]
            if due:
                await self.receiver._send_rtcp_nack(self.tap.media_ssrc, sorted(due))
