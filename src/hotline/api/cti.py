"""The CTI WebSocket gateway at ``/api/v1/cti`` (docs/cti.md; AGT-02/13, SUP-01/02/05/07, API-02/04, FM-05).

One connection per browser tab, authenticated by the session cookie (or ``?token=<api key>``). JSON text
frames both ways:

- Commands carry an ``id`` and get exactly one reply ``{"reply_to": id, "ok": true, ...}`` or
  ``{"reply_to": id, "ok": false, "error": {"code", "message"}}`` within 5 s (FM-05). A command the
  service does not finish in time is answered ``timeout`` but not cancelled: the events it causes tell
  the client what really happened (the server owns the state). Messages without an id get a reply with
  ``"reply_to": null``.
- ``hello`` (first): the reply holds the user, the agent's state and calls, and ``last_seq`` (the log's
  head); then the events after the client's ``last_seq`` are replayed from the tenant's event log (at
  most :data:`MAX_REPLAY`; ``replay_from`` in the reply says where the replay starts), then live events
  follow, each exactly once and in seq order. Until ``hello`` nothing but replies is sent.
- Events: ``agent.state`` (to the agent and the supervisors who may see that agent), ``call.offered``
  (the screen pop, to the agent), ``call.answered`` / ``call.held`` / ``call.resumed`` / ``call.ended`` (to
  the agent), ``queue.counts`` (``counts``: waiting calls per queue of the agent, ACD-12) and ``wallboard``
  (supervisors, at most every second while anything changed). Caller numbers are masked for users
  without ``numbers.full`` (TEN-08).

Close codes: 4401 not signed in, 4403 not allowed (another site's page, or no CTI permission), 4000 no
message (not even the 10 s ping) for ``cti_idle_seconds``, 4408 the client fell too far behind (reconnect
with ``last_seq``), 1001 server shutting down.

An agent whose every connection is gone for ``cti_grace_seconds`` (``HOTLINE_CTI_GRACE_SECONDS``,
default 60) is logged out of the ACD and their browser media channel is released; reconnecting within
the grace period keeps everything (AGT-13).

Per tenant one `TenantHub` follows the bus (one subscription, not one per connection) and routes each
event to the connections that should see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from fastapi import WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hotline.api.auth import principal_of, same_origin, write_audit
from hotline.api.context import AcdControl, ApiContext, BrowserPhones, resolve
from hotline.api.live import wallboard_view
from hotline.events.bus import EventsMissed, Subscription, SubscriptionClosed
from hotline.events.models import (
    AgentStateChanged,
    CallAnswered,
    CallDataChanged,
    CallEnded,
    CallHeld,
    CallOffered,
    CallOfferFailed,
    CallQueued,
    CallResumed,
    CallStarted,
    CallTransferred,
    Event,
    elapsed_seconds,
)
from hotline.log import get_logger
from hotline.tenancy.config_store import config_objects_table
from hotline.tenancy.masking import mask_fields, mask_number
from hotline.tenancy.users import Principal, agents_in_scope

log = get_logger(__name__)

CLOSE_NO_HEARTBEAT: Final = 4000
CLOSE_NOT_SIGNED_IN: Final = 4401
CLOSE_FORBIDDEN: Final = 4403
CLOSE_TOO_SLOW: Final = 4408
CLOSE_GOING_AWAY: Final = 1001

MAX_REPLAY: Final = 10_000
OUTBOX_SIZE: Final = 2_000
MAX_PENDING: Final = 5_000
MAX_MESSAGE: Final = 256 * 1024
ENDED_CALLS_KEPT: Final = 10_000
REPLAY_SEND_TIMEOUT: Final = 30.0
# The ACD's agent states under the names of the CTI protocol.
STATE_NAMES: Final = {"talking": "on_call", "hold": "on_hold", "dialing": "outbound"}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _now_iso() -> str:
    return _iso(datetime.now(UTC))


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- command fields ----------------------------------------------------------------------------------------


class _Fields(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HelloFields(_Fields):
    last_seq: int | None = Field(default=None, ge=0)


class OfferFields(_Fields):
    sdp: str = Field(min_length=1, max_length=200_000)


class LoginFields(_Fields):
    device: str = Field(
        pattern=r"^(browser|extension:[0-9]{2,10}|sip:[^\s]{1,200}|external:\+?[0-9]{3,20})$", max_length=210
    )
    queues: list[str] | None = Field(default=None, max_length=100)


class NotReadyFields(_Fields):
    reason: str | None = Field(default=None, max_length=64)


class CallFields(_Fields):
    call_id: str = Field(min_length=1, max_length=64)


class WrapupFields(_Fields):
    disposition: str | None = Field(default=None, max_length=128)
    notes: str | None = Field(default=None, max_length=4000)


class ForceStateFields(_Fields):
    agent_id: str = Field(min_length=1, max_length=32)
    state: Literal["ready", "not_ready", "logged_out"]


# --- who gets which event ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """`kind` "agent": that agent's connections; "supervisors": supervisors who may see `agent_id`."""

    kind: Literal["agent", "supervisors"]
    agent_id: str


