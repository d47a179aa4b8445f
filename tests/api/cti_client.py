"""A CTI client for tests: a real WebSocket to a real uvicorn on 127.0.0.1 (the `websockets` library)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class CtiClient:
    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.replies: dict[Any, dict[str, Any]] = {}
        self.unsolicited: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.closed: ConnectionClosed | None = None
        self._arrived = asyncio.Event()
        self._next = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.websocket:
                frame = json.loads(text)
                if "reply_to" in frame:
                    if frame["reply_to"] is None:
                        self.unsolicited.append(frame)
                    else:
                        assert frame["reply_to"] not in self.replies, f"two replies to {frame['reply_to']}"
                        self.replies[frame["reply_to"]] = frame
                else:
                    self.events.append(frame)
                self._arrived.set()
        except ConnectionClosed as closed:
            self.closed = closed
        self.closed = self.closed or ConnectionClosed(None, None)
        self._arrived.set()

    async def _until(self, check: Any, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                found = check()
                if found is not None:
                    return found
                if self.closed is not None:
                    raise AssertionError(f"connection closed: {self.closed}")
                self._arrived.clear()
                await self._arrived.wait()

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send(json.dumps(message))

    async def command(self, op: str, timeout: float = 6.0, **fields: Any) -> dict[str, Any]:
        self._next += 1
        command_id = f"c{self._next}"
        await self.send({"id": command_id, "op": op, **fields})
        reply: dict[str, Any] = await self._until(lambda: self.replies.get(command_id), timeout)
        return reply

    async def event(self, type: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first event of `type` (with the given field values) received so far or soon."""

        def find() -> dict[str, Any] | None:
            for event in self.events:
                if event["type"] == type and all(event.get(key) == value for key, value in match.items()):
                    return event
            return None

        found: dict[str, Any] = await self._until(find, timeout)
        return found

    def of_type(self, type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == type]

    def logged(self) -> list[dict[str, Any]]:
        """Events from the log (not the periodic wallboard and waiting counts)."""
        return [event for event in self.events if event["type"] not in ("wallboard", "queue.counts")]

    async def wait_closed(self, timeout: float = 5.0) -> ConnectionClosed:
        async with asyncio.timeout(timeout):
            await self._reader
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        await self.websocket.close()
        with contextlib.suppress(Exception):
            await self._reader


@asynccontextmanager
async def cti(
    port: int, cookie: str | None = None, *, token: str | None = None, origin: str | None = None
) -> AsyncIterator[CtiClient]:
    uri = f"ws://127.0.0.1:{port}/api/v1/cti" + (f"?token={token}" if token else "")
    headers = {"Cookie": f"hotline_session={cookie}"} if cookie else {}
    if origin is not None:
        headers["Origin"] = origin
    async with connect(
        uri, additional_headers=headers, proxy=None, open_timeout=5, close_timeout=2
    ) as socket:
        client = CtiClient(socket)
        try:
            yield client
        finally:
            await client.close()
