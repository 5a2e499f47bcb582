"""A timestamped UDP probe for one-way delay and delivered bytes.

recv: binds, prints 'ready', records (seq, tx_real_ns, rx_kernel_real_ns, ip_bytes) per packet
      using the kernel's receive timestamp (SO_TIMESTAMPNS), and saves them as .npy.
send: paces packets of a given payload size at a given rate, each carrying its sequence number
      and the CLOCK_REALTIME time taken just before sendto().
All namespaces share one clock, so rx - tx is the one-way delay.
"""

from __future__ import annotations

import argparse
import ctypes
import select
import socket
import struct
import sys
import time

import numpy as np

HEADER = struct.Struct("!qq")  # seq, tx_real_ns
END = -1
UDP_IP_OVERHEAD = 28
SO_TIMESTAMPNS = 35


def receive(port: int, out: str, max_s: float, grace_s: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("0.0.0.0", port))
    print("ready", flush=True)
    rows: list[tuple[int, int, int, int]] = []
    deadline = time.monotonic() + max_s
    ended_at: float | None = None
    while True:
        now = time.monotonic()
        limit = deadline if ended_at is None else min(deadline, ended_at + grace_s)
        if now >= limit:
            break
        if not select.select([sock], [], [], limit - now)[0]:
            continue
        data, anc, _, _ = sock.recvmsg(65535, 64)
        rx = 0
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                rx = sec * 1_000_000_000 + nsec
        seq, tx = HEADER.unpack_from(data)
        if seq == END:
            ended_at = ended_at or time.monotonic()
            continue
        rows.append((seq, tx, rx, len(data) + UDP_IP_OVERHEAD))
    np.save(out, np.array(rows, dtype=np.int64).reshape(-1, 4))
    return 0


def send(dst: str, port: int, rate_mbps: float, payload: int, duration_s: float) -> int:
    libc = ctypes.CDLL(None)
    libc.prctl(29, 1, 0, 0, 0)  # timer slack 1 ns
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    ip_bytes = payload + UDP_IP_OVERHEAD
    interval_ns = ip_bytes * 8_000 / rate_mbps
    pad = b"\0" * (payload - HEADER.size)
    mono = time.monotonic_ns
    real = time.time_ns
    t0 = mono()
    n = int(duration_s * 1e9 / interval_ns)
    sent = 0
    for seq in range(n):
        due = t0 + int(seq * interval_ns)
        wait = due - mono()
        if wait > 200_000:
            select.select([], [], [], (wait - 150_000) / 1e9)
        while mono() < due:
            pass
        try:
            sock.sendto(HEADER.pack(seq, real()) + pad, (dst, port))
            sent += 1
        except BlockingIOError:
            pass
    for _ in range(5):
        sock.sendto(HEADER.pack(END, real()) + pad[:16], (dst, port))
        time.sleep(0.01)
    elapsed = (mono() - t0) / 1e9
    print(f"sent {sent} in {elapsed:.3f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--port", type=int, default=9000)
    r.add_argument("--out", required=True)
    r.add_argument("--max-s", type=float, default=120)
    r.add_argument("--grace-s", type=float, default=1.0)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, default=9000)
    s.add_argument("--rate-mbps", type=float, required=True)
    s.add_argument("--payload", type=int, default=1200)
    s.add_argument("--duration-s", type=float, required=True)
    a = ap.parse_args(argv)
    if a.mode == "recv":
        return receive(a.port, a.out, a.max_s, a.grace_s)
    return send(a.dst, a.port, a.rate_mbps, a.payload, a.duration_s)


if __name__ == "__main__":
    sys.exit(main())