Routed = list[tuple[Audience, dict[str, Any]]]


class CallAgents:
    """Which agents a call concerns (for call.ended, which names no agent); ended calls are remembered a
    while so a replay can still route them."""

    def __init__(self, fallback: CallAgents | None = None) -> None:
        self.live: dict[str, set[str]] = {}
        self.ended: OrderedDict[str, set[str]] = OrderedDict()
        self.fallback = fallback

    def add(self, call_id: str, agent_id: str) -> None:
        self.live.setdefault(call_id, set()).add(agent_id)

    def discard(self, call_id: str, agent_id: str) -> None:
        agents = self.live.get(call_id)
        if agents is not None:
            agents.discard(agent_id)

    def agents_of(self, call_id: str) -> set[str]:
        found = self.live.get(call_id) or self.ended.get(call_id)
        if not found and self.fallback is not None:
            return self.fallback.agents_of(call_id)
        return set(found or ())

    def end(self, call_id: str) -> set[str]:
        agents = self.agents_of(call_id)
        self.live.pop(call_id, None)
        self.ended[call_id] = agents
        while len(self.ended) > ENDED_CALLS_KEPT:
            self.ended.popitem(last=False)
        return agents


class EventRouter:
    """Turns logged events into CTI frames and says who receives each."""

    def __init__(self, context: ApiContext, tenant: str) -> None:
        self.context = context
        self.tenant = tenant

    async def route(
        self, event: Event, calls: CallAgents, wanted: Callable[[Audience], bool] | None = None
    ) -> Routed:
        """Frames for `event` and their audiences; `wanted` (if given) says whose frames are worth
        building (a screen pop reads the log)."""
        base = {"seq": event.seq, "at": _iso(event.occurred_at)}
        if isinstance(event, AgentStateChanged):
            frame = {
                "type": "agent.state",
                **base,
                "agent_id": event.agent_id,
                "state": STATE_NAMES.get(event.to_state, event.to_state),
                "reason": event.reason_code,
                "since": base["at"],
                "call_id": event.call_id,
            }
            return [
                (Audience("agent", event.agent_id), frame),
                (Audience("supervisors", event.agent_id), frame),
            ]
        if isinstance(event, CallOffered):
            calls.add(event.call_id, event.agent_id)
            audience = Audience("agent", event.agent_id)
            if wanted is not None and not wanted(audience):
                return []
            return [(audience, await self.screen_pop(event, base))]
        if isinstance(event, CallOfferFailed):
            calls.discard(event.call_id, event.agent_id)
            frame = {"type": "call.ended", **base, "call_id": event.call_id, "cause": event.reason}
            return [(Audience("agent", event.agent_id), frame)]
        if isinstance(event, CallAnswered):
            if event.agent_id is None:
                return []
            calls.add(event.call_id, event.agent_id)
            frame = {"type": "call.answered", **base, "call_id": event.call_id, "cause": None}
            return [(Audience("agent", event.agent_id), frame)]
        if isinstance(event, CallHeld | CallResumed):
            kind = "call.held" if isinstance(event, CallHeld) else "call.resumed"
            frame = {"type": kind, **base, "call_id": event.call_id, "cause": None}
            agents = {event.agent_id} if event.agent_id else calls.agents_of(event.call_id)
            return [(Audience("agent", agent), frame) for agent in sorted(agents)]
        if isinstance(event, CallTransferred):
            if event.from_agent_id is None:
                return []
            calls.discard(event.call_id, event.from_agent_id)
            frame = {"type": "call.ended", **base, "call_id": event.call_id, "cause": "transferred"}
            return [(Audience("agent", event.from_agent_id), frame)]
        if isinstance(event, CallEnded):
            frame = {"type": "call.ended", **base, "call_id": event.call_id, "cause": event.cause}
            return [(Audience("agent", agent), frame) for agent in sorted(calls.end(event.call_id))]
        return []

    async def screen_pop(self, event: CallOffered, base: dict[str, Any]) -> dict[str, Any]:
        """The offer with the caller's number, region, called number, wait and call data (FM-10/11). Fields
        the offer event carries are used as they are; the rest come from the call's events in the log."""
        given = event.model_dump(mode="json")
        ani: str | None = given.get("ani") or None
        withheld = bool(given.get("withheld", False))
        dnis: str | None = given.get("dnis") or None
        region: str | None = given.get("region")
        data: dict[str, Any] = dict(given.get("data") or {})
        waited: float | None = given.get("waited_seconds") or None
        # The ACD's offers carry the screen pop; an offer without the caller (another producer) is
        # completed from the call's own events, its own fields winning.
        if (ani is None and not withheld) or dnis is None:
            history = await self.context.events.events_for_call(self.tenant, event.call_id)
            collected: dict[str, Any] = {}
            queued: Event | None = None
            for earlier in history:
                if earlier.seq is not None and event.seq is not None and earlier.seq >= event.seq:
                    break
                if isinstance(earlier, CallStarted):
                    ani = ani or earlier.ani or None
                    withheld = withheld or earlier.withheld
                    dnis = dnis or earlier.dnis or None
                    region = region or earlier.region
                elif isinstance(earlier, CallDataChanged):
                    collected.update(earlier.values)
                    for key in earlier.removed:
                        collected.pop(key, None)
                elif isinstance(earlier, CallQueued) and queued is None:
                    queued = earlier
            data = {**collected, **data}
            if waited is None and queued is not None:
                waited = round(elapsed_seconds(queued, event), 3)
        return {
            "type": "call.offered",
            **base,
            "call_id": event.call_id,
            "ani": ani or "",
            "ani_masked": "withheld" if withheld and not ani else (mask_number(ani) or ""),
            "withheld": withheld,
            "dnis": dnis or "",
            "region": region,
            "queue": given.get("queue") or event.queue_id,
            "waited_seconds": waited or 0.0,
            "data": data,
        }


