"""The few IP header fields a queue discipline needs: the flow (5-tuple), ECT, and CE marking.

Packets are raw IPv4 or IPv6 as a TUN without packet info hands them over. Anything else
(too short, another version) is flow 0 and not ECN-capable.
"""

from __future__ import annotations

ECN_MASK = 0x03
ECN_CE = 0x03
TCP, UDP, SCTP, UDPLITE = 6, 17, 132, 136
_PORTS = (TCP, UDP, SCTP, UDPLITE)
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    """FNV-1a, 64 bits: a stable hash (Python's hash() of bytes is salted per process)."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK64
    return h


def flow_key(pkt: bytes) -> bytes:
    """Protocol, addresses and (for TCP/UDP/SCTP) ports, as bytes; b'' when not IP."""
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        proto = pkt[9]
        key = pkt[9:10] + pkt[12:20]
        if proto in _PORTS and len(pkt) >= ihl + 4:
            key += pkt[ihl : ihl + 4]
        return key
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        proto = pkt[6]  # the first next header (extension headers are not walked)
        key = pkt[6:7] + pkt[8:40]
        if proto in _PORTS and len(pkt) >= 44:
            key += pkt[40:44]
        return key
    return b""


def flow_hash(pkt: bytes) -> int:
    return fnv1a(flow_key(pkt))


def ecn_bits(pkt: bytes | bytearray) -> int:
    """The 2 ECN bits (0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE); 0 when not IP."""
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        return pkt[1] & ECN_MASK
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return (pkt[1] >> 4) & ECN_MASK
    return 0


def is_ect(pkt: bytes | bytearray) -> bool:
    return ecn_bits(pkt) != 0


def ipv4_checksum(header: bytes | bytearray) -> int:
    total = 0
    for i in range(0, len(header), 2):
        total += (header[i] << 8) | header[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def set_ce(pkt: bytearray) -> bool:
    """Mark an ECN-capable packet Congestion Experienced in place (IPv4: with its header
    checksum); False, and nothing changed, when it is not ECN-capable (INET_ECN_set_ce)."""
    if not is_ect(pkt):
        return False
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        pkt[1] |= ECN_CE
        pkt[10:12] = b"\0\0"
        pkt[10:12] = ipv4_checksum(pkt[:ihl]).to_bytes(2, "big")
    else:
        pkt[1] |= ECN_CE << 4
    return True
