"""An endpoint process of a session, spoken to with JSON lines on stdin/stdout (the protocol
of testbed.rtc.signaling): started in its host, read without losing a line, closed whatever
state it is in."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from testbed.errors import TestbedError
from testbed.net.containers import hosts as containers
from testbed.net.network import Network
from testbed.procstat import exit_words


class Endpoint:
    """An endpoint process in its host, spoken to with JSON lines on stdin/stdout."""

    def __init__(self, net: Network, role: str, host: str, argv: list[str], out: Path,
                 owns: str | None = None) -> None:  # fmt: skip
        self.role = role
        self.errfile = open(out / f"{role}.stderr", "w")  # noqa: SIM115 (closed in close())
        spec = net.topology.container(host)
        if spec is not None:  # the stack's command as it runs in the container host
            argv = containers.endpoint_argv(spec, argv, role)
        self.proc = net.popen(host, argv, owns=owns or role, in_image=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=self.errfile, text=True)  # fmt: skip
        self._buffer = b""  # what was read past the last whole line (read raw: see expect)
        self.watch: Callable[[], None] = lambda: None  # called each second while waiting

    def send(self, message: dict[str, Any]) -> None:
        """Say MESSAGE to the endpoint; to one that has exited, nothing (its exit status is
        checked and said when the session ends)."""
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message) + "\n")
            stdin.flush()
        except BrokenPipeError:
            pass

    def _line(self, timeout_s: float) -> bytes | None:
        """The next line the endpoint wrote (b"" once it exits; None on a timeout). Read from
        the raw fd with our own buffer: a buffered readline may take two messages at once and
        leave select() waiting for one already read."""
        stdout = self.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([fd], [], [], min(left, 1.0))[0]:
                self.watch()  # e.g. a dead link: say it now, not at the timeout
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def expect(self, kind: str, timeout_s: float) -> dict[str, Any]:
        line = self._line(timeout_s)
        if line is None:
            raise TestbedError(f"{self.role}: no {kind!r} within {timeout_s:.0f} s{self._tail()}")
        if not line:
            try:
                how = exit_words(self.proc.wait(timeout=5))
            except subprocess.TimeoutExpired:
                how = "closed its output"
            raise TestbedError(f"{self.role} endpoint (pid {self.proc.pid}) {how} before "
                               f"{kind!r}{self._tail()}")  # fmt: skip
        message: dict[str, Any] = json.loads(line)
        if message.get("type") == "error":
            raise TestbedError(f"{self.role} failed: {message['error']}{self._tail()}")
        if message.get("type") != kind:
            raise TestbedError(f"{self.role}: expected {kind!r}, got {message.get('type')!r}")
        return message

    def _tail(self) -> str:
        if not self.errfile.closed:
            self.errfile.flush()
        try:
            lines = Path(self.errfile.name).read_text().strip().splitlines()[-3:]
        except OSError:
            lines = []
        return (": " + " | ".join(lines)) if lines else ""

    def close(self, timeout_s: float = 15) -> None:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # what a dead endpoint was not told
                self.proc.stdin.close()
        self.errfile.close()