# --- one browser tab ---------------------------------------------------------------------------------------


class CtiConnection:
    def __init__(
        self,
        gateway: CtiGateway,
        hub: TenantHub,
        websocket: WebSocket,
        principal: Principal,
        scope: set[str] | None,
        queues: list[str],
    ) -> None:
        self.gateway = gateway
        self.hub = hub
        self.websocket = websocket
        self.principal = principal
        self.scope = scope
        self.queues = queues
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        # Frames held back until hello, and during the replay; None once live.
        self.pending: list[tuple[dict[str, Any], bool]] | None = []
        self.last_sent_seq = 0
        self.last_counts: dict[str, int] | None = None
        self.closed = False
        self.hello_started = False
        self.commands: asyncio.Lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    @property
    def agent_id(self) -> str | None:
        return self.principal.agent_id if self.principal.can("cti.agent") else None

    @property
    def is_supervisor(self) -> bool:
        return self.principal.can("live.read")

    def sees_agent(self, agent_id: str) -> bool:
        return self.is_supervisor and (self.scope is None or agent_id in self.scope)

    # ------------------------------------------------------------------------------------ outgoing

    def deliver(self, frame: dict[str, Any], *, logged: bool) -> None:
        """Queue a frame; `logged` frames carry a log seq and go out once, in order."""
        if self.closed:
            return
        if self.pending is not None:
            if len(self.pending) >= MAX_PENDING:
                self.fall_behind()
                return
            self.pending.append((frame, logged))
            return
        self._enqueue(frame, logged=logged)

    def _enqueue(self, frame: dict[str, Any], *, logged: bool) -> None:
        if logged:
            seq = int(frame["seq"])
            if seq <= self.last_sent_seq:
                return
            self.last_sent_seq = seq
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.fall_behind()

    def reply(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.fall_behind()

    def fall_behind(self) -> None:
        """The client does not read fast enough: drop it; it reconnects and replays from its last seq."""
        if not self.closed:
            log.warning("cti.too_slow", tenant=self.tenant, user=self.principal.username)
            self._spawn(self.close(CLOSE_TOO_SLOW, "too far behind; reconnect with last_seq"))

    async def _send_loop(self) -> None:
        full_numbers = self.principal.can("numbers.full")
        while True:
            frame = await self.outbox.get()
            if frame is None:
                return
            shown = frame if full_numbers else mask_fields(frame)
            await self.websocket.send_text(json.dumps(shown, ensure_ascii=False, separators=(",", ":")))

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if self.websocket.application_state != WebSocketState.DISCONNECTED:
                await self.websocket.close(code, reason)

    # ------------------------------------------------------------------------------------ incoming

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name="cti-send")
        try:
            await self._receive_loop(sender)
        finally:
            self.closed = True
            sender.cancel()
            for task in list(self.tasks):
                if not task.done() and task.get_name() != "cti-command":
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _receive_loop(self, sender: asyncio.Task[None]) -> None:
        idle = self.gateway.context.cti_idle_seconds
        while not self.closed:
            receive = asyncio.ensure_future(self.websocket.receive())
            done, _pending = await asyncio.wait(
                {receive, sender}, timeout=idle, return_when=asyncio.FIRST_COMPLETED
            )
            if receive not in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receive
                if sender in done:
                    return  # the socket broke while sending
                await self.close(CLOSE_NO_HEARTBEAT, "no heartbeat")
                return
            try:
                message = receive.result()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            self._handle(text or "")

    def _spawn(self, work: Awaitable[Any], name: str = "cti-task") -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _handle(self, text: str) -> None:
        if len(text) > MAX_MESSAGE:
            self.reply(_error(None, "bad_message", f"messages are at most {MAX_MESSAGE} bytes"))
            return
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self.reply(_error(None, "bad_message", "a message is one JSON object"))
            return
        if not isinstance(message, dict):
            self.reply(_error(None, "bad_message", "a message is one JSON object"))
            return
        command_id = message.get("id")
        if not isinstance(command_id, str | int) or isinstance(command_id, bool) or command_id == "":
            self.reply(_error(None, "bad_message", "every command carries an id (text or number)"))
            return
        op = message.get("op")
        if not isinstance(op, str):
            self.reply(_error(command_id, "bad_message", "every command names its op"))
            return
        if op == "ping":
            self.reply({"reply_to": command_id, "ok": True})
            return
        self._spawn(self._command(command_id, op, message), name="cti-command")

    async def _command(self, command_id: str | int, op: str, message: dict[str, Any]) -> None:
        if op == "hello":
            await self._hello(command_id, message)
            return
        timeout = self.gateway.context.cti_command_timeout
        # Not cancelled on timeout: an ACD operation half done is worse than a late one (FM-05).
        work = asyncio.ensure_future(self._run_command(op, message))
        try:
            result = await asyncio.wait_for(asyncio.shield(work), timeout)
        except TimeoutError:
            work.add_done_callback(_consume)
            self.reply(_error(command_id, "timeout", f"{op} did not finish within {timeout:g} s"))
            return
        except CommandError as error:
            self.reply(_error(command_id, error.code, error.message))
            return
        except ValidationError as error:
            self.reply(_error(command_id, "invalid", _problems(error)))
            return
        except Exception as error:
            code = getattr(error, "code", None)
            if not isinstance(code, str):
                code = (
                    "rejected" if isinstance(error, ValueError | LookupError | PermissionError) else "failed"
                )
                if code == "failed":
                    log.exception("cti.command_failed", tenant=self.tenant, op=op)
            self.reply(_error(command_id, code, str(error) or type(error).__name__))
            return
        reply: dict[str, Any] = {"reply_to": command_id, "ok": True}
        if isinstance(result, dict):
            reply.update({key: value for key, value in result.items() if key not in ("reply_to", "ok")})
        self.reply(reply)

    async def _run_command(self, op: str, message: dict[str, Any]) -> Any:
        handler = self._handlers().get(op)
        if handler is None:
            raise CommandError("unknown_op", f"unknown op {op!r}")
        if self.pending is not None:
            raise CommandError("hello_first", "send hello first")
        async with self.commands:
            return await handler(message)

    # ------------------------------------------------------------------------------------ hello

    async def _hello(self, command_id: str | int, message: dict[str, Any]) -> None:
        """Reply with the current state, then replay what the client missed, then go live."""
        try:
            fields = HelloFields.model_validate(message)
        except ValidationError as error:
            self.reply(_error(command_id, "invalid", _problems(error)))
            return
        if self.hello_started:
            self.reply(_error(command_id, "hello_again", "hello was already said on this connection"))
            return
        self.hello_started = True
        try:
            state = await asyncio.wait_for(self._hello_state(), self.gateway.context.cti_command_timeout)
        except Exception as error:
            self.hello_started = False
            self.reply(_error(command_id, getattr(error, "code", "failed"), str(error) or "hello failed"))
            return
        head = state["last_seq"]
        replay_from = None if fields.last_seq is None else max(fields.last_seq, head - MAX_REPLAY)
        self.reply({"reply_to": command_id, "ok": True, **state, "replay_from": replay_from})
        if replay_from is not None:
            self.last_sent_seq = replay_from
            try:
                await self._replay(replay_from)
            except Exception:
                # The client would silently miss events: make it reconnect and try again.
                log.exception("cti.replay_failed", tenant=self.tenant, after_seq=replay_from)
                await self.close(1011, "replay failed; reconnect")
                return
        held = self.pending or []
        self.pending = None
        for frame, logged in held:
            self._enqueue(frame, logged=logged)
        await self.hub.initial_frames(self)

    async def _hello_state(self) -> dict[str, Any]:
        context = self.gateway.context
        head = await context.events.last_seq(self.tenant)
        agent: Any = None
        calls: Any = []
        if self.agent_id is not None:
            calls = [{"call_id": call_id} for call_id in self.hub.calls_of(self.agent_id)]
            if context.acd is not None:
                try:
                    agent = await resolve(context.acd.agent_state(self.tenant, self.agent_id))
                except Exception as error:  # e.g. an agent the ACD does not know (yet)
                    log.info("cti.no_agent_state", tenant=self.tenant, agent=self.agent_id, error=str(error))
                    agent = None
                if isinstance(agent, dict) and isinstance(agent.get("calls"), list):
                    calls = agent["calls"]
                elif isinstance(agent, dict) and agent.get("call_id"):
                    # AGT-13: a reloaded desktop gets its call back, with the screen pop it had.
                    calls = [await self._current_call(agent)]
        principal = self.principal
        return {
            "user": {
                "username": principal.username,
                "display_name": principal.display_name,
                "roles": list(principal.roles),
                "agent_id": principal.agent_id,
            },
            "agent": agent,
            "calls": calls,
            "last_seq": head,
        }

    async def _current_call(self, agent: dict[str, Any]) -> dict[str, Any]:
        call_id = str(agent["call_id"])
        call: dict[str, Any] = {"call_id": call_id, "state": agent.get("state"), "queue": agent.get("queue")}
        history = await self.gateway.context.events.events_for_call(self.tenant, call_id)
        offers = [
            event for event in history if isinstance(event, CallOffered) and event.agent_id == self.agent_id
        ]
        if offers:
            offer = offers[-1]
            pop = await self.hub.router.screen_pop(offer, {"seq": offer.seq, "at": _iso(offer.occurred_at)})
            call.update({key: value for key, value in pop.items() if key not in ("type", "seq", "at")})
            call["offered_at"] = pop["at"]
            call["queue"] = call["queue"] or pop["queue"]
        answered = [
            event for event in history if isinstance(event, CallAnswered) and event.agent_id == self.agent_id
        ]
        if answered:
            call["answered_at"] = _iso(answered[-1].occurred_at)
        return call

    async def _replay(self, after_seq: int) -> None:
        calls_seen = CallAgents(fallback=self.hub.calls)

        def wanted(audience: Audience) -> bool:
            return self.hub.addressed(self, audience)

        async for event in self.gateway.context.events.replay(self.tenant, after_seq):
            for audience, frame in await self.hub.router.route(event, calls_seen, wanted):
                if wanted(audience) and int(frame["seq"]) > self.last_sent_seq:
                    self.last_sent_seq = int(frame["seq"])
                    try:
                        # The replay waits for the socket (it may be long); live frames never wait.
                        await asyncio.wait_for(self.outbox.put(frame), REPLAY_SEND_TIMEOUT)
                    except TimeoutError:
                        self.fall_behind()
                        return
                if self.closed:
                    return

    # ------------------------------------------------------------------------------------ commands

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {
            "webrtc.offer": self._webrtc_offer,
            "agent.login": self._login,
            "agent.ready": self._ready,
            "agent.not_ready": self._not_ready,
            "agent.logout": self._logout,
            "call.answer": self._answer,
            "call.reject": self._reject,
            "call.hangup": self._hangup,
            "call.hold": self._hold,
            "call.resume": self._resume,
            "call.mute": self._unsupported,
            "call.unmute": self._unsupported,
            "call.dtmf": self._unsupported,
            "call.transfer": self._unsupported,
            "wrapup.end": self._end_wrapup,
            "supervisor.listen": self._unsupported,
            "supervisor.whisper": self._unsupported,
            "supervisor.barge": self._unsupported,
            "supervisor.force_state": self._force_state,
        }

    def _acd(self) -> AcdControl:
        acd = self.gateway.context.acd
        if acd is None:
            raise CommandError("unavailable", "the ACD is not running")
        return acd

    def _browsers(self) -> BrowserPhones:
        browsers = self.gateway.context.browsers
        if browsers is None:
            raise CommandError("unavailable", "browser phones are not available on this server")
        return browsers

    def _agent(self) -> str:
        if self.agent_id is None:
            raise CommandError("not_an_agent", "this user is not an agent (no agent id)")
        return self.agent_id

    async def _unsupported(self, message: dict[str, Any]) -> None:
        raise CommandError("not_supported", f"{message.get('op')} is not supported by this server yet")

    async def _webrtc_offer(self, message: dict[str, Any]) -> dict[str, Any]:
        fields = OfferFields.model_validate(message)
        answer = await resolve(self._browsers().attach(self.tenant, self._agent(), fields.sdp))
        return {"sdp": answer}

    async def _login(self, message: dict[str, Any]) -> Any:
        fields = LoginFields.model_validate(message)
        result = await resolve(self._acd().login(self.tenant, self._agent(), fields.device, fields.queues))
        if fields.queues:
            self.queues = list(fields.queues)
            self.last_counts = None
            self.hub.dirty = True
        return result

    async def _ready(self, _message: dict[str, Any]) -> Any:
        return await resolve(self._acd().ready(self.tenant, self._agent()))

    async def _not_ready(self, message: dict[str, Any]) -> Any:
        fields = NotReadyFields.model_validate(message)
        return await resolve(self._acd().not_ready(self.tenant, self._agent(), fields.reason))

    async def _logout(self, _message: dict[str, Any]) -> Any:
        return await resolve(self._acd().logout(self.tenant, self._agent()))

    async def _answer(self, message: dict[str, Any]) -> None:
        fields = CallFields.model_validate(message)
        answered = await resolve(self._browsers().answer(self.tenant, self._agent(), fields.call_id))
        if answered is False:
            raise CommandError("not_ringing", f"call {fields.call_id} is not ringing at this agent")

    async def _reject(self, message: dict[str, Any]) -> None:
        fields = CallFields.model_validate(message)
        rejected = await resolve(self._browsers().reject(self.tenant, self._agent(), fields.call_id))
        if rejected is False:
            raise CommandError("not_ringing", f"call {fields.call_id} is not ringing at this agent")

    async def _hangup(self, message: dict[str, Any]) -> Any:
        fields = CallFields.model_validate(message)
        return await resolve(self._acd().hangup(self.tenant, self._agent(), fields.call_id))

    async def _hold(self, message: dict[str, Any]) -> Any:
        fields = CallFields.model_validate(message)
        return await resolve(self._acd().hold(self.tenant, self._agent(), fields.call_id))

    async def _resume(self, message: dict[str, Any]) -> Any:
        fields = CallFields.model_validate(message)
        return await resolve(self._acd().resume(self.tenant, self._agent(), fields.call_id))

    async def _end_wrapup(self, message: dict[str, Any]) -> Any:
        fields = WrapupFields.model_validate(message)
        return await resolve(
            self._acd().end_wrapup(
                self.tenant, self._agent(), disposition=fields.disposition, notes=fields.notes
            )
        )

    async def _force_state(self, message: dict[str, Any]) -> Any:
        """SUP-05: a supervisor forces an agent of their scope ready, not ready or logged out; audited."""
        fields = ForceStateFields.model_validate(message)
        if not self.principal.can("agents.control"):
            raise CommandError("forbidden", "forcing agents' states needs the permission agents.control")
        if self.scope is not None and fields.agent_id not in self.scope:
            raise CommandError("forbidden", f"agent {fields.agent_id} is outside your scope")
        result = await resolve(
            self._acd().force_state(self.tenant, fields.agent_id, fields.state, by=self.principal.username)
        )
        await write_audit(
            self.gateway.context,
            self.tenant,
            actor=self.principal.username,
            action="agent.force_state",
            target=f"agents/{fields.agent_id}",
            detail={"state": fields.state},
            source=self.websocket.client.host if self.websocket.client else None,
        )
        return result


