"""Signaling and control between the orchestrator and an endpoint process: JSON lines on the
endpoint's stdin/stdout (no network needed; the endpoints' own traffic is only WebRTC)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def emit(message: dict[str, Any]) -> None:
    """Send one message to the orchestrator."""
    sys.stdout.write(json.dumps({**message, "t_ns": time.monotonic_ns()}) + "\n")
    sys.stdout.flush()


class Inbox:
    """Messages from the orchestrator, read from stdin without blocking the event loop."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader), sys.stdin)  # type: ignore[arg-type]

    async def get(self) -> dict[str, Any]:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            raise EOFError("the orchestrator closed the control pipe")
        message: dict[str, Any] = json.loads(line)
        return message

    async def expect(self, kind: str) -> dict[str, Any]:
        message = await self.get()
        if message.get("type") != kind:
            raise RuntimeError(f"expected a {kind!r} message, got {message!r}")
        return message
