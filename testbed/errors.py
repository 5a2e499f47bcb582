"""Errors the user can act on. Each message says what is wrong and what would be valid."""

from __future__ import annotations


class TestbedError(Exception):
    """Base of every error the CLI turns into one line and a non-zero exit."""

    exit_code = 1


class ConfigError(TestbedError):
    """Bad input: a file, a key, a value. Raised before anything is set up (exit code 2)."""

    exit_code = 2

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class UnavailableError(TestbedError):
    """The machine cannot provide what was asked (a backend, a kernel feature). Exit code 2."""

    exit_code = 2


class KernelError(TestbedError):
    """The kernel refused an operation while building; everything created so far is undone."""


class BusyError(TestbedError):
    """A topology with this name is already up."""

    exit_code = 2


class LedgerError(TestbedError):
    """A run's ledger cannot be read: what the run made is unknown, so nothing is removed."""


class Interrupted(KeyboardInterrupt):
    """A signal asked us to stop (Ctrl-C, SIGTERM, SIGHUP): unwind as for Ctrl-C, then exit
    128 + the signal's number, as a shell reports a process the signal ended."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        super().__init__(f"signal {signum} ({signal.Signals(signum).name})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interrupt_exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal that interrupted us; 130 (SIGINT) for a plain KeyboardInterrupt."""
    return e.exit_code if isinstance(e, Interrupted) else 130
