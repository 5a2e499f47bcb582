"""The emulator's I/O parts shared by its loops: the TUN device, kernel arrival stamps, and the
timing constants of the loops (emu_process.Emulator, emu_queue.QueueEmulator)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import time
from collections import deque

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_TIMERSLACK = 29
SPIN_MIN_NS = 40_000  # spin margin before a release: adapts between these bounds
SPIN_MAX_NS = 300_000
SPIN_PAD_NS = 15_000
SPIN_DECAY_NS = 1_000
COARSE_NS = 2_000_000  # sleeps longer than this are split in two
MAX_SPIN_PPS = 5000
WINDOW_NS = 100_000_000
SPIN_BUDGET = 0.4  # at most this share of a window spent spinning
MAX_BLOCK_NS = 50_000_000  # wake at least this often to notice a stop request
DRAIN_BATCH = 64  # read at most this many packets before serving due releases
STALL_NS = 1_000_000  # a release later than this counts as a stall
DEFAULT_WAKE_QUANTILE = 0.5


def open_tun(name: str) -> int:
    """Create a (non-persistent) TUN device: it disappears when this process exits."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
STAMP_SNAP = 48  # bytes of each packet the timestamp socket copies: enough to match it
# Classic BPF: accept (first STAMP_SNAP bytes of) packets the kernel sends INTO the TUN only.
_OUTGOING_ONLY = [
    (0x20, 0, 0, 0xFFFFF004),  # ld pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE)
    (0x15, 0, 1, 4),  # jeq PACKET_OUTGOING
    (0x06, 0, 0, STAMP_SNAP),  # ret snap
    (0x06, 0, 0, 0),  # ret 0 (drop)
]
MAX_SOCKET_ERRORS_IN_A_ROW = 8  # then leave the stamp socket until the next packet
SO_RCVBUFFORCE = 33
MAX_PENDING_STAMPS = 65536  # more than the TUN queue holds: older stamps are of lost packets
MAX_STAMP_SCAN = 256  # stamps skipped to find a packet's (those before it were never read)


class ArrivalStamps:
    """Kernel timestamps of packets entering the TUN, so a late wake-up does not delay them.

    A packet socket on the TUN sees each packet the moment the kernel hands it to the TUN, with
    a kernel timestamp (CLOCK_REALTIME, converted to CLOCK_MONOTONIC). The emulator matches each
    packet it reads to its stamp by content; with no stamp it falls back to its own clock.
    """

    def __init__(self, ifname: str) -> None:
        import socket

        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        prog = b"".join(struct.pack("HBBI", *ins) for ins in _OUTGOING_ONLY)
        self._prog = ctypes.create_string_buffer(prog)
        fprog = struct.pack("HL", len(_OUTGOING_ONLY), ctypes.addressof(self._prog))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:  # root: past rmem_max, so a backlog of 10,000 stamps (~9 MB of skbs) fits
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.pending: deque[tuple[bytes, int]] = deque(maxlen=MAX_PENDING_STAMPS)
        self.offset_ns = 0
        self.resync()
        self.matched = 0
        self.fallbacks = 0
        self.socket_errors = 0  # recvmsg failures on the stamp socket (all kinds, counted)

    def resync(self) -> None:
        """Offset between the kernel's realtime stamps and CLOCK_MONOTONIC (NTP may slew it)."""
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        self.offset_ns = r - (a + b) // 2

    def _drain(self) -> None:
        recvmsg = self.sock.recvmsg
        offset = self.offset_ns
        in_a_row = 0
        while True:
            try:
                data, anc, _, _ = recvmsg(STAMP_SNAP, 64)
            except BlockingIOError:
                return
            except OSError:  # e.g. ENETDOWN, reported once after the TUN came up: go on,
                self.socket_errors += 1  # but never spin on one that persists: the packets
                in_a_row += 1  # then take the process clock (counted as fallbacks)
                if in_a_row >= MAX_SOCKET_ERRORS_IN_A_ROW:
                    return
                continue
            in_a_row = 0
            for _level, _kind, value in anc:
                sec, nsec = struct.unpack_from("qq", value)
                self.pending.append((data, sec * 1_000_000_000 + nsec - offset))

    def stamp(self, pkt: bytes, now_ns: int) -> tuple[int, bool]:
        """The packet's arrival time, and whether it is the kernel's stamp."""
        head = pkt[:STAMP_SNAP]
        pending = self.pending
        for attempt in range(2):
            for i, (data, t) in enumerate(pending):
                if i >= MAX_STAMP_SCAN:
                    break
                if data == head:
                    for _ in range(i + 1):  # stamps before it: packets the TUN never delivered
                        pending.popleft()
                    self.matched += 1
                    return min(t, now_ns), True
            if attempt == 0:
                self._drain()
        self.fallbacks += 1  # its stamp was lost (socket buffer full): keep the later ones
        return now_ns, False
