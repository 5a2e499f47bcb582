"""16-bit RTP sequence numbers: they wrap, so "after" is modular (RFC 3550's serial arithmetic)."""

from __future__ import annotations

U16 = 1 << 16


def after(a: int, b: int) -> bool:
    """a comes after b (within half the number space)."""
    return a != b and (a - b) % U16 < U16 // 2
