"""Hostile datagrams at a live session's media port: the receiver and sender must count and
drop what they cannot parse, never stop. Crafted with scapy (its RTP, RTCP and STUN layers, with
header fields that lie about their lengths), sent from a testbed host by one UDP socket:

  python -m testbed.net.hostile --dst IP --port P --pps N --duration S --seed K --out STATS.json

Kinds, round robin: truncated RTP (2-11 bytes), RTP whose CSRC count, extension bit and padding
promise bytes that are not there, RTCP whose length field says 30000 words, STUN whose length
lies, DTLS-looking records of garbage, and random bytes of random length.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import time
from collections import Counter
from pathlib import Path

KINDS = ("truncated_rtp", "rtp_lying_lengths", "rtcp_lying_length", "stun_lying_length",
         "dtls_garbage", "random_bytes")  # fmt: skip


def craft(kind: str, rng: random.Random) -> bytes:
    """One datagram of KIND (scapy builds the headers; the lies are in their length fields)."""
    from scapy.contrib.rtcp import RTCP
    from scapy.contrib.stun import STUN
    from scapy.layers.rtp import RTP

    if kind == "truncated_rtp":
        full = bytes(RTP(payload_type=rng.randrange(96, 128), sequence=rng.randrange(1 << 16)))
        return full[: rng.randrange(2, 12)]
    if kind == "rtp_lying_lengths":  # 15 CSRCs, an extension and padding that are not there
        head = RTP(numsync=15, sync=[], extension=1, padding=1, payload_type=rng.randrange(96, 128),
                   sequence=rng.randrange(1 << 16), timestamp=rng.randrange(1 << 32),
                   sourcesync=rng.randrange(1 << 32))  # fmt: skip
        return bytes(head) + bytes([0xFF])  # the padding count: 255 bytes
    if kind == "rtcp_lying_length":
        return bytes(RTCP(packet_type=rng.randrange(200, 207), length=30000))
    if kind == "stun_lying_length":
        return bytes(STUN(stun_message_type=1, length=rng.randrange(100, 1000)))
    if kind == "dtls_garbage":  # content type 20-23, DTLS 1.2, a lying record length
        return bytes([rng.randrange(20, 24), 0xFE, 0xFD]) + rng.randbytes(rng.randrange(10, 200))
    if kind == "random_bytes":
        return rng.randbytes(rng.randrange(1, 1200))
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def send(dst: str, port: int, pps: float, duration_s: float, seed: int) -> Counter[str]:
    """Datagrams at PPS for DURATION_S, paced by the clock (a refused send is counted too)."""
    rng = random.Random(seed)
    sent: Counter[str] = Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) - start < duration_s:
            due = start + n / pps
            if due > now:
                time.sleep(due - now)
            kind = KINDS[n % len(KINDS)]
            try:
                sock.sendto(craft(kind, rng), (dst, port))
                sent[kind] += 1
            except OSError:
                sent["refused"] += 1
            n += 1
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pps", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--start", type=float, default=0.0, help="seconds to wait first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    time.sleep(args.start)
    sent = send(args.dst, args.port, args.pps, args.duration, args.seed)
    Path(args.out).write_text(json.dumps({"sent": dict(sent), "total": sum(sent.values())}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
