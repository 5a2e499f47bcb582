"""Background loops with an explicit lifecycle (aiortc's lack): start() once, close() cancels
and waits, and is safe to call twice."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundLoop:
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        raise NotImplementedError