def _error(reply_to: str | int | None, code: str, message: str) -> dict[str, Any]:
    return {"reply_to": reply_to, "ok": False, "error": {"code": code, "message": message}}


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"
        for detail in error.errors(include_url=False)
    )


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("cti.late_command_failed", error=str(task.exception()))


# --- one tenant's connections ------------------------------------------------------------------------------


class TenantHub:
    """Follows one tenant's events on the bus and fans them out to that tenant's connections only."""

    def __init__(self, gateway: CtiGateway, tenant: str) -> None:
        self.gateway = gateway
        self.tenant = tenant
        self.context = gateway.context
        self.router = EventRouter(gateway.context, tenant)
        self.calls = CallAgents()
        self.connections: set[CtiConnection] = set()
        self.by_agent: dict[str, set[CtiConnection]] = {}
        self.last_seq = 0
        self.dirty = True
        self.subscription: Subscription = gateway.context.bus.subscribe("*", tenant=tenant, maxsize=10_000)
        self.task = asyncio.create_task(self._follow(), name=f"cti-hub:{tenant}")
        self.ticker = asyncio.create_task(self._tick(), name=f"cti-tick:{tenant}")

    def add(self, connection: CtiConnection) -> None:
        self.connections.add(connection)
        if connection.agent_id is not None:
            self.by_agent.setdefault(connection.agent_id, set()).add(connection)

    def remove(self, connection: CtiConnection) -> None:
        self.connections.discard(connection)
        if connection.agent_id is not None:
            group = self.by_agent.get(connection.agent_id)
            if group is not None:
                group.discard(connection)
                if not group:
                    del self.by_agent[connection.agent_id]

    def calls_of(self, agent_id: str) -> list[str]:
        return sorted(call_id for call_id, agents in self.calls.live.items() if agent_id in agents)

    def addressed(self, connection: CtiConnection, audience: Audience) -> bool:
        if audience.kind == "agent":
            return connection.agent_id == audience.agent_id
        return connection.sees_agent(audience.agent_id)

    def _has_recipients(self, audience: Audience) -> bool:
        return bool(self._recipients(audience))

    def _recipients(self, audience: Audience) -> Iterable[CtiConnection]:
        if audience.kind == "agent":
            return tuple(self.by_agent.get(audience.agent_id, ()))
        return tuple(
            connection for connection in self.connections if connection.sees_agent(audience.agent_id)
        )

    async def _follow(self) -> None:
        while True:
            try:
                batch = await self.subscription.get_batch()
            except SubscriptionClosed:
                return
            for item in batch:
                try:
                    if isinstance(item, EventsMissed):
                        await self._catch_up(item.after_seq.get(self.tenant, self.last_seq))
                    else:
                        await self._process(item)
                except Exception:
                    log.exception("cti.routing_failed", tenant=self.tenant)

    async def _catch_up(self, after_seq: int) -> None:
        """The bus dropped events for us: read them from the log instead."""
        async for event in self.context.events.replay(self.tenant, max(after_seq, 0)):
            await self._process(event)

    async def _process(self, event: Event) -> None:
        if event.seq is None or event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        self.dirty = True
        if isinstance(event, AgentStateChanged) and event.queues is not None:
            # The queues of the agent's login: their waiting counts are what the agent sees (ACD-12).
            for connection in self.by_agent.get(event.agent_id, ()):
                if connection.queues != event.queues:
                    connection.queues = list(event.queues)
                    connection.last_counts = None
        sent: set[tuple[int, int]] = set()
        for audience, frame in await self.router.route(event, self.calls, self._has_recipients):
            for connection in self._recipients(audience):
                # An agent who is also a supervisor gets an event addressed to both once.
                key = (id(connection), id(frame))
                if key not in sent:
                    sent.add(key)
                    connection.deliver(frame, logged=True)

    async def _tick(self) -> None:
        interval = self.context.wallboard_interval
        while True:
            await asyncio.sleep(interval)
            if not self.dirty or self.context.acd is None:
                continue
            self.dirty = False
            try:
                await self._push_live()
            except Exception:
                log.exception("cti.wallboard_failed", tenant=self.tenant)

    async def _push_live(self, only: CtiConnection | None = None) -> None:
        acd = self.context.acd
        if acd is None:
            return
        connections = [only] if only is not None else list(self.connections)
        live = [
            connection for connection in connections if connection.pending is None and not connection.closed
        ]
        if any(connection.is_supervisor for connection in live):
            snapshot = await resolve(acd.snapshot(self.tenant))
            for connection in live:
                if connection.is_supervisor:
                    view = wallboard_view(snapshot, connection.principal, connection.scope)
                    frame = {"type": "wallboard", "seq": self.last_seq, "at": _now_iso(), **view}
                    connection.deliver(frame, logged=False)
        if any(connection.agent_id is not None and connection.queues for connection in live):
            counts = await resolve(acd.queue_counts(self.tenant))
            counts = counts if isinstance(counts, dict) else {}
            for connection in live:
                if connection.agent_id is None or not connection.queues:
                    continue
                mine = {queue: int(counts.get(queue, 0) or 0) for queue in connection.queues}
                if mine != connection.last_counts:
                    connection.last_counts = mine
                    frame = {"type": "queue.counts", "seq": self.last_seq, "at": _now_iso(), "counts": mine}
                    connection.deliver(frame, logged=False)

    async def initial_frames(self, connection: CtiConnection) -> None:
        """Right after hello: the wallboard (supervisors) and the waiting counts (agents)."""
        with contextlib.suppress(Exception):
            await self._push_live(connection)

    async def close(self) -> None:
        self.subscription.close()
        self.ticker.cancel()
        self.task.cancel()
        for task in (self.ticker, self.task):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# --- the gateway -------------------------------------------------------------------------------------------


