"""The ONLY module that touches aiortc internals. Written for aiortc 1.16.0.

What it changes, and why (each a documented research knob, recorded in results):
- the sender's retransmission history (aiortc: 128 packets, module constant RTP_HISTORY_SIZE),
  and with it the receiver's: aiortc's NackGenerator forgets missing packets older than the
  newest minus RTP_HISTORY_SIZE (its own binding of the constant), so with only the sender's
  raised, a packet whose retransmission was lost during a burst (a key frame) is never asked
  for again, the jitter buffer waits for it until it overflows (512 packets), drops the frames
  behind it and sends a PLI, whose key frame starts the next burst;
- the receiver's NACK behaviour: aiortc sends a NACK only when a new gap appears and never
  again; `retry` re-requests still-missing packets every interval up to a limit (like
  libwebrtc's NACK module); `off` sends none;
- late packets (late_packets: drop, not the default): aiortc's jitter buffer takes a packet 100+
  sequence numbers behind its window for a restarted stream and flushes everything with a PLI;
  within one session that packet is a late duplicate retransmission, which drop ignores, as
  libwebrtc does. What the jitter buffer discards is logged either way (jitter_events);
- a decoder that accepts synthetic frames silently (no PLI storm for undecodable bytes);
- pinned video bitrate: the VP8/H.264 clamp constants set to one value, so REMB cannot move it;
  or, under an ABR controller, clamps widened and the encoder's target set by the controller
  (REMB then goes to the controller, not to aiortc's encoder);
- FEC: repair packets sent after each frame's media on the same DTLS/SRTP transport (own
  payload type and SSRC); at the receiver, repair packets are taken before aiortc's router,
  rebuilt media packets are handed to aiortc as if they had arrived (and, as in libwebrtc, not
  counted as received in RTCP receiver reports), and NACKs wait for FEC (testbed.fec.receiver);
- ICE consent checks (aioice, RFC 7675) given STUN's retransmissions: aioice sends each check
  once and gives up after 0.5 s, and six failures in a row close the connection, so a session
  whose round trip exceeds 0.5 s (one way 250+ ms, or a full 1000 ms queue) died ~30 s in
  (`testbed stream` at 400 ms one way: "sender: no 'done'"; RFC 8867 5.6 with its 1000 ms
  queue). RFC 7675 expires consent after 30 s without a response; libnice retransmits its
  checks too. Each check now waits 0.5 + 1 + 2 s for its answer.

And what it observes, for identification only (timing comes from wire captures):
- every RTP packet the sender hands to DTLS (plain, before SRTP): RTX -> original seq;
- the sender reports it sends, for an RTT that matches receiver reports against any recent SR
  (aiortc matches only the last one and its RTT stays unknown for seconds: testbed.rtc.rttmeter);
- frames leaving the receiver's jitter buffer, NACKs and PLIs the receiver sends.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiortc
from aioice.ice import StunProtocol
from aiortc import rtcdtlstransport, rtcrtpreceiver, rtcrtpsender
from aiortc.codecs import h264, opus, vpx
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer

from testbed.abr.base import Feedback
from testbed.abr.framefeedback import FrameAssembler, pack_app, unpack_app
from testbed.errors import UnavailableError
from testbed.fec.receiver import FecReceiver
from testbed.fec.sender import FecSender
from testbed.rtc.aiortc.stack import DEFAULT_HISTORY_PACKETS
from testbed.rtc.loops import BackgroundLoop
from testbed.rtc.rtp import parse_rtp_header
from testbed.rtc.rttmeter import RttMeter
from testbed.seqnum import U16

SUPPORTED_AIORTC = "1.16.0"
FEC_PAYLOAD_TYPE = 120  # not among aiortc's video payload types (checked against the SDP)


CONSENT_RETRANSMISSIONS = 2  # a consent check waits 0.5 + 1 + 2 = 3.5 s for its answer


def check_version() -> None:
    if aiortc.__version__ != SUPPORTED_AIORTC:
        raise UnavailableError(
            f"aiortc {aiortc.__version__} is installed, but testbed.rtc.aiortc.compat was "
            f"written for {SUPPORTED_AIORTC} (it patches internals); install "
            f"aiortc=={SUPPORTED_AIORTC} (make setup does)"
        )
    _patch_consent()


def _patch_consent() -> None:
    """Consent checks (the only STUN requests aioice sends with retransmissions=0) retransmit
    CONSENT_RETRANSMISSIONS times: a round trip up to 3.5 s keeps the connection (see above)."""
    request = StunProtocol.request
    if getattr(request, "testbed_consent", False):
        return
    if "retransmissions" not in inspect.signature(request).parameters:
        raise UnavailableError(
            "aioice's StunProtocol.request has no retransmissions parameter: "
            "testbed.rtc.aiortc.compat cannot patch its consent checks; install aioice==0.13.0"
        )

    async def patched(self: StunProtocol, message: Any, addr: tuple[str, int],
                      integrity_key: bytes | None = None,
                      retransmissions: int | None = None) -> Any:  # fmt: skip
        if retransmissions == 0:
            retransmissions = CONSENT_RETRANSMISSIONS
        return await request(self, message, addr, integrity_key=integrity_key,
                             retransmissions=retransmissions)  # fmt: skip

    patched.testbed_consent = True  # type: ignore[attr-defined]
    StunProtocol.request = patched  # type: ignore[method-assign,assignment]


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
    media_pt: int | None = None
    audio_pt: int | None = None  # audio beside the video: recorded, kept out of the video's
    fec: FecSender | None = None
    on_feedback: Callable[[Any, Feedback], None] | None = None  # (RTCRtpSender, event)
    take_remb: bool = False  # REMB feeds the controller only, not aiortc's encoder
    on_keyframe_request: Callable[[], None] | None = None  # PLI/FIR, for sources that encode
    keyframe_requests: int = 0
    first_sent: dict[int, int] = field(default_factory=dict)  # rtp ts -> first media packet ns
    rtt: RttMeter = field(default_factory=RttMeter)  # the sender's, matched against recent SRs
    on_frame_report: Callable[[Any, list[tuple[int, int, int]], int], None] | None = None


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
            if pt == tap.media_pt and ts not in tap.first_sent:
                tap.first_sent[ts] = tap.packets[-1][0]
                if len(tap.first_sent) > 4096:
                    for old in list(tap.first_sent)[:2048]:
                        del tap.first_sent[old]
            if (
                tap.origin is None
                and tap.pending_pts is not None
                and pt != tap.rtx_pt
                and pt != tap.audio_pt
            ):
                tap.origin = (ts - tap.pending_pts) % (1 << 32)
        await original(self, data)
        if head is not None and tap.fec is not None and head[0] == tap.media_pt:
            for repair in tap.fec.on_media(head[2], head[3], bool(head[1]), data):
                tap.packets.append((time.monotonic_ns(), tap.fec.payload_type, tap.fec.ssrc,
                                    struct.unpack_from("!H", repair, 2)[0], head[3], 0, -1))  # fmt: skip
                await original(self, repair)

    rtcdtlstransport.RTCDtlsTransport._send_rtp = _send_rtp  # type: ignore[method-assign]

    original_next = rtcrtpsender.RTCRtpSender._next_encoded_frame

    async def _next_encoded_frame(self: Any, codec: Any) -> Any:
        frame = await original_next(self, codec)
        if frame is not None and tap.origin is None and self.kind == "video":
            tap.pending_pts = frame.timestamp  # its packets are sent next
        return frame

    rtcrtpsender.RTCRtpSender._next_encoded_frame = _next_encoded_frame  # type: ignore[method-assign]

    original_send_rtcp = rtcrtpsender.RTCRtpSender._send_rtcp

    async def _send_rtcp(self: Any, packets: list[Any]) -> None:
        for packet in packets:
            if type(packet).__name__ == "RtcpSrPacket":
                tap.rtt.on_sender_report(packet.sender_info.ntp_timestamp, time.time())
        await original_send_rtcp(self, packets)

    rtcrtpsender.RTCRtpSender._send_rtcp = _send_rtcp  # type: ignore[method-assign]

    original_rtcp = rtcrtpsender.RTCRtpSender._handle_rtcp_packet

    async def _handle_rtcp_packet(self: Any, packet: Any) -> None:
        name = type(packet).__name__
        if name == "RtcpRtpfbPacket":
            name = "nack"
        elif name == "RtcpPsfbPacket":
            name = {1: "pli", 4: "fir", 15: "remb"}.get(packet.fmt, "psfb")
        tap.rtcp_received[name] = tap.rtcp_received.get(name, 0) + 1
        if name in ("RtcpRrPacket", "RtcpSrPacket"):
            for report in packet.reports:
                if report.ssrc == self._ssrc:
                    tap.rtt.on_report_block(report.lsr, report.dlsr, time.time())
        if not (name == "remb" and tap.take_remb):
            await original_rtcp(self, packet)
        if tap.on_feedback is not None and self.kind == "video":  # the controller's
            for event in _feedback(self, packet, name, tap.rtt.rtt_ms):
                tap.on_feedback(self, event)

    rtcrtpsender.RTCRtpSender._handle_rtcp_packet = _handle_rtcp_packet  # type: ignore[method-assign]

    original_keyframe = rtcrtpsender.RTCRtpSender._send_keyframe

    def _send_keyframe(self: Any) -> None:
        # aiortc only honours a PLI in its own encoders; a track that returns encoded
        # packets (the roi source) is told here
        tap.keyframe_requests += 1
        if tap.on_keyframe_request is not None:
            tap.on_keyframe_request()
        original_keyframe(self)

    rtcrtpsender.RTCRtpSender._send_keyframe = _send_keyframe  # type: ignore[method-assign]

    original_rtcp_data = rtcdtlstransport.RTCDtlsTransport._handle_rtcp_data

    async def _handle_rtcp_data(self: Any, data: bytes) -> None:
        entries = unpack_app(data)  # per-frame feedback: aiortc would skip it
        if entries is None:
            await original_rtcp_data(self, data)
        elif tap.on_frame_report is not None:
            senders = list(self._rtp_router.senders.values())
            tap.on_frame_report(senders[0] if senders else None, entries, time.monotonic_ns())

    rtcdtlstransport.RTCDtlsTransport._handle_rtcp_data = _handle_rtcp_data  # type: ignore[method-assign]
    return tap


def _feedback(sender: Any, packet: Any, name: str, rtt_ms: float | None) -> list[Feedback]:
    """aiortc's RTCP packets as controller feedback (rtt_ms: the tap's meter, updated first)."""
    now_ms = time.monotonic_ns() / 1e6
    if name == "remb":
        from aiortc.rtp import unpack_remb_fci

        bitrate, ssrcs = unpack_remb_fci(packet.fci)
        return [Feedback(now_ms, "remb", remb_bps=float(bitrate))] if sender._ssrc in ssrcs else []
    if name == "nack":
        return [Feedback(now_ms, "nack", nack_packets=len(packet.lost))]
    if name in ("RtcpRrPacket", "RtcpSrPacket"):
        sent = getattr(sender, "_RTCRtpSender__packet_count", None)
        return [
            Feedback(now_ms, "report", loss_fraction=r.fraction_lost / 256, packets_lost=r.packets_lost,
                     packets_sent=sent, rtt_ms=rtt_ms)
            for r in packet.reports if r.ssrc == sender._ssrc
        ]  # fmt: skip
    return []


def unclamp_video_bitrate(min_bps: int, max_bps: int) -> None:
    """Let a controller set any encoder target in [min_bps, max_bps] (aiortc: 0.25-1.5 Mbps VP8)."""
    check_version()
    for module in (vpx, h264):
        module.MIN_BITRATE, module.MAX_BITRATE = min_bps, max_bps  # type: ignore[attr-defined]


def set_encoder_bitrate(sender: Any, bitrate_bps: int) -> bool:
    """Give the sender's encoder a new target; False if there is no encoder (yet)."""
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)
    if encoder is None or not hasattr(encoder, "target_bitrate"):
        return False
    encoder.target_bitrate = bitrate_bps
    return True


