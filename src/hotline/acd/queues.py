"""Queues at run time: waiting calls in priority order, ready agents in strategy order, today's figures.

- :class:`LazyHeap`: a binary heap whose entries carry a token; an entry whose token no longer matches its
  item (the call was offered, the agent's state changed) is stale and dropped when it reaches the top, so
  removal is O(1) and the best valid entry is found in O(log n) amortised. Heaps are compacted when stale
  entries outnumber live ones.
- :class:`WaitingCall`: a call in one or more queues (overflow keeps its first place, ACD-06): priority,
  skill requirement, its place (``rank``: ACD-03, priority that rises with the wait, so FIFO within equal
  priority and no call starves), and where it stands (``waiting``, ``offering`` or ``done``).
- :class:`QueueRuntime`: one queue's configuration, its waiting calls grouped by skill requirement (one heap
  per distinct requirement), one index of ready agents per requirement, its logged-in members and today's
  figures (:class:`QueueStats`, the MET-01/02/06/09 counters for the wallboard).

Priority ageing: a call's effective priority is ``priority + AGING_POINTS_PER_SECOND * waited``. Every call
ages at the same rate, so the order of two calls never changes while they wait and the heap key
``AGING_POINTS_PER_SECOND * enqueued_at - priority`` is fixed at entry. A call 100 points below another
overtakes it after ``100 / AGING_POINTS_PER_SECOND`` seconds (10 minutes).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Final, Generic, Literal, TypeVar

from hotline.acd.agents import AgentStatus
from hotline.acd.config import Queue
from hotline.switch.control import SkillExpression

AGING_POINTS_PER_SECOND: Final = 100.0 / 600.0
# Expected wait (MET-09) before the queue has handled a call today.
DEFAULT_HANDLE_SECONDS: Final = 180.0

T = TypeVar("T")
Key = tuple[float, ...]


class LazyHeap(Generic[T]):
    """Entries ``(key, tiebreak, token, item)``; ``valid(item, token)`` says whether an entry is live."""

    __slots__ = ("_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[Key, int, int, T]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, key: Key, token: int, item: T) -> None:
        heapq.heappush(self._heap, (key, next(self._counter), token, item))

    def extend(self, entries: Iterable[tuple[Key, int, T]]) -> None:
        """Add many ``(key, token, item)`` at once: O(n) rather than O(n log n)."""
        self._heap.extend((key, next(self._counter), token, item) for key, token, item in entries)
        heapq.heapify(self._heap)

    def peek(self, valid: Callable[[T, int], bool]) -> tuple[Key, T] | None:
        """The best live entry (stale ones above it are dropped), or None."""
        heap = self._heap
        while heap:
            key, _, token, item = heap[0]
            if valid(item, token):
                return key, item
            heapq.heappop(heap)
        return None

    def best(self, valid: Callable[[T, int], bool], limit: int) -> list[T]:
        """Up to `limit` live items in key order (they stay in the heap)."""
        taken: list[tuple[Key, int, int, T]] = []
        seen: set[int] = set()
        heap = self._heap
        while heap and len(taken) < limit:
            entry = heapq.heappop(heap)
            item = entry[3]
            if valid(item, entry[2]) and id(item) not in seen:
                seen.add(id(item))
                taken.append(entry)
        for entry in taken:
            heapq.heappush(heap, entry)
        return [entry[3] for entry in taken]

    def compact(self, valid: Callable[[T, int], bool]) -> None:
        self._heap = [entry for entry in self._heap if valid(entry[3], entry[2])]
        heapq.heapify(self._heap)

    def items(self, valid: Callable[[T, int], bool]) -> Iterator[T]:
        return (entry[3] for entry in self._heap if valid(entry[3], entry[2]))


CallStatus = Literal["waiting", "offering", "done"]


@dataclass(eq=False)
class WaitingCall:
    """A call handed to the ACD, from ``call.queued`` until its one outcome (MET-01)."""

    call_id: str
    queue: str  # the first queue: statistics count the call there unless another queue answers it
    priority: int
    requirement: SkillExpression | None
    class_key: str
    seq: int
    enqueued_at: float
    deadline: float
    ani: str | None = None
    # queue -> when the call entered it (monotonic); insertion order is entry order
    queues: dict[str, float] = field(default_factory=dict)
    status: CallStatus = "waiting"
    # A sticky or dedicated agent (ACD-04): only they are offered the call until `target_until`.
    target: str | None = None
    target_until: float | None = None
    version: int = 0
    outcome: str | None = None
    answered_queue: str | None = None
    agent_id: str | None = None

    @property
    def rank(self) -> float:
        return AGING_POINTS_PER_SECOND * self.enqueued_at - self.priority

    def effective_priority(self, now: float) -> float:
        return min(100.0, self.priority + AGING_POINTS_PER_SECOND * max(0.0, now - self.enqueued_at))


def waiting_entry_valid(call: WaitingCall, token: int) -> bool:
    return call.status == "waiting" and call.version == token and call.target is None


@dataclass
class QueueStats:
    """Today's figures of one queue (MET-01: each call counted once, at the queue that answered it or else
    at its first queue)."""

    day: date | None = None
    answered: int = 0
    answered_within_sl: int = 0
    abandoned: int = 0  # long abandons (wait > S)
    short_abandoned: int = 0
    diverted: int = 0
    answered_wait_seconds: float = 0.0
    handled: int = 0
    handle_seconds: float = 0.0
    overflowed_in: int = 0
    overflowed_out: int = 0

    @property
    def completed(self) -> int:
        return self.answered + self.abandoned + self.short_abandoned + self.diverted

    def average_handle_seconds(self) -> float:
        return self.handle_seconds / self.handled if self.handled else DEFAULT_HANDLE_SECONDS


@dataclass(eq=False)
class QueueRuntime:
    config: Queue
    # requirement key -> calls waiting with that requirement, best first
    waiting: dict[str, LazyHeap[WaitingCall]] = field(default_factory=dict)
    requirements: dict[str, SkillExpression | None] = field(default_factory=dict)
    # requirement key -> ready members who satisfy it, in strategy order
    ready: dict[str, LazyHeap[AgentStatus]] = field(default_factory=dict)
    members: dict[str, AgentStatus] = field(default_factory=dict)
    calls: dict[str, WaitingCall] = field(default_factory=dict)
    stats: QueueStats = field(default_factory=QueueStats)
    removed: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def ready_valid(self, agent: AgentStatus, token: int) -> bool:
        return agent.state == "ready" and agent.token == token and agent.agent_id in self.members

    def counts(self) -> dict[str, int]:
        """Members by state group, for the wallboard and MET-09."""
        ready = not_ready = on_call = ringing = wrap_up = 0
        for agent in self.members.values():
            state = agent.state
            if state == "ready":
                ready += 1
            elif state == "not_ready":
                not_ready += 1
            elif state in ("on_call", "on_hold", "outbound"):
                on_call += 1
            elif state in ("reserved", "ringing"):
                ringing += 1
            elif state == "wrap_up":
                wrap_up += 1
        return {
            "ready": ready,
            "not_ready": not_ready,
            "on_call": on_call,
            "ringing": ringing,
            "wrap_up": wrap_up,
            "logged_in": len(self.members),
        }

    def expected_wait(self, position: int) -> float | None:
        """MET-09: position × AHT ÷ the logged-in members who are not not-ready; None without any."""
        working = sum(1 for agent in self.members.values() if agent.state != "not_ready")
        if working == 0:
            return None
        return position * self.stats.average_handle_seconds() / working

    def position_of(self, call: WaitingCall) -> int:
        """1 for the next call to be served (calls ahead of it in this queue, plus one)."""
        rank = (call.rank, call.seq)
        return 1 + sum(
            1
            for other in self.calls.values()
            if other is not call and other.status != "done" and (other.rank, other.seq) < rank
        )
