"""The event bus: publish logged events, subscribe by name pattern.

    bus = InProcessBus()
    sub = bus.subscribe("call.*", tenant="acme")          # an async iterator
    async for item in sub:                                # Event, or EventsMissed
        ...
    bus.subscribe("agent.state_changed", handler=on_agent)  # or let the bus drive an async handler
    await bus.publish(logged_event)                       # never waits for subscribers

Patterns are shell-style over the event name: `"*"`, `"call.*"`, `"agent.state_changed"`, `"*.ended"`.

Only events that carry a `seq` (that is, already appended to their tenant's log, principle 4) can be
published. Each subscription has a bounded queue; when it is full the subscriber loses events rather than
slowing the publisher or anyone else. It then receives, after the events it already has, one
`EventsMissed` naming for each tenant the last seq before the gap, so it can re-read the log from there
(`EventLog.read(tenant, after_seq)`) and discard duplicates by seq.

`EventBus` is the interface; a NATS JetStream implementation (subjects `events.<tenant>.<type>`) can sit
behind it for clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from hotline.events.models import Event
from hotline.log import get_logger

log = get_logger(__name__)

DEFAULT_QUEUE_SIZE = 4096


class EventNotLogged(ValueError):
    """Raised when publishing an event that has no seq: it must be appended to the log first."""


class SubscriptionClosed(Exception):
    """The subscription was closed; no more events will arrive."""


@dataclass(frozen=True)
class EventsMissed:
    """This subscriber dropped events. For each tenant, re-read the log after `after_seq[tenant]`."""

    after_seq: dict[str, int]
    dropped: int


Delivery = Event | EventsMissed
Handler = Callable[[Delivery], Awaitable[None]]


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    def subscribe(
        self,
        pattern: str = "*",
        handler: Handler | None = None,
        *,
        tenant: str | None = None,
        maxsize: int = DEFAULT_QUEUE_SIZE,
    ) -> Subscription: ...

    async def close(self, timeout: float = 5.0) -> None: ...


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A shell-style event-name pattern as a regex; rejects empty patterns."""
    if not pattern or pattern.strip() != pattern:
        raise ValueError(f"event pattern {pattern!r} must be a non-empty name such as 'call.*'")
    return re.compile(fnmatch.translate(pattern))


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded queue. Iterate it, or call `get()` / `get_batch()`."""

    pattern: str
    tenant: str | None = None
    maxsize: int = DEFAULT_QUEUE_SIZE
    delivered: int = 0
    dropped: int = 0
    handler_failures: int = 0
    _regex: re.Pattern[str] = field(init=False, repr=False)
    _items: deque[Event] = field(init=False, repr=False, default_factory=deque)
    _gap: dict[str, int] | None = field(init=False, repr=False, default=None)
    _gap_dropped: int = field(init=False, repr=False, default=0)
    _ready: asyncio.Event = field(init=False, repr=False, default_factory=asyncio.Event)
    _closed: bool = field(init=False, repr=False, default=False)
    _on_close: Callable[[Subscription], None] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.maxsize < 1:
            raise ValueError("a subscription queue holds at least one event")
        self._regex = compile_pattern(self.pattern)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        return len(self._items)

    def matches(self, event: Event) -> bool:
        if self.tenant is not None and event.tenant != self.tenant:
            return False
        return self._regex.fullmatch(event.type) is not None

    def offer(self, event: Event) -> None:
        """Queue the event, or count it missed; never blocks."""
        if self._closed:
            return
        if self._gap is not None or len(self._items) >= self.maxsize:
            # Once a gap opened, drop everything until the subscriber has seen the notice, so the
            # notice sits exactly between what it has and what comes live after it.
            if self._gap is None:
                self._gap = {}
            assert event.seq is not None
            self._gap.setdefault(event.tenant, event.seq - 1)
            self._gap_dropped += 1
            self.dropped += 1
        else:
            self._items.append(event)
        self._ready.set()

    def _take_ready(self) -> Delivery | None:
        if self._items:
            self.delivered += 1
            return self._items.popleft()
        if self._gap is not None:
            missed = EventsMissed(after_seq=self._gap, dropped=self._gap_dropped)
            self._gap = None
            self._gap_dropped = 0
            return missed
        return None

    async def get(self) -> Delivery:
        """The next event (or gap notice); raises SubscriptionClosed once closed and drained."""
        while True:
            item = self._take_ready()
            if item is not None:
                return item
            if self._closed:
                raise SubscriptionClosed(self.pattern)
            self._ready.clear()
            await self._ready.wait()

    async def get_batch(self, max_items: int = 500) -> list[Delivery]:
        """Wait for at least one item, then take up to `max_items` without waiting."""
        batch = [await self.get()]
        while len(batch) < max_items:
            item = self._take_ready()
            if item is None:
                break
            batch.append(item)
            if isinstance(item, EventsMissed):
                break
        return batch

    def close(self) -> None:
        """Stop receiving; what is queued can still be read, then iteration ends."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        if self._on_close is not None:
            self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class InProcessBus:
    """The single-node bus: delivery is a queue append per matching subscriber."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._handler_tasks: dict[Subscription, asyncio.Task[None]] = {}
        self._closed = False
        self.published = 0

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    async def publish(self, event: Event) -> None:
        self.publish_nowait(event)

    def publish_nowait(self, event: Event) -> None:
        if event.seq is None:
            raise EventNotLogged(f"{event.type} {event.id} has no seq: append it to the event log first")
        if self._closed:
            return
        self.published += 1
        for subscription in self._subscriptions:
            if subscription.matches(event):
                subscription.offer(event)

    def subscribe(
        self,
        pattern: str = "*",
        handler: Handler | None = None,
        *,
        tenant: str | None = None,
        maxsize: int = DEFAULT_QUEUE_SIZE,
    ) -> Subscription:
        if self._closed:
            raise RuntimeError("the event bus is closed")
        subscription = Subscription(pattern=pattern, tenant=tenant, maxsize=maxsize)
        subscription._on_close = self._forget
        self._subscriptions.append(subscription)
        if handler is not None:
            task = asyncio.get_running_loop().create_task(
                _drive(subscription, handler), name=f"bus-handler:{pattern}"
            )
            self._handler_tasks[subscription] = task
            task.add_done_callback(functools.partial(self._handler_finished, subscription))
        return subscription

    def _handler_finished(self, subscription: Subscription, _task: asyncio.Task[None]) -> None:
        self._handler_tasks.pop(subscription, None)

    def _forget(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    async def close(self, timeout: float = 5.0) -> None:
        """Close all subscriptions; handlers get `timeout` seconds to drain their queue, then are cut."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()
        tasks = list(self._handler_tasks.values())
        if tasks:
            _done, still_running = await asyncio.wait(tasks, timeout=timeout)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=1.0)


async def _drive(subscription: Subscription, handler: Handler) -> None:
    """Feed one handler; its failures are logged and counted, never propagated to others."""
    async for item in subscription:
        try:
            await handler(item)
        except Exception:
            subscription.handler_failures += 1
            log.exception("event handler failed", pattern=subscription.pattern)