def set_opus_bitrate(bitrate_bps: int) -> None:
    """aiortc's Opus encoder at a constant bitrate (CBR: every packet the same size)."""
    check_version()
    original = opus.OpusEncoder.__init__

    def __init__(self: Any) -> None:
        original(self)
        self.codec.bit_rate = bitrate_bps
        self.codec.options = {"application": "voip", "vbr": "off"}

    opus.OpusEncoder.__init__ = __init__  # type: ignore[method-assign]


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
    media_pt: int | None = None
    rtx_pt: int | None = None
    audio_pt: int | None = None
    assembler: FrameAssembler | None = None  # per-frame feedback for ABR controllers
    fec: FecReceiver | None = None
    send_nack_now: Callable[[Any, int, list[int]], Awaitable[None]] | None = None
    # what aiortc's jitter buffer did with a packet other than keep it: (mono_ns, kind, seq)
    jitter_events: list[tuple[int, str, int]] = field(default_factory=list)


def jitter_event(buffer: JitterBuffer, seq: int) -> str | None:
    """What JitterBuffer.add is about to do with this packet, if not simply keep it (aiortc 1.16
    logic, read from its source): `stale` = older than the buffer's origin by < 100, silently
    dropped (a retransmission that came after the buffer moved on); `reset` = older by >= 100:
    every buffered packet is dropped and a PLI sent; `overflow` = beyond the capacity: the oldest
    frames are dropped (complete or not) and a PLI sent."""
    origin = buffer._origin
    if origin is None:
        return None
    delta = (seq - origin) % U16
    misorder = (origin - seq) % U16
    if misorder < delta:
        return "reset" if misorder >= MAX_MISORDER else "stale"
    return "overflow" if delta >= buffer.capacity else None


