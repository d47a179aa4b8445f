"""The tenant's audit log (TEN-10, SUP-05): who changed which configuration, who signed in or failed to,
who forced an agent's state, who read something sensitive (a configuration export, a recording).

    await record(session, actor="admin", action="config.update", target="queues/sales", detail={...})
    rows, total = await list_entries(session, offset=0, limit=50, action="login.failed")

Table ``audit`` (tenant migration t0003) in the tenant's own database: rows are only ever added.
Functions take an open tenant session (``Storage.tenant_session``) and run inside its transaction, so an
audited change and its audit row commit together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, JsonValue
from sqlalchemy import JSON, Column, Index, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.storage.schema import BigInt, TenantBase, UtcDateTime

audit_table = Table(
    "audit",
    TenantBase.metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("source", String(64), nullable=True),
    Index("ix_audit_at", "at"),
    Index("ix_audit_action", "action"),
)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, JsonValue]
    source: str | None


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    source: str | None = None,
) -> None:
    await session.execute(
        insert(audit_table).values(
            at=datetime.now(UTC),
            actor=actor[:100],
            action=action[:64],
            target=target[:256],
            detail=detail or {},
            source=source[:64] if source else None,
        )
    )


async def list_entries(
    session: AsyncSession, *, offset: int = 0, limit: int = 50, action: str | None = None
) -> tuple[list[AuditEntry], int]:
    """Newest first."""
    statement = select(audit_table)
    count = select(func.count()).select_from(audit_table)
    if action is not None:
        statement = statement.where(audit_table.c.action == action)
        count = count.where(audit_table.c.action == action)
    total = int(await session.scalar(count) or 0)
    rows = await session.execute(statement.order_by(audit_table.c.id.desc()).offset(offset).limit(limit))
    return [AuditEntry.model_validate(dict(row)) for row in rows.mappings()], total
