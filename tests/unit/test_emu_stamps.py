"""The emulator's arrival stamps never spin on a socket error that persists (pure: a stand-in
socket object in place of the packet socket; the real one is exercised by every system test)."""

from __future__ import annotations

import errno
from collections import deque

from testbed.shaping.emu_io import MAX_SOCKET_ERRORS_IN_A_ROW, ArrivalStamps


class FailingSocket:
    def __init__(self) -> None:
        self.calls = 0

    def recvmsg(self, *_: int) -> tuple[bytes, list[object], int, object]:
        self.calls += 1
        raise OSError(errno.ENETDOWN, "Network is down")


def test_a_persistent_socket_error_falls_back_to_the_process_clock() -> None:
    stamps = ArrivalStamps.__new__(ArrivalStamps)  # no packet socket: no root, no TUN
    sock = FailingSocket()
    stamps.sock = sock  # type: ignore[assignment]
    stamps.pending, stamps.offset_ns = deque(), 0
    stamps.matched = stamps.fallbacks = stamps.socket_errors = 0
    assert stamps.stamp(b"packet", 123) == (123, False)  # the process clock
    assert stamps.fallbacks == 1 and sock.calls == MAX_SOCKET_ERRORS_IN_A_ROW
    assert stamps.socket_errors == MAX_SOCKET_ERRORS_IN_A_ROW  # counted, in the stats
