"""Where a tenant's configuration lives in its own database (principle 5; IVR-15).

Tables (tenant migration t0002):

- ``config_objects(kind, key, document, updated_at)``: one JSON document per object: extensions, trunks,
  internal numbers, calendars, skills, queues, agents, reason codes (:data:`KINDS`). New kinds need no
  migration.
- ``flow_versions(flow_id, version, status, document, created_at, published_at)``: every saved version of
  every IVR flow. ``status`` is ``draft``, ``published`` (the live version: at most one per flow) or
  ``retired`` (was live once). Publishing affects new calls only: running calls hold their own copy.
- ``config_revision(id=1, revision, updated_at)``: a counter moved by every change, so other processes
  (the server's ``Directory``) notice a change with one small read.

Functions take an open tenant session (``Storage.tenant_session``), work on plain JSON documents and
leave validation to the callers (``hotline.tenancy.config_document``); they run inside the caller's
transaction, so a change is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy import JSON, Column, Integer, String, Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.storage.schema import BigInt, TenantBase, UtcDateTime

KINDS: Final = ("extension", "trunk", "number", "calendar", "skill", "queue", "agent", "reason_code")
FlowStatus = Literal["draft", "published", "retired"]
Document = dict[str, Any]

config_objects_table = Table(
    "config_objects",
    TenantBase.metadata,
    Column("kind", String(32), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

flow_versions_table = Table(
    "flow_versions",
    TenantBase.metadata,
    Column("flow_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("status", String(16), nullable=False, index=True),
    Column("document", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
)

config_revision_table = Table(
    "config_revision",
    TenantBase.metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInt, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


# --- revision ----------------------------------------------------------------------------------------------


async def read_revision(session: AsyncSession) -> int:
    """0 until the first change."""
    value = await session.scalar(
        select(config_revision_table.c.revision).where(config_revision_table.c.id == 1)
    )
    return int(value) if value is not None else 0


async def bump_revision(session: AsyncSession) -> int:
    now = _now()
    updated = await session.execute(
        update(config_revision_table)
        .where(config_revision_table.c.id == 1)
        .values(revision=config_revision_table.c.revision + 1, updated_at=now)
    )
    if getattr(updated, "rowcount", 0) == 0:
        await session.execute(insert(config_revision_table).values(id=1, revision=1, updated_at=now))
    return await read_revision(session)


# --- objects -----------------------------------------------------------------------------------------------


async def read_objects(
    session: AsyncSession, kinds: Iterable[str] | None = None
) -> dict[str, dict[str, Document]]:
    """kind -> key -> document, keys in sorted order."""
    statement = select(
        config_objects_table.c.kind, config_objects_table.c.key, config_objects_table.c.document
    ).order_by(config_objects_table.c.kind, config_objects_table.c.key)
    if kinds is not None:
        statement = statement.where(config_objects_table.c.kind.in_(list(kinds)))
    found: dict[str, dict[str, Document]] = {}
    for kind, key, document in await session.execute(statement):
        found.setdefault(kind, {})[key] = document
    return found


async def replace_objects(session: AsyncSession, objects: Mapping[str, Mapping[str, Document]]) -> int:
    """Make each kind named in `objects` hold exactly the documents given (kinds not named are left
    alone). Returns how many objects were added, changed or removed."""
    existing = await read_objects(session, kinds=list(objects))
    now = _now()
    changes = 0
    for kind, documents in objects.items():
        before = existing.get(kind, {})
        gone = [key for key in before if key not in documents]
        if gone:
            await session.execute(
                delete(config_objects_table).where(
                    config_objects_table.c.kind == kind, config_objects_table.c.key.in_(gone)
                )
            )
            changes += len(gone)
        for key, document in documents.items():
            if key not in before:
                await session.execute(
                    insert(config_objects_table).values(kind=kind, key=key, document=document, updated_at=now)
                )
                changes += 1
            elif before[key] != document:
                await session.execute(
                    update(config_objects_table)
                    .where(config_objects_table.c.kind == kind, config_objects_table.c.key == key)
                    .values(document=document, updated_at=now)
                )
                changes += 1
    return changes


# --- flows -------------------------------------------------------------------------------------------------


async def read_live_flows(session: AsyncSession) -> dict[str, Document]:
    """flow id -> the published document (its ``version`` field is the stored version)."""
    rows = await session.execute(
        select(flow_versions_table.c.flow_id, flow_versions_table.c.document)
        .where(flow_versions_table.c.status == "published")
        .order_by(flow_versions_table.c.flow_id)
    )
    return {flow_id: document for flow_id, document in rows}


async def read_flow_version(
    session: AsyncSession, flow_id: str, version: int
) -> tuple[FlowStatus, Document] | None:
    row = (
        await session.execute(
            select(flow_versions_table.c.status, flow_versions_table.c.document).where(
                flow_versions_table.c.flow_id == flow_id, flow_versions_table.c.version == version
            )
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def flow_history(session: AsyncSession, flow_id: str) -> list[tuple[int, FlowStatus, datetime | None]]:
    """(version, status, published_at) of every stored version, oldest first."""
    rows = await session.execute(
        select(
            flow_versions_table.c.version, flow_versions_table.c.status, flow_versions_table.c.published_at
        )
        .where(flow_versions_table.c.flow_id == flow_id)
        .order_by(flow_versions_table.c.version)
    )
    return [(int(version), status, published_at) for version, status, published_at in rows]


async def _next_version(session: AsyncSession, flow_id: str) -> int:
    highest = await session.scalar(
        select(func.max(flow_versions_table.c.version)).where(flow_versions_table.c.flow_id == flow_id)
    )
    return int(highest or 0) + 1


def _without_version(document: Mapping[str, Any]) -> Document:
    return {key: value for key, value in document.items() if key != "version"}


async def save_flow_version(session: AsyncSession, document: Mapping[str, Any], status: FlowStatus) -> int:
    """Store `document` as the flow's next version with `status` (``draft`` or ``published``); returns the
    version number, which is also written into the stored document."""
    flow_id = str(document["id"])
    version = await _next_version(session, flow_id)
    now = _now()
    if status == "published":
        await _retire_live(session, flow_id)
    await session.execute(
        insert(flow_versions_table).values(
            flow_id=flow_id,
            version=version,
            status=status,
            document={**document, "version": version},
            created_at=now,
            published_at=now if status == "published" else None,
        )
    )
    return version


async def publish_flow_version(session: AsyncSession, flow_id: str, version: int) -> bool:
    """Make a stored version (a draft, or an older version to roll back to) the live one."""
    if await read_flow_version(session, flow_id, version) is None:
        return False
    await _retire_live(session, flow_id)
    await session.execute(
        update(flow_versions_table)
        .where(flow_versions_table.c.flow_id == flow_id, flow_versions_table.c.version == version)
        .values(status="published", published_at=_now())
    )
    return True


async def _retire_live(session: AsyncSession, flow_id: str) -> None:
    await session.execute(
        update(flow_versions_table)
        .where(flow_versions_table.c.flow_id == flow_id, flow_versions_table.c.status == "published")
        .values(status="retired")
    )


async def replace_live_flows(
    session: AsyncSession, documents: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, int], list[str]]:
    """Make `documents` the live flows: a flow whose content changed gets a new published version, a
    live flow that is not given is retired (its history stays). Returns (flow id -> new version for the
    flows published, the flows retired)."""
    live = await read_live_flows(session)
    published: dict[str, int] = {}
    for flow_id, document in documents.items():
        current = live.get(flow_id)
        if current is not None and _without_version(current) == _without_version(document):
            continue
        published[flow_id] = await save_flow_version(session, document, "published")
    retired = [flow_id for flow_id in live if flow_id not in documents]
    for flow_id in retired:
        await _retire_live(session, flow_id)
    return published, retired
