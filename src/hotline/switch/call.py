"""Calls and legs: live state of a call, and the call-control API (`CallControl`) on top of SIP and media.

A `Call` is what the IVR, ACD and outbound see. Its legs are the parties: the caller's SIP dialog and,
later, an agent's. Each leg owns one media session (RTP endpoint). Events go to the tenant's event log
through `emit`; the call never touches another tenant's anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from hotline.events.ids import new_id
from hotline.log import get_logger
from hotline.media.player import Player, music_on_hold_source
from hotline.sip.stack import InviteSession, ServerInvite
from hotline.switch.control import (
    CallGone,
    Language,
    Prompt,
    QueueOutcome,
    QueueRequest,
    RecordingRef,
    TransferTarget,
)

if TYPE_CHECKING:
    from hotline.switch.browser import BrowserLeg
    from hotline.switch.service import Switch

log = get_logger("hotline.switch")

Emit = Callable[..., Awaitable[None]]


class Leg:
    """One party of a call: a SIP dialog and its media session, or an agent's browser (no SIP dialog: `sip`
    is None, `browser` the `switch.browser.BrowserLeg`, `media` the agent's `WebRtcChannel`)."""

    def __init__(
        self,
        call: Call,
        role: str,
        sip: InviteSession | None,
        media: Any,
        *,
        browser: BrowserLeg | None = None,
    ) -> None:
        self.id = new_id()
        self.call = call
        self.role = role  # "caller", "agent", "supervisor", "external"
        self.sip = sip
        self.media = media
        self.browser = browser
        self.local_sdp = b""
        self.answered_at: float | None = None

    @property
    def ended(self) -> bool:
        if self.sip is not None:
            return self.sip.ended.is_set()
        return self.browser is None or self.browser.ended.is_set()

    async def release(self, cause: str) -> None:
        """Hang this leg up: a BYE for a SIP dialog; for a browser leg, unbridge and tell the browser (the
        agent's media channel stays up for the next call)."""
        if self.sip is not None:
            await self.sip.bye(cause)
        elif self.browser is not None:
            await self.browser.release(cause)


class Call:
    """One call, as the IVR, the ACD and outbound see it (implements `switch.control.CallControl`)."""

    def __init__(
        self,
        switch: Switch,
        *,
        tenant: str,
        ani: str | None,
        dnis: str,
        region: str | None,
        data: dict[str, Any],
    ) -> None:
        self.id = new_id()
        self.switch = switch
        self._tenant = tenant
        self._ani = ani
        self._dnis = dnis
        self._region = region
        self._data = data
        self.language: Language = "zh"
        self.legs: list[Leg] = []
        self.caller: Leg | None = None
        self.started = time.monotonic()
        self.answered = False
        self._gone = asyncio.Event()
        self.end_cause: str | None = None
        self.bridge: Any = None
        self.recording: Any = None

    # --- identity and data

    @property
    def call_id(self) -> str:
        return self.id

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def ani(self) -> str | None:
        return self._ani

    @property
    def dnis(self) -> str:
        return self._dnis

    @property
    def region(self) -> str | None:
        return self._region

    @property
    def data(self) -> dict[str, Any]:
        return self._data

    @property
    def hung_up(self) -> bool:
        return self._gone.is_set()

    async def wait_hung_up(self) -> None:
        await self._gone.wait()

    def _check(self) -> Leg:
        if self._gone.is_set() or self.caller is None:
            raise CallGone(self.id)
        return self.caller

    # --- media

    async def answer(self) -> None:
        leg = self._check()
        if self.answered:
            return
        assert isinstance(leg.sip, ServerInvite)
        sdp = self.switch.answer_sdp(leg)
        if not await leg.sip.accept(sdp):
            raise CallGone(self.id)
        self.answered = True
        leg.answered_at = time.monotonic()
        await self.event("call.answered", by="system")

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = False) -> str | None:
        self._check()
        await self.answer()
        source = await self._until(self.switch.prompts.render(self.tenant, prompts, 8000))
        leg = self._check()  # the caller may have hung up while the prompt was being prepared
        player = Player(source, interruptible=interruptible)
        digits = leg.media.digits
        if not interruptible:
            leg.media.play(player)
            await self._until(player.wait())
            _drain(digits)
            return None
        leg.media.play(player)
        digit_task = asyncio.ensure_future(digits.get())
        play_task = asyncio.ensure_future(player.wait())
        try:
            await self._until(asyncio.wait({digit_task, play_task}, return_when=asyncio.FIRST_COMPLETED))
        finally:
            play_task.cancel()
            if not digit_task.done():
                digit_task.cancel()
            player.stop()
        if digit_task.done() and not digit_task.cancelled():
            digit: str = digit_task.result().digit
            return digit
        return None

    def music_on_hold(self) -> None:
        """Loop music on hold to the caller until something else is played or the call is bridged."""
        leg = self._check()
        leg.media.play(Player(music_on_hold_source(8000), interruptible=False))

    async def collect(
        self,
        prompts: Sequence[Prompt],
        *,
        max_digits: int,
        timeout: float,
        inter_digit_timeout: float,
        terminator: str | None = "#",
    ) -> str:
        leg = self._check()
        typed = ""
        first = await self.play(prompts, interruptible=True) if prompts else None
        if first is not None:
            if terminator is not None and first == terminator:
                return ""
            typed = first
        wait = timeout if not typed else inter_digit_timeout
        while len(typed) < max_digits:
            try:
                digit = (await self._until(asyncio.wait_for(leg.media.digits.get(), wait))).digit
            except TimeoutError:
                break
            if terminator is not None and digit == terminator:
                break
            typed += digit
            wait = inter_digit_timeout
        return typed

    async def record(self, *, max_seconds: float, beep: bool, silence_timeout: float) -> RecordingRef | None:
        leg = self._check()
        await self.answer()
        return await self.switch.voicemail(
            self, leg, max_seconds=max_seconds, beep=beep, silence_timeout=silence_timeout
        )

    async def queue(self, request: QueueRequest) -> QueueOutcome:
        self._check()
        await self.answer()
        return await self.switch.queue(self, request)

    async def transfer(self, target: TransferTarget) -> bool:
        self._check()
        return await self.switch.transfer(self, target)

    async def hangup(self, cause: str) -> None:
        """Release every leg; safe to call again, and after the caller has gone (the call is still closed
        and logged exactly once)."""
        self.end_cause = self.end_cause or cause
        for leg in self.legs:
            await leg.release(cause)
        await self.switch.call_ended(self, self.end_cause)

    async def event(self, event_type: str, /, **fields: Any) -> None:
        await self.switch.emit(self, event_type, **fields)

    async def _until(self, awaitable: Awaitable[Any]) -> Any:
        """Await `awaitable`, but raise CallGone as soon as the call ends."""
        task = asyncio.ensure_future(awaitable)
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise CallGone(self.id)
        return task.result()

    def mark_gone(self, cause: str) -> None:
        self.end_cause = self.end_cause or cause
        self._gone.set()


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()
