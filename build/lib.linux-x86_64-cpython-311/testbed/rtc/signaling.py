"""Signaling and control between the orchestrator and an endpoint process: JSON lines on the
endpoint's stdin/stdout (no network needed; the endpoints' own traffic is only WebRTC)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.rtc.spec import StreamSpec


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


def endpoint_args(argv: list[str] | None, doc: str | None) -> tuple[str, StreamSpec, Path]:
    """Every stack's endpoint command line: ROLE --spec SPEC.json --out CELL, the spec
    validated again (what runs is what was validated). A bad spec is said as an `error`
    message, and raised."""
    from testbed.rtc.spec import parse_stream

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("role", choices=["sender", "receiver"])
    ap.add_argument("--spec", required=True, help="the stream spec, as JSON (a file)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        spec = parse_stream(json.loads(Path(args.spec).read_text()), args.spec)
    except Exception as e:
        emit({"type": "error", "error": f"{type(e).__name__}: {e}"})
        raise
    return args.role, spec, Path(args.out)


def candidate_port(sdp: str, address: str) -> int | None:
    """The UDP port of the one host candidate for ADDRESS in SDP (None: none, or several)."""
    ports = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            f = line.split()
            # a=candidate:FOUNDATION COMPONENT PROTO PRIORITY ADDRESS PORT typ TYPE ...
            if (
                len(f) >= 8
                and f[1] == "1"
                and f[2].lower() == "udp"
                and f[4] == address
                and f[5].isdigit()
                and f[7] == "host"
            ):
                ports.add(int(f[5]))
    return ports.pop() if len(ports) == 1 else None