class NullDecoder:
    """Accepts any frame and returns no picture: synthetic frames are not a real bitstream."""

    def decode(self, encoded_frame: Any) -> list[Any]:
        return []


def install_receiver(
    synthetic: bool, history_packets: int = DEFAULT_HISTORY_PACKETS, drop_late: bool = False
) -> ReceiverTap:
    check_version()
    # how far back missing packets are still NACKed: as far as the sender keeps them
    rtcrtpreceiver.RTP_HISTORY_SIZE = history_packets  # type: ignore[attr-defined]  # read at use
    tap = ReceiverTap()
    original_add = JitterBuffer.add

    def add(self: JitterBuffer, packet: Any) -> tuple[bool, Any]:
        if not self._is_video:  # the audio's buffer: not the video's events or frames
            return original_add(self, packet)
        event = jitter_event(self, packet.sequence_number)
        if event is not None:
            tap.jitter_events.append((time.monotonic_ns(), event, packet.sequence_number))
            if event == "reset" and drop_late:  # one session never restarts its numbering
                return False, None
        pli, frame = original_add(self, packet)
        if frame is not None and self._is_video:
            tap.frames.append(
                (time.monotonic_ns(), frame.timestamp, len(frame.data), frame.data[:64])
            )
        return pli, frame

    JitterBuffer.add = add  # type: ignore[method-assign]

    original_handle = rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet

    async def _handle_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
        # what a hook-timed measurement would see (compared with the wire in bench floor)
        now = time.monotonic_ns()
        tap.rtp_in.append((now, packet.payload_type, packet.sequence_number, packet.timestamp))
        if tap.assembler is not None:
            if packet.payload_type == tap.media_pt:
                tap.assembler.on_packet(
                    packet.sequence_number, packet.timestamp, bool(packet.marker), now
                )
            elif packet.payload_type == tap.rtx_pt and len(packet.payload) >= 2:
                osn = struct.unpack_from("!H", packet.payload)[0]
                tap.assembler.on_packet(osn, packet.timestamp, bool(packet.marker), now)
        await original_handle(self, packet, arrival_time_ms)

    rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet = _handle_rtp_packet  # type: ignore[method-assign]

    original_nack = rtcrtpreceiver.RTCRtpReceiver._send_rtcp_nack

    async def send_nack_now(self: Any, media_ssrc: int, lost: list[int]) -> None:
        tap.nacks.append((time.monotonic_ns(), list(lost)))
        tap.media_ssrc = media_ssrc
        await original_nack(self, media_ssrc, lost)

    async def _send_rtcp_nack(self: Any, media_ssrc: int, lost: list[int]) -> None:
        tap.media_ssrc = media_ssrc
        if tap.fec is not None:  # what FEC may still rebuild waits (FecNackReleaser sends it)
            lost = tap.fec.filter_nack(list(lost), time.monotonic_ns())
        if lost:
            await send_nack_now(self, media_ssrc, lost)

    tap.send_nack_now = send_nack_now
    rtcrtpreceiver.RTCRtpReceiver._send_rtcp_nack = _send_rtcp_nack  # type: ignore[method-assign]

    original_data = rtcdtlstransport.RTCDtlsTransport._handle_rtp_data

    async def _handle_rtp_data(self: Any, data: bytes, arrival_time_ms: int) -> None:
        head = parse_rtp_header(data) if tap.fec is not None else None
        if head is None:
            await original_data(self, data, arrival_time_ms)
            return
        pt, _, seq, ts, _, hlen = head
        now = time.monotonic_ns()
        if pt == FEC_PAYLOAD_TYPE:
            rebuilt = tap.fec.on_repair(data[hlen:], ts, now)  # type: ignore[union-attr]
        else:
            await original_data(self, data, arrival_time_ms)
            rebuilt = tap.fec.on_media(seq, ts, data, now) if pt == tap.media_pt else []  # type: ignore[union-attr]
        for packet in rebuilt:
            await original_data(self, packet, arrival_time_ms)
            _uncount_received(self, packet)

    rtcdtlstransport.RTCDtlsTransport._handle_rtp_data = _handle_rtp_data  # type: ignore[method-assign]

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


