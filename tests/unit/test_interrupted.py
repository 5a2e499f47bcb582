"""Signals inside terminate_unwinds: each of SIGINT, SIGTERM, SIGHUP raises Interrupted with
exit code 128 + N, even when SIGINT was inherited ignored (a background job of a
non-interactive shell: how CI once lost a Ctrl-C); a second signal during the unwind is said
and ignored; the handlers in force before are restored after. Signals sent to this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from testbed.errors import Interrupted, interrupt_exit_code
from testbed.net.network import terminate_unwinds


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_each_signal_raises_with_its_exit_code(sig: signal.Signals, code: int) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(Interrupted) as e, terminate_unwinds():
        os.kill(os.getpid(), sig)  # Python runs the handler at the next instruction
        pytest.fail("the signal was not raised")
    assert e.value.exit_code == code and interrupt_exit_code(e.value) == code
    assert str(e.value) == f"signal {sig.value} ({sig.name})"
    assert signal.getsignal(sig) == before
    assert interrupt_exit_code(KeyboardInterrupt()) == 130


def test_sigint_inherited_ignored_still_interrupts_and_a_second_signal_is_ignored() -> None:
    child = textwrap.dedent("""
        import os, signal, sys, time
        from testbed.errors import interrupt_exit_code
        from testbed.net.network import terminate_unwinds
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # as inherited
        try:
            with terminate_unwinds():
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                    sys.exit(3)  # never: the signal was lost
                finally:  # the unwind: a second signal must not cut it short
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)
                    print("unwound", flush=True)
        except KeyboardInterrupt as e:
            sys.exit(interrupt_exit_code(e))
    """)
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    assert res.returncode == 130, res.stderr
    assert res.stdout == "unwound\n"
    assert "SIGTERM ignored: still removing what was made" in res.stderr


def test_a_signal_inside_a_forks_callbacks_is_not_lost() -> None:
    """CPython drops an exception raised inside an at-fork callback ("Exception ignored in:
    _releaseLock"): a signal handled there was a lost Ctrl-C. Here a callback registered before
    the guard (as logging's is) signals the process while the fork is under way."""
    child = textwrap.dedent("""
        import os, signal, sys, time
        from testbed.errors import interrupt_exit_code
        from testbed.net import forkguard
        from testbed.net.network import terminate_unwinds
        def late():  # runs in the parent after every fork, as logging's _releaseLock does
            if os.environ.get("ARMED") == "1":
                os.environ["ARMED"] = "0"
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10000):
                    pass  # the handler runs here: an exception would be dropped
        forkguard.register_at_fork(after_in_parent=late)
        try:
            with terminate_unwinds():
                os.environ["ARMED"] = "1"
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
                time.sleep(2)
                sys.exit(3)  # never: the SIGTERM was lost
        except KeyboardInterrupt as e:
            sys.exit(interrupt_exit_code(e))
    """)
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert res.returncode == 143, res.stderr
    assert "Exception ignored" not in res.stderr, res.stderr


def test_a_child_forked_while_signals_are_held_takes_them() -> None:
    """Network.popen forks with the unwind signals held (ledger.deferred_signals): the child
    and what it execs must not inherit that, or SIGTERM never ends it."""
    from testbed.net import forkguard
    from testbed.net.ledger import deferred_signals

    forkguard.install()
    with deferred_signals():
        proc = subprocess.Popen(["grep", "SigBlk", "/proc/self/status"], stdout=subprocess.PIPE,
                                text=True, preexec_fn=lambda: None)  # fmt: skip
        out, _ = proc.communicate(timeout=10)
    blocked = int(out.split()[1], 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert not blocked & (1 << (sig - 1)), f"{sig.name} blocked in the child: {out}"
