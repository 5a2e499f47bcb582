"""RTP header parsing (RFC 3550), pure: what the testbed's own code reads of a packet."""

from __future__ import annotations

import struct
from typing import NamedTuple


class RtpHeader(NamedTuple):
    payload_type: int
    marker: int
    seq: int
    timestamp: int
    ssrc: int
    header_len: int


def parse_rtp_header(data: bytes) -> RtpHeader | None:
    """The header of a plain RTP packet; None for RTCP (RFC 5761) or what is not RTP."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    pt_byte = data[1]
    if 192 <= pt_byte <= 223:  # RTCP
        return None
    cc = data[0] & 0x0F
    hlen = 12 + 4 * cc
    if data[0] & 0x10 and len(data) >= hlen + 4:  # header extension
        hlen += 4 + 4 * struct.unpack_from("!H", data, hlen + 2)[0]
    if hlen > len(data):
        return None
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    return RtpHeader(pt_byte & 0x7F, pt_byte >> 7, seq, ts, ssrc, hlen)
