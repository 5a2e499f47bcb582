"""Forward error correction: per-frame packet-level erasure codes (pure code, no sockets)."""
