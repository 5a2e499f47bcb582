"""Erasure codes over a block of media packets, and the repair packet's header.

A media packet becomes a symbol: 2-byte length + the packet's plain RTP bytes (header and
extensions included), zero-padded to the block's longest. A rebuilt symbol is therefore the
exact packet the sender sent, which the receiver hands to aiortc as if it had arrived.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import zfec

SCHEME_IDS = {"xor": 1, "rs": 2}
SCHEME_NAMES = {v: k for k, v in SCHEME_IDS.items()}
HEADER = struct.Struct(
    "!BBHHBBBxH"
)  # version, scheme, block_id, first_seq, k, m, index, symbol_len
VERSION = 1


@dataclass(frozen=True)
class RepairHeader:
    scheme: str
    block_id: int
    first_seq: int
    k: int
    m: int
    index: int
    symbol_len: int

    def pack(self) -> bytes:
        return HEADER.pack(VERSION, SCHEME_IDS[self.scheme], self.block_id, self.first_seq,
                           self.k, self.m, self.index, self.symbol_len)  # fmt: skip

    @classmethod
    def unpack(cls, payload: bytes) -> tuple[RepairHeader, bytes] | None:
        if len(payload) < HEADER.size:
            return None
        v, scheme, block_id, first_seq, k, m, index, slen = HEADER.unpack_from(payload)
        if v != VERSION or scheme not in SCHEME_NAMES or not k or not m or index >= m:
            return None
        symbol = payload[HEADER.size :]
        if len(symbol) != slen:
            return None
        return cls(SCHEME_NAMES[scheme], block_id, first_seq, k, m, index, slen), symbol


def to_symbols(packets: list[bytes]) -> list[bytes]:
    """Length-prefixed, equal-length symbols, as long as the longest packet needs."""
    return to_symbols_sized(packets, max(len(p) for p in packets) + 2)


def from_symbol(symbol: bytes) -> bytes | None:
    if len(symbol) < 2:
        return None
    n = struct.unpack_from("!H", symbol)[0]
    return symbol[2 : 2 + n] if 2 + n <= len(symbol) else None


def _xor(symbols: list[bytes]) -> bytes:
    acc = np.zeros(len(symbols[0]), dtype=np.uint8)
    for s in symbols:
        acc ^= np.frombuffer(s, dtype=np.uint8)
    return acc.tobytes()


def encode(scheme: str, symbols: list[bytes], m: int) -> list[bytes]:
    """m repair symbols for k equal-length media symbols."""
    k = len(symbols)
    if scheme == "xor":
        if m != 1:
            raise ValueError("xor makes exactly one repair symbol per block")
        return [_xor(symbols)]
    return list(zfec.Encoder(k, k + m).encode(symbols, list(range(k, k + m))))


def decode(
    scheme: str, k: int, m: int, media: dict[int, bytes], repairs: dict[int, bytes]
) -> dict[int, bytes]:
    """The missing media symbols {index: symbol}, given any k of k + m (else {})."""
    missing = [i for i in range(k) if i not in media]
    if not missing or len(media) + len(repairs) < k:
        return {}
    if scheme == "xor":
        if len(missing) != 1 or 0 not in repairs:
            return {}
        return {missing[0]: _xor([*media.values(), repairs[0]])}
    shares = [(i, s) for i, s in media.items()] + [(k + j, s) for j, s in repairs.items()]
    shares = sorted(shares)[:k]
    primary = zfec.Decoder(k, k + m).decode([s for _, s in shares], [i for i, _ in shares])
    return {i: bytes(primary[i]) for i in missing}


def to_symbols_sized(packets: list[bytes], symbol_len: int) -> list[bytes]:
    """Symbols of a given length (the receiver learns it from the repair header)."""
    return [struct.pack("!H", len(p)) + p + bytes(symbol_len - 2 - len(p)) for p in packets]