class CtiGateway:
    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.hubs: dict[str, TenantHub] = {}
        self.connections: set[CtiConnection] = set()
        self._agent_connections: dict[tuple[str, str], int] = {}
        self._grace: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._closed = False

    async def serve(self, websocket: WebSocket) -> None:
        principal = await principal_of(websocket, token=websocket.query_params.get("token"))
        await websocket.accept()
        if principal is None:
            await websocket.close(CLOSE_NOT_SIGNED_IN, "sign in first")
            return
        if principal.kind == "session" and not same_origin(websocket):
            await websocket.close(CLOSE_FORBIDDEN, "connections from other sites are refused")
            return
        if not (principal.can("cti.agent") or principal.can("live.read")) or self._closed:
            await websocket.close(CLOSE_FORBIDDEN, "this user has no CTI access")
            return
        scope, queues = await self._load(principal)
        hub = self.hubs.get(principal.tenant)
        if hub is None:
            hub = self.hubs[principal.tenant] = TenantHub(self, principal.tenant)
        connection = CtiConnection(self, hub, websocket, principal, scope, queues)
        hub.add(connection)
        self.connections.add(connection)
        agent_key = (principal.tenant, connection.agent_id) if connection.agent_id else None
        if agent_key is not None:
            self._agent_connected(agent_key)
        log.info("cti.connected", tenant=principal.tenant, user=principal.username, agent=connection.agent_id)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            hub.remove(connection)
            if not hub.connections and self.hubs.get(principal.tenant) is hub:
                del self.hubs[principal.tenant]
                await hub.close()
            if agent_key is not None:
                self._agent_disconnected(agent_key)
            log.info("cti.disconnected", tenant=principal.tenant, user=principal.username)

    async def _load(self, principal: Principal) -> tuple[set[str] | None, list[str]]:
        queues: list[str] = []
        async with self.context.storage.tenant_session(principal.tenant) as session:
            scope = await agents_in_scope(session, principal) if principal.can("live.read") else set()
            if principal.agent_id is not None:
                agent = await session.scalar(
                    select(config_objects_table.c.document).where(
                        config_objects_table.c.kind == "agent",
                        config_objects_table.c.key == principal.agent_id,
                    )
                )
                if isinstance(agent, dict):
                    queues = [str(queue) for queue in agent.get("queues") or []]
        return scope, queues

    # ------------------------------------------------------------------------------- grace period

    def _agent_connected(self, key: tuple[str, str]) -> None:
        self._agent_connections[key] = self._agent_connections.get(key, 0) + 1
        timer = self._grace.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _agent_disconnected(self, key: tuple[str, str]) -> None:
        remaining = self._agent_connections.get(key, 1) - 1
        if remaining > 0:
            self._agent_connections[key] = remaining
            return
        self._agent_connections.pop(key, None)
        if not self._closed:
            self._grace[key] = asyncio.create_task(
                self._grace_expired(key), name=f"cti-grace:{key[0]}:{key[1]}"
            )

    async def _grace_expired(self, key: tuple[str, str]) -> None:
        tenant, agent_id = key
        await asyncio.sleep(self.context.cti_grace_seconds)
        if self._grace.get(key) is asyncio.current_task():
            del self._grace[key]
        acd = self.context.acd
        if acd is not None:
            try:
                state = await resolve(acd.agent_state(tenant, agent_id))
                current = state.get("state") if isinstance(state, dict) else None
                if current != "logged_out":
                    await resolve(acd.logout(tenant, agent_id))
                    log.info("cti.agent_gone_logged_out", tenant=tenant, agent=agent_id)
            except Exception as error:
                log.warning("cti.grace_logout_failed", tenant=tenant, agent=agent_id, error=str(error))
        browsers = self.context.browsers
        if browsers is not None:
            try:
                await resolve(browsers.detach(tenant, agent_id))
            except Exception as error:
                log.warning("cti.grace_detach_failed", tenant=tenant, agent=agent_id, error=str(error))

    def browser_notice(self, notice: Any) -> None:
        """The browser phones' word that an offer was withdrawn or a call ended at an agent (no log event
        may say so yet, and the ringing must stop now): a ``call.ended`` frame to that agent."""
        hub = self.hubs.get(str(getattr(notice, "tenant", "")))
        if hub is None:
            return
        frame = {
            "type": "call.ended",
            "seq": hub.last_seq,
            "at": _now_iso(),
            "call_id": getattr(notice, "call_id", None),
            "cause": getattr(notice, "cause", None) or getattr(notice, "kind", None),
        }
        for connection in hub.by_agent.get(str(getattr(notice, "agent_id", "")), ()):
            connection.deliver(frame, logged=False)

    def grace_pending(self, tenant: str, agent_id: str) -> bool:
        return (tenant, agent_id) in self._grace

    # ------------------------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Server shutdown: close every connection (1001); agents are not logged out by the shutdown."""
        self._closed = True
        for timer in self._grace.values():
            timer.cancel()
        self._grace.clear()
        for connection in list(self.connections):
            await connection.close(CLOSE_GOING_AWAY, "server shutting down")
        for hub in list(self.hubs.values()):
            await hub.close()
        self.hubs.clear()