def decoded_rtp_timestamp(tap: ReceiverTap, pts: int) -> int | None:
    """The RTP timestamp of a decoded frame: aiortc's TimestampMapper makes pts relative to the
    first frame out of the jitter buffer (wraps are handled the same way, mod 2^32)."""
    if not tap.frames:
        return None
    return (tap.frames[0][1] + pts) % (1 << 32)


def _uncount_received(transport: Any, data: bytes) -> None:
    """A rebuilt packet is not a received one in RTCP receiver reports (libwebrtc does the same)."""
    head = parse_rtp_header(data)
    receiver = transport._rtp_router.ssrc_table.get(head[4]) if head else None
    streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
    if head and head[4] in streams:
        streams[head[4]].packets_received -= 1


class FecNackReleaser(BackgroundLoop):
    """Every 2 ms, sends the NACKs that waited for FEC in vain (testbed.fec.receiver)."""

    def __init__(self, receiver: Any, tap: ReceiverTap) -> None:
        self.receiver, self.tap = receiver, tap

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.002)
            fec, send = self.tap.fec, self.tap.send_nack_now
            if fec is None or send is None or self.tap.media_ssrc is None:
                continue
            due = fec.due_nacks(time.monotonic_ns())
            gen = _nack_generator(self.receiver)
            if gen is not None:  # not if it arrived (as RTX) meanwhile
                due = [s for s in due if s in gen.missing]
            if due:
                await send(self.receiver, self.tap.media_ssrc, due)


class _RawRtcp:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data


class FrameFeedbackSender(BackgroundLoop):
    """Every 100 ms, the frames completed since: an RTCP APP packet (testbed.abr.framefeedback)."""

    def __init__(self, receiver: Any, tap: ReceiverTap) -> None:
        self.receiver, self.tap = receiver, tap
        tap.assembler = FrameAssembler()
        self.reports = 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            assert self.tap.assembler is not None
            entries = self.tap.assembler.take()
            if entries:
                ssrc = getattr(self.receiver, "_RTCRtpReceiver__rtcp_ssrc", None) or 0
                await self.receiver._send_rtcp(
                    _RawRtcp(pack_app(ssrc, entries, time.monotonic_ns()))
                )
                self.reports += 1


def _nack_generator(receiver: Any) -> Any:
    return getattr(receiver, "_RTCRtpReceiver__nack_generator", None)


def disable_nack(receiver: Any) -> None:
    """No NACKs at all (loss is then repaired by nothing, or by FEC)."""
    receiver._RTCRtpReceiver__nack_generator = None


class NackRetrier(BackgroundLoop):
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
