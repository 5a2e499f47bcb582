"""No interrupt may be lost inside a fork's callbacks.

CPython runs the functions registered with os.register_at_fork (logging's `_acquireLock` and
`_releaseLock`, among others) around every os.fork() (pyroute2 forks one per namespace it
opens) and every subprocess started with a preexec_fn (how the testbed enters namespaces and
containers). A Python signal handler that runs while one of them runs has its exception printed
as "Exception ignored in: <function _releaseLock ...>" and dropped: the KeyboardInterrupt for
Ctrl-C or SIGTERM vanished and the stream ran on to exit 0 (found by the interrupt drill: a
SIGTERM during the set-up of a container host, 1 case in 30).

A handler asks held(signum, frame) first: when the frame it interrupted is one of those
callbacks, the signal is held instead of raised, and the guard's own last callback after the
fork has a helper thread send it again a moment later, so the handler runs in the code after
the fork and raises there. A child starts with these signals unblocked, whatever the parent
held while it forked. install() registers the guard after logging's callbacks, so its
own run last in the parent.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType

# the signals the testbed unwinds on (terminate_unwinds), holds (ledger.deferred_signals) and
# unblocks in a forked child: one set, defined here
UNWIND_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REDELIVER_AFTER_S = 0.01  # the fork's remaining C code returns long before this
_held: list[int] = []
_installed: list[bool] = []
_callbacks: set[CodeType] = set()  # code of the Python functions that run around a fork


def _after_in_parent() -> None:
    # every statement here may run the handler; the loop's test comes last, with no call after
    while _held:
        signum = _held.pop()
        _held.clear()
        threading.Thread(target=_redeliver, args=(os.getpid(), signum), daemon=True,
                         name="testbed-redeliver").start()  # fmt: skip


def _after_in_child() -> None:
    _held.clear()  # the parent sends it again to itself
    # a fork made while the parent held signals (ledger.deferred_signals) must not pass that on:
    # a program the child execs would never take SIGTERM (the ledger's undo waited 3 s for each)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, UNWIND_SIGNALS)


def _redeliver(pid: int, signum: int) -> None:
    time.sleep(REDELIVER_AFTER_S)
    os.kill(pid, signum)


def register_at_fork(
    before: Callable[[], object] | None = None,
    after_in_parent: Callable[[], object] | None = None,
    after_in_child: Callable[[], object] | None = None,
) -> None:
    """os.register_at_fork, with the functions known to the guard (a signal that lands in
    them is held). Register before install() so the guard's own callback runs after them."""
    kw = {k: f for k, f in (("before", before), ("after_in_parent", after_in_parent),
                            ("after_in_child", after_in_child)) if f is not None}  # fmt: skip
    _callbacks.update(f.__code__ for f in kw.values() if hasattr(f, "__code__"))
    os.register_at_fork(**kw)


def install() -> None:
    """Know logging's fork callbacks and register the guard's own (once per process)."""
    if _installed:
        return
    for name in ("_acquireLock", "_releaseLock", "_after_at_fork_child_reinit_locks"):
        f = getattr(logging, name, None)
        if f is not None and hasattr(f, "__code__"):
            _callbacks.add(f.__code__)
    register_at_fork(after_in_parent=_after_in_parent, after_in_child=_after_in_child)
    _installed.append(True)


def held(signum: int, frame: FrameType | None) -> bool:
    """True when FRAME (what the signal interrupted) is a fork callback, where an exception
    would be dropped: the signal is then held and sent again after the fork."""
    if frame is None or frame.f_code not in _callbacks:
        return False
    if signum not in _held:
        _held.append(signum)
    return True
