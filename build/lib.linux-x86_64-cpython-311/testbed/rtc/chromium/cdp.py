"""DevTools over --remote-debugging-pipe: JSON messages ended by NUL on fds 3 (in) and 4 (out).

Chosen over Playwright (which works here with the system browser): the pipe needs no port, no
network in the namespace, and no Node driver process beside each browser (CPU on a 2-core
machine, and one more process tree to own); the testbed uses three DevTools methods.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any


class CdpError(RuntimeError):
    pass


class _Reader(asyncio.Protocol):
    def __init__(self, client: Cdp) -> None:
        self.client = client
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\0" in self.buf:
            raw, _, self.buf = self.buf.partition(b"\0")
            self.client._dispatch(json.loads(raw))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._closed(exc)


class Cdp:
    """One browser's DevTools pipe: call(method, params, session) -> result."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self.to_browser = to_browser
        self.from_browser = from_browser
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._lost: str | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self.from_browser, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: _Reader(self), pipe)

    def _dispatch(self, message: dict[str, Any]) -> None:
        future = self._waiting.pop(message.get("id", -1), None)
        if future is not None and not future.done():
            future.set_result(message)

    def _closed(self, exc: Exception | None) -> None:
        self._lost = f"the browser closed its DevTools pipe ({exc or 'exited'})"
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CdpError(self._lost))
        self._waiting.clear()

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
        if self._lost:
            raise CdpError(self._lost)
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise CdpError(f"{method}: no answer from the browser in {timeout_s:g} s") from None
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message', reply['error'])}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def page_session(self, timeout_s: float = 10.0) -> str:
        """Attach to the browser's one page (flat session)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            targets = (await self.call("Target.getTargets"))["targetInfos"]
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                reply = await self.call("Target.attachToTarget",
                                        {"targetId": pages[0]["targetId"], "flatten": True})  # fmt: skip
                return str(reply["sessionId"])
            if loop.time() > deadline:
                raise CdpError(f"no page target after {timeout_s:g} s")
            await asyncio.sleep(0.05)

    async def evaluate(self, session: str, expression: str, timeout_s: float = 30.0) -> Any:
        """Run JS in the page, awaiting a promise; its value (JSON) or a CdpError with the
        page's own message."""
        reply = await self.call("Runtime.evaluate", {"expression": expression,
                                "awaitPromise": True, "returnByValue": True},
                                session=session, timeout_s=timeout_s)  # fmt: skip
        if "exceptionDetails" in reply:
            d = reply["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "error")
            raise CdpError(str(text).splitlines()[0])
        return reply.get("result", {}).get("value")
