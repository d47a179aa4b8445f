"""A process that logs call events until it is killed (used by test_durability.py).

    python -m tests.storage.crash_writer DATA_DIR

Eight concurrent "calls" each append call.started, leg.created, call.answered, then (for every other
call) leg.ended and call.ended. After each append returns, the process prints `<event id> <seq>` on
stdout: those events were reported committed, so they must survive a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import sys

from hotline.events import CallAnswered, CallEnded, CallStarted, Event, LegCreated, LegEnded
from hotline.storage import EventLog, Storage


def report(event: Event) -> None:
    os.write(1, f"{event.id} {event.seq}\n".encode())


async def main(data_dir: str) -> None:
    storage = Storage(data_dir)
    await storage.migrate()
    await storage.create_tenant_database("acme")
    log = EventLog(storage)
    os.write(1, b"ready\n")

    async def calls(worker: int) -> None:
        for n in range(1_000_000):
            call_id = f"w{worker}-{n}"
            leg_id = f"{call_id}-leg"
            for event in (
                CallStarted(
                    tenant="acme", call_id=call_id, direction="inbound", ani="13800138000", dnis="4001"
                ),
                LegCreated(
                    tenant="acme",
                    call_id=call_id,
                    leg_id=leg_id,
                    kind="customer",
                    direction="inbound",
                    endpoint="t1",
                ),
                CallAnswered(tenant="acme", call_id=call_id, by="system", leg_id=leg_id),
            ):
                report(await log.append(event))
            if n % 2 == 0:
                report(await log.append(LegEnded(tenant="acme", call_id=call_id, leg_id=leg_id)))
                report(await log.append(CallEnded(tenant="acme", call_id=call_id, hangup_side="customer")))

    await asyncio.gather(*(calls(worker) for worker in range(8)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
