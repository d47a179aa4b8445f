"""A scripted test double of ``CallControl``: the caller's behaviour is a list of script items.

Script items, consumed in order by the operations that wait for the caller:

- ``"12#"`` (a str): keys typed at the next ``collect`` (capped at max_digits / cut at the terminator).
- ``SILENT``: the caller types nothing (``collect`` returns ``""`` at once, as after its timeout).
- ``Barge("3")``: the caller presses a key during the next interruptible ``play``.
- ``HANG_UP``: the caller hangs up during the next media operation (it raises ``CallGone``).
- ``Stall(seconds)``: the next operation takes this long before it consumes the following item.

When the script runs out the caller stays silent. ``queue``, ``transfer`` and ``record`` take their
results from ``queue_outcomes``, ``transfer_results`` and ``recordings`` (``BLOCK`` waits forever).
``fail_on`` names an operation that raises ``RuntimeError`` (a crash inside one call's flow).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from hotline.switch.control import (
    CallControl,
    CallGone,
    Language,
    Prompt,
    QueueOutcome,
    QueueRequest,
    RecordingRef,
    Speech,
    TransferTarget,
)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SILENT: Final = _Marker("SILENT")
HANG_UP: Final = _Marker("HANG_UP")
BLOCK: Final = _Marker("BLOCK")


@dataclass(frozen=True)
class Barge:
    key: str


@dataclass(frozen=True)
class Stall:
    seconds: float


ScriptItem = str | Barge | Stall | _Marker


class ScriptedCall:
    def __init__(
        self,
        script: Sequence[ScriptItem] = (),
        *,
        ani: str | None = "13812345678",
        dnis: str = "4008001234",
        region: str | None = "上海",
        language: Language = "zh",
        data: dict[str, Any] | None = None,
        queue_outcomes: Sequence[QueueOutcome | _Marker] = (),
        transfer_results: Sequence[bool | _Marker] = (),
        recordings: Sequence[RecordingRef | None] = (),
        fail_on: str | None = None,
        play_seconds: float = 0.0,
        call_id: str = "call-1",
    ) -> None:
        self.script: deque[ScriptItem] = deque(script)
        self.call_id = call_id
        self.tenant = "acme"
        self.ani = ani
        self.dnis = dnis
        self.region = region
        self.language: Language = language
        self.data: dict[str, Any] = data if data is not None else {}
        self.queue_outcomes = deque(queue_outcomes)
        self.transfer_results = deque(transfer_results)
        self.recordings = deque(recordings)
        self.fail_on = fail_on
        self.play_seconds = play_seconds
        self._hung_up = asyncio.Event()
        self.answered = 0
        self.operations: list[str] = []
        self.played: list[Prompt] = []
        self.collects: list[dict[str, Any]] = []
        self.queued: list[QueueRequest] = []
        self.transfers: list[TransferTarget] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.hangup_causes: list[str] = []

    # --- test helpers ------------------------------------------------------------------------------------

    def caller_hangs_up(self) -> None:
        self._hung_up.set()

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        return [fields for kind, fields in self.events if kind == event_type]

    def spoken(self) -> list[str]:
        return [prompt.text for prompt in self.played if isinstance(prompt, Speech)]

    # --- CallControl -------------------------------------------------------------------------------------

    @property
    def hung_up(self) -> bool:
        return self._hung_up.is_set()

    async def wait_hung_up(self) -> None:
        await self._hung_up.wait()

    async def _start(self, operation: str) -> None:
        self.operations.append(operation)
        if self.fail_on == operation:
            raise RuntimeError(f"injected failure in {operation}")
        while self.script and isinstance(self.script[0], Stall):
            stall = self.script.popleft()
            assert isinstance(stall, Stall)
            await asyncio.sleep(stall.seconds)
        if self.script and self.script[0] is HANG_UP:
            self.script.popleft()
            self._hung_up.set()
        if self.hung_up:
            raise CallGone(operation)

    async def answer(self) -> None:
        await self._start("answer")
        self.answered += 1

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = False) -> str | None:
        await self._start("play")
        self.played.extend(prompts)
        if self.play_seconds:
            await asyncio.sleep(self.play_seconds)
        if interruptible and self.script and isinstance(self.script[0], Barge):
            barge = self.script.popleft()
            assert isinstance(barge, Barge)
            return barge.key
        return None

    async def collect(
        self,
        prompts: Sequence[Prompt],
        *,
        max_digits: int,
        timeout: float,
        inter_digit_timeout: float,
        terminator: str | None = "#",
    ) -> str:
        await self._start("collect")
        self.played.extend(prompts)
        self.collects.append(
            {"max_digits": max_digits, "timeout": timeout, "inter": inter_digit_timeout, "term": terminator}
        )
        if self.play_seconds and prompts:
            await asyncio.sleep(self.play_seconds)
        item = self.script.popleft() if self.script else SILENT
        if isinstance(item, Barge):
            item = item.key
        if not isinstance(item, str):
            return ""
        if terminator and terminator in item:
            item = item.split(terminator, 1)[0]
        return item[:max_digits]

    async def record(self, *, max_seconds: float, beep: bool, silence_timeout: float) -> RecordingRef | None:
        await self._start("record")
        if self.recordings:
            return self.recordings.popleft()
        return RecordingRef(recording_id="rec-1", duration_seconds=min(12.0, max_seconds))

    async def queue(self, request: QueueRequest) -> QueueOutcome:
        await self._start("queue")
        self.queued.append(request)
        outcome = (
            self.queue_outcomes.popleft() if self.queue_outcomes else QueueOutcome("answered", agent="a1")
        )
        if outcome is BLOCK:
            await asyncio.Event().wait()
        assert isinstance(outcome, QueueOutcome)
        return outcome

    async def transfer(self, target: TransferTarget) -> bool:
        await self._start("transfer")
        self.transfers.append(target)
        result = self.transfer_results.popleft() if self.transfer_results else True
        if result is BLOCK:
            await asyncio.Event().wait()
        return bool(result)

    async def hangup(self, cause: str) -> None:
        self.operations.append("hangup")
        self.hangup_causes.append(cause)
        self._hung_up.set()

    async def event(self, event_type: str, /, **fields: Any) -> None:
        if self.fail_on == "event":
            raise RuntimeError("event log down")
        self.events.append((event_type, fields))


def _conforms(call: ScriptedCall) -> CallControl:
    return call  # mypy checks the double against the protocol here
