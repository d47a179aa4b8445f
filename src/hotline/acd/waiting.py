"""Waiting in a queue: the caller hears music on hold and is told when the wait ends.

Until agent routing lands (issue #5), a queued call waits with music on hold until the queue's maximum
wait passes or the caller hangs up, and every wait is logged (`call.queued`, `call.dequeued`) so CDRs and
statistics already count it (MET-01).
"""

from __future__ import annotations

import asyncio
import time

from hotline.switch.call import Call
from hotline.switch.control import CallGone, QueueOutcome, QueueRequest


async def wait_in_queue(call: Call, request: QueueRequest) -> QueueOutcome:
    """Hold the caller in `request.queue` with music on hold until the maximum wait or a hang-up."""
    started = time.monotonic()
    await call.event("call.queued", queue_id=request.queue, priority=request.priority)
    call.music_on_hold()
    outcome = "timeout"
    try:
        await asyncio.wait_for(call.wait_hung_up(), request.max_wait_seconds)
        outcome = "abandoned"
    except TimeoutError:
        pass
    except CallGone:
        outcome = "abandoned"
    waited = time.monotonic() - started
    await call.event("call.dequeued", queue_id=request.queue, outcome=outcome)
    return QueueOutcome("abandoned" if outcome == "abandoned" else "timeout", waited_seconds=waited)
