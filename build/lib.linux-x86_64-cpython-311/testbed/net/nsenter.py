"""Enter a named network namespace (/run/netns/NAME) from this process.

Kept free of heavy imports: the emulator and probe processes call it first thing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def enter_netns(name: str) -> None:
    """Move the calling thread (the whole process if single-threaded) into namespace NAME."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run a block inside namespace NAME and come back (for sysctls, TUN opens, probes)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns(name)
        try:
            yield
        finally:
            _setns_fd(home)
    finally:
        os.close(home)


def netns_sysctl(name: str, key: str, value: str) -> None:
    """Set a sysctl of namespace NAME only (net.* sysctls are per namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")
    with in_netns(name), open(path, "w") as f:
        f.write(value)
