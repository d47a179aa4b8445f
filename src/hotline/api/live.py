"""Live state and call records (SUP-01/02/06/07, RPT-01, TEN-07/08).

    GET /api/v1/live                                 the wallboard snapshot (live.read)
    GET /api/v1/cdrs?from=&to=&offset=&limit=        call records, newest first (cdrs.read)

Both respect the caller's data scope (a team leader sees the agents of their department; an agent their
own calls) and mask caller numbers unless the caller holds ``numbers.full``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import false, func, or_, select

from hotline.api.auth import context_of, require
from hotline.api.config_routes import PageQuery
from hotline.api.context import resolve
from hotline.api.errors import ApiError
from hotline.reporting.cdr import cdr_table
from hotline.tenancy.masking import mask_fields, mask_number
from hotline.tenancy.users import Principal, agents_in_scope


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LiveAgent(_Open):
    agent_id: str
    name: str | None = None
    state: str
    reason: str | None = None
    since: datetime | str | None = None
    call_id: str | None = None
    queue: str | None = None
    ani_masked: str | None = None
    device: str | None = None


class LiveQueue(_Open):
    queue: str
    name: str | None = None
    waiting: int = 0
    longest_wait_seconds: float | None = None
    agents_ready: int = 0
    agents_not_ready: int = 0
    agents_on_call: int = 0
    offered_today: int = 0
    answered_today: int = 0
    abandoned_today: int = 0
    service_level_today: float | None = None
    abandon_rate_today: float | None = None


class LiveTrunk(_Open):
    name: str
    channels_in_use: int = 0
    channel_limit: int | None = None


class Wallboard(BaseModel):
    agents: list[LiveAgent]
    queues: list[LiveQueue]
    trunks: list[LiveTrunk]


def wallboard_view(snapshot: Any, principal: Principal, scope: set[str] | None) -> dict[str, Any]:
    """The ACD's snapshot as `principal` may see it: agents in scope, numbers masked as allowed."""
    data = jsonable_encoder(snapshot if isinstance(snapshot, dict) else {})
    agents = [agent for agent in data.get("agents") or [] if isinstance(agent, dict)]
    if scope is not None:
        agents = [agent for agent in agents if agent.get("agent_id") in scope]
    for agent in agents:
        if isinstance(agent.get("ani"), str):
            agent["ani_masked"] = mask_number(agent["ani"])
    view = {
        "agents": agents,
        "queues": list(data.get("queues") or []),
        "trunks": list(data.get("trunks") or []),
    }
    return view if principal.can("numbers.full") else mask_fields(view)


router = APIRouter(prefix="/api/v1", tags=["live"])
Watcher = Annotated[Principal, Depends(require("live.read"))]
RecordReader = Annotated[Principal, Depends(require("cdrs.read"))]


@router.get("/live", response_model=Wallboard, operation_id="live")
async def live(request: Request, principal: Watcher) -> Wallboard:
    context = context_of(request)
    if context.acd is None:
        raise ApiError(503, "unavailable", "the ACD is not running")
    async with context.storage.tenant_session(principal.tenant) as session:
        scope = await agents_in_scope(session, principal)
    snapshot = await resolve(context.acd.snapshot(principal.tenant))
    return Wallboard.model_validate(wallboard_view(snapshot, principal, scope))


class CdrPage(BaseModel):
    items: list[dict[str, Any]]
    total: int


@router.get("/cdrs", response_model=CdrPage, operation_id="list_cdrs")
async def cdrs(
    request: Request,
    principal: RecordReader,
    page: PageQuery,
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="calls started at or after")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to", description="calls started before")] = None,
) -> CdrPage:
    context = context_of(request)
    conditions: list[Any] = []
    if start is not None:
        conditions.append(cdr_table.c.started_at >= start)
    if end is not None:
        conditions.append(cdr_table.c.started_at < end)
    async with context.storage.tenant_session(principal.tenant) as session:
        scope = await agents_in_scope(session, principal)
        if scope is not None:
            conditions.append(
                or_(cdr_table.c.agent_id.in_(sorted(scope)), cdr_table.c.last_agent_id.in_(sorted(scope)))
                if scope
                else false()
            )
        total = int(await session.scalar(select(func.count()).select_from(cdr_table).where(*conditions)) or 0)
        rows = await session.execute(
            select(cdr_table)
            .where(*conditions)
            .order_by(cdr_table.c.started_at.desc(), cdr_table.c.call_id)
            .offset(page.offset)
            .limit(page.limit)
        )
        items = [{key: value for key, value in row.items() if key != "working"} for row in rows.mappings()]
    encoded = jsonable_encoder(items)
    return CdrPage(items=encoded if principal.can("numbers.full") else mask_fields(encoded), total=total)
