"""What each packet on the wire was, read from the capture: for stacks that cannot log their
own packets (a browser). Pure; the inputs are a pcap and the payload types both ends agreed on.

Sender side: every RTP packet from the sender to the receiver as a row of the endpoint record's
`sender/packets` table: media (also inside RED), audio, rtx (its original's sequence number: the first
two payload bytes, readable only without SRTP), padding (RTX packets that carry only padding),
fec (ULPFEC inside RED, or FlexFEC-03: the sequence base and mask of what it protects, from
its header; readable only without SRTP). Receiver side: its RTCP feedback (NACK entries, one
row per requested sequence number, PLI, FIR), readable only without SRTCP.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.rtc import record
from testbed.rtc.capture import udp_datagrams

Ports = tuple[int, int] | None  # (source, destination) UDP ports of a session's flow

MASK_BITS = 63  # what an Int64 mask column holds; libwebrtc protects at most 48 packets


@dataclass(frozen=True)
class PayloadTypes:
    """The payload types of a negotiated session (from its SDP): the video's, and the audio's
    beside it (same transport: BUNDLE)."""

    media: dict[int, str] = field(default_factory=dict)  # pt -> codec name (lower case)
    rtx: dict[int, int] = field(default_factory=dict)  # rtx pt -> the pt it repairs
    red: int | None = None
    ulpfec: int | None = None
    flexfec: int | None = None
    audio: dict[int, str] = field(default_factory=dict)  # pt -> audio codec name (lower case)

    def to_dict(self) -> dict[str, Any]:
        return {"media": {str(k): v for k, v in self.media.items()},
                "rtx": {str(k): v for k, v in self.rtx.items()},
                "red": self.red, "ulpfec": self.ulpfec, "flexfec": self.flexfec,
                "audio": {str(k): v for k, v in self.audio.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PayloadTypes:
        return cls({int(k): v for k, v in d["media"].items()},
                   {int(k): int(v) for k, v in d["rtx"].items()}, d.get("red"), d.get("ulpfec"),
                   d.get("flexfec"), {int(k): v for k, v in d.get("audio", {}).items()})  # fmt: skip


def _section(sdp: str, kind: str) -> str:
    return sdp.split(f"m={kind}", 1)[1].split("\nm=", 1)[0] if f"m={kind}" in sdp else ""


def audio_payload_types(sdp: str) -> dict[int, str]:
    """The audio section's payload types (pt -> codec, lower case): none without audio."""
    return {int(pt): name.lower()
            for pt, name in re.findall(r"a=rtpmap:(\d+) ([\w-]+)/48000", _section(sdp, "audio"))}  # fmt: skip


def payload_types(sdp: str) -> PayloadTypes:
    """The session's payload types (an answer, or a description after negotiation)."""
    video = _section(sdp, "video")
    media: dict[int, str] = {}
    pts: dict[str, int] = {}
    for pt, name in re.findall(r"a=rtpmap:(\d+) ([\w-]+)/90000", video):
        low = name.lower()
        if low in ("vp8", "vp9", "h264", "av1", "h265"):
            media[int(pt)] = low
        else:
            pts.setdefault(low, int(pt))
    rtx = {int(pt): int(apt) for pt, apt in re.findall(r"a=fmtp:(\d+) apt=(\d+)", video)}
    return PayloadTypes(media, rtx, pts.get("red"), pts.get("ulpfec"), pts.get("flexfec-03"),
                        audio_payload_types(sdp))  # fmt: skip


def rtp_payload(udp: bytes) -> tuple[int, bytes, int] | None:
    """(header length, payload as captured, padding flag) of an RTP packet; None if its
    header does not fit the capture."""
    if len(udp) < 12:
        return None
    cc, has_ext, padded = udp[0] & 0x0F, udp[0] & 0x10, udp[0] & 0x20
    off = 12 + 4 * cc
    if has_ext:
        if len(udp) < off + 4:
            return None
        off += 4 + 4 * struct.unpack_from("!H", udp, off + 2)[0]
    if len(udp) < off:
        return None
    return off, udp[off:], padded


def ulpfec_protection(fec: bytes) -> tuple[int, int] | None:
    """(sequence base, mask: bit i = base + i) of a ULPFEC header (RFC 5109), level 0."""
    if len(fec) < 14:
        return None
    base = struct.unpack_from("!H", fec, 2)[0]
    long_mask = fec[0] & 0x40
    if long_mask and len(fec) >= 18:
        bits, width = int.from_bytes(fec[12:18], "big"), 48
    else:
        bits, width = int.from_bytes(fec[12:14], "big"), 16
    return base, _mask(bits, width)


def flexfec_protection(fec: bytes) -> tuple[int, int, int] | None:
    """(protected SSRC, sequence base, mask) of a FlexFEC-03 header as libwebrtc writes it (one
    SSRC; masks of 15, 46 or 109 bits, each chunk led by its K bit)."""
    if len(fec) < 20:
        return None
    ssrc = struct.unpack_from("!I", fec, 12)[0]
    base = struct.unpack_from("!H", fec, 16)[0]
    off, bits, width = 18, 0, 0
    for chunk_bytes in (2, 4, 8):
        if len(fec) < off + chunk_bytes:
            return None
        chunk = int.from_bytes(fec[off : off + chunk_bytes], "big")
        k_bit = chunk >> (8 * chunk_bytes - 1)
        n = 8 * chunk_bytes - 1
        bits = (bits << n) | (chunk & ((1 << n) - 1))
        width += n
        off += chunk_bytes
        if k_bit:
            break
    return ssrc, base, _mask(bits, width)


