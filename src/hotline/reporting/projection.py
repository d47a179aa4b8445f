"""Bookkeeping shared by projections of the event log.

Each projection keeps, in the tenant's database, the seq of the last event it has applied (its
watermark), written in the same transaction as the rows it derived. Applying an event at or below the
watermark does nothing, so delivery may repeat; an event beyond the next expected seq makes the
projection read the missing events from the log first, so the tables always equal the fold of a prefix
of the log.
"""

from __future__ import annotations

from sqlalchemy import Column, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.storage.schema import BigInt, TenantBase

projection_state_table = Table(
    "projection_state",
    TenantBase.metadata,
    Column("name", String(64), primary_key=True),
    Column("last_seq", BigInt, nullable=False),
)


async def read_watermark(session: AsyncSession, name: str) -> int:
    value = await session.scalar(
        select(projection_state_table.c.last_seq).where(projection_state_table.c.name == name)
    )
    return int(value or 0)


async def write_watermark(session: AsyncSession, name: str, last_seq: int) -> None:
    result = await session.execute(
        update(projection_state_table).where(projection_state_table.c.name == name).values(last_seq=last_seq)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(insert(projection_state_table).values(name=name, last_seq=last_seq))