def _mask(bits: int, width: int) -> int:
    """A big-endian protection mask (first bit = base + 0) as an int whose bit i = base + i."""
    out = 0
    for i in range(min(width, MASK_BITS)):
        if bits >> (width - 1 - i) & 1:
            out |= 1 << i
    return out


def sender_packets(pcap: Path, src: str, dst: str, pts: PayloadTypes, offset_ns: int,
                   encrypted: bool, ports: Ports = None) -> pd.DataFrame:  # fmt: skip
    """The sender record's packets table from its own wire (t_ns: the capture's time); ports:
    the session's (source, destination) UDP ports, when known, so stray datagrams between the
    same hosts are not taken for media."""
    rows = []
    for t, s, d, total, proto, udp, sport, dport in udp_datagrams(pcap):
        if proto != 17 or s != src or d != dst or len(udp) < 12 or not 128 <= udp[0] <= 191:
            continue
        if ports is not None and (sport, dport) != ports:
            continue
        pt, marker = udp[1] & 0x7F, bool(udp[1] >> 7)
        if 72 <= pt <= 76:  # RTCP (PT 200-204 with the marker bit)
            continue
        seq, ts, ssrc = struct.unpack_from("!HII", udp, 2)
        parsed = rtp_payload(udp)
        body = parsed[1] if parsed else b""
        kind, original, mask = "other", None, None
        if pt in pts.media:
            kind = "media"
        elif pt in pts.audio:
            kind = "audio"
        elif pt == pts.red:
            inner = body[0] & 0x7F if body and not encrypted else None
            kind = "fec" if inner is not None and inner == pts.ulpfec else "media"
            if kind == "fec" and (p := ulpfec_protection(body[1:])) is not None:
                original, mask = p
        elif pt == pts.ulpfec:
            kind = "fec"
            if not encrypted and (p := ulpfec_protection(body)) is not None:
                original, mask = p
        elif pt == pts.flexfec:
            kind = "fec"
            if not encrypted and (f := flexfec_protection(body)) is not None:
                original, mask = f[1], f[2]
        elif pt in pts.rtx:
            whole = total - 28 == len(udp)
            if parsed is not None and parsed[2] and _only_padding(parsed[1], whole):
                kind = "padding"
            else:
                kind = "rtx"
                if not encrypted and len(body) >= 2:
                    original = struct.unpack_from("!H", body)[0]
        protected = bin(mask).count("1") if mask is not None else None
        rows.append((t - offset_ns, kind, ssrc, seq, ts, pt, marker, original, protected, mask))
    return record.table("sender", "packets").frame(rows)


def _only_padding(body: bytes, whole: bool) -> bool:
    """Whether a padded RTX packet carries only padding (libwebrtc's padding packets: zeros,
    the last byte counting them). Cut by the snap length, zeros where an original's sequence
    number would be say so."""
    if not body:
        return True
    return body[-1] >= len(body) if whole else body[:2] == b"\0\0"


def receiver_feedback(pcap: Path, src: str, dst: str, offset_ns: int,
                      ports: Ports = None) -> pd.DataFrame:  # fmt: skip
    """The receiver record's feedback table from its own wire: RTCP it sent (unencrypted)."""
    rows: list[tuple[int, str, int | None]] = []
    for t, s, d, _total, proto, udp, sport, dport in udp_datagrams(pcap):
        if proto != 17 or s != src or d != dst or len(udp) < 8 or not 128 <= udp[0] <= 191:
            continue
        if ports is not None and (sport, dport) != ports:
            continue
        if not 192 <= udp[1] <= 223:
            continue
        off = 0
        while off + 4 <= len(udp):
            fmt, ptype = udp[off] & 0x1F, udp[off + 1]
            length = (struct.unpack_from("!H", udp, off + 2)[0] + 1) * 4
            end = min(off + length, len(udp))
            if ptype == 205 and fmt == 1:  # generic NACK: (PID, BLP) entries after 12 bytes
                for e in range(off + 12, end - 3, 4):
                    pid, blp = struct.unpack_from("!HH", udp, e)
                    rows.append((t - offset_ns, "nack", pid))
                    rows += [(t - offset_ns, "nack", (pid + 1 + b) & 0xFFFF)
                             for b in range(16) if blp >> b & 1]  # fmt: skip
            elif ptype == 206 and fmt in (1, 4):
                rows.append((t - offset_ns, "pli" if fmt == 1 else "fir", None))
            off += length
    return record.table("receiver", "feedback").frame(rows)


def payload_padding(packets: pd.DataFrame, nacks: pd.DataFrame) -> pd.DataFrame:
    """libwebrtc probes and pads with old packets resent on RTX ("payload padding"): an RTX
    packet whose original no NACK (as it reached the sender: `nacks` from the sender's own
    wire) had asked for before it went out is padding, not a retransmission."""
    rtx = packets.kind == "rtx"
    if not rtx.any():
        return packets
    asked = nacks[nacks.kind == "nack"].groupby("seq").t_ns.min()
    first_ask = packets.original_seq.map(asked)
    probe = rtx & packets.original_seq.notna() & ~(first_ask <= packets.t_ns).fillna(False)
    out = packets.copy()
    out.loc[probe, "kind"] = "padding"
    return out
