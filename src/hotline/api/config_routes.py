"""REST resources for the tenant's configuration (TEN-02, TEN-11, TEN-12, API-01, FM-14, IVR-15).

For each kind in :data:`KINDS` (``extensions``, ``trunks``, ``numbers``, ``queues``, ``skills``,
``agents``, ``reason-codes``, ``calendars``):

    GET    /api/v1/{kind}?offset=&limit=   {"items": [...], "total": n}       config.read
    POST   /api/v1/{kind}                  201 the object                       config.write
    GET    /api/v1/{kind}/{key}            the object                           config.read
    PUT    /api/v1/{kind}/{key}            the object (replaced whole)          config.write
    DELETE /api/v1/{kind}/{key}            204                                  config.write

Bodies are the models of the configuration document. A body with problems gets ``422`` with ``fields``
keyed by the field inside the body (``""``: the body as a whole); a change that breaks another object
(a number leading to a deleted flow) is refused with the other object's document path
(``numbers[4001].target``): 422 for POST/PUT, 409 ``in_use`` for DELETE. Agents' password hashes are never
shown (PUT without ``password`` keeps the password); other secrets (SIP passwords) only to users who may
change the configuration.

Flows (IVR-15): ``GET /api/v1/flows``, ``GET /api/v1/flows/{id}`` (published and draft),
``PUT /api/v1/flows/{id}/draft`` (problems → 422 with ``fields`` keyed by node id, ``@flow`` for the flow
itself), ``POST /api/v1/flows/{id}/publish`` (``{"version": n}`` optional: the latest draft; new calls
only). The whole document: ``GET /api/v1/config`` (audited export, ``?format=yaml``) and
``PUT /api/v1/config`` (JSON or YAML, all or nothing). ``GET/PUT /api/v1/password-policy`` (TEN-09).

Every change is written to the audit log (TEN-10).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from hotline.acd.config import Agent, Queue, ReasonCode, Skill
from hotline.api.auth import client_address, context_of, editor_of, require, write_audit
from hotline.api.errors import ApiError, add_field, invalid, validation_fields
from hotline.api.openapi import SchemaBook
from hotline.ivr.calendar import BusinessCalendar
from hotline.ivr.schema import Flow
from hotline.switch.directory import Extension, NumberEntry, Trunk
from hotline.tenancy import config_store
from hotline.tenancy.config_document import (
    ConfigProblem,
    ConfigSyntaxError,
    dump_document,
    load_tenant_config,
    parse_document,
    publish_flow,
    save_flow_draft,
)
from hotline.tenancy.service import InvalidNumber, normalize_number
from hotline.tenancy.users import PasswordPolicy, Principal, load_policy, save_policy

REDACTED: Final = "********"
MAX_BODY: Final = 4 * 1024 * 1024
FLOW_KEY: Final = "@flow"
MAX_PAGE: Final = 1000


@dataclass(frozen=True)
class ConfigKind:
    path: str
    section: str
    key_field: str
    model: type[BaseModel]
    noun: str
    # Shown only to users who may change the configuration.
    secrets: tuple[str, ...] = ()
    # Never shown.
    hidden: tuple[str, ...] = ()
    # Agents may read it too.
    agents_read: bool = False


KINDS: Final = (
    ConfigKind("extensions", "extensions", "number", Extension, "extension", secrets=("password",)),
    ConfigKind("trunks", "trunks", "name", Trunk, "trunk", secrets=("password",)),
    ConfigKind("numbers", "numbers", "number", NumberEntry, "number"),
    ConfigKind("queues", "queues", "name", Queue, "queue", agents_read=True),
    ConfigKind("skills", "skills", "id", Skill, "skill"),
    ConfigKind("agents", "agents", "id", Agent, "agent", hidden=("password_hash",)),
    ConfigKind("reason-codes", "reason_codes", "code", ReasonCode, "reason code", agents_read=True),
    ConfigKind("calendars", "calendars", "id", BusinessCalendar, "calendar"),
)


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int


def page_of(
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="items to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="items to return")] = 50,
) -> Page:
    return Page(offset, limit)


PageQuery = Annotated[Page, Depends(page_of)]
Reader = Annotated[Principal, Depends(require("config.read"))]
CONFIG_READER: Final = Depends(require("config.read"))
DESK_READER: Final = Depends(require("config.read", "cti.agent"))
Writer = Annotated[Principal, Depends(require("config.write"))]


def paged(items: list[Any], page: Page) -> dict[str, Any]:
    return {"items": items[page.offset : page.offset + page.limit], "total": len(items)}


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
    if not raw.strip():
        raise ApiError(400, "bad_json", "the request needs a JSON body")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {error}") from None


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise invalid({"": "the body must be a JSON object"})
    return body


def problem_fields(problems: list[ConfigProblem], prefix: str) -> dict[str, str]:
    """Problems of the object at `prefix` keyed by its own field paths; others by their document path."""
    fields: dict[str, str] = {}
    for problem in problems:
        if problem.path == prefix:
            key = ""
        elif problem.path.startswith(prefix + "."):
            key = problem.path[len(prefix) + 1 :]
        else:
            key = problem.path
        add_field(fields, key, problem.message)
    return fields


def flow_problem_fields(problems: list[ConfigProblem], flow_id: str) -> dict[str, str]:
    """Flow problems keyed by node id; problems of the flow itself under ``@flow``."""
    fields: dict[str, str] = {}
    prefix = f"flows[{flow_id}]"
    for problem in problems:
        rest = problem.path[len(prefix) :] if problem.path.startswith(prefix) else problem.path
        if rest.startswith(".nodes["):
            node, _, tail = rest[len(".nodes[") :].partition("]")
            tail = tail.removeprefix(".")
            add_field(fields, node, f"{tail}: {problem.message}" if tail else problem.message)
        else:
            tail = rest.removeprefix(".")
            add_field(fields, FLOW_KEY, f"{tail}: {problem.message}" if tail else problem.message)
    return fields


def _key_of(kind: ConfigKind, item: BaseModel) -> str:
    return str(getattr(item, kind.key_field))


def _same_key(kind: ConfigKind, stored: str, wanted: str) -> bool:
    if stored == wanted:
        return True
    if kind.path == "numbers":
        try:
            return normalize_number(wanted)[0] == stored
        except InvalidNumber:
            return False
    return False


def present(kind: ConfigKind, item: BaseModel, principal: Principal) -> dict[str, Any]:
    document = item.model_dump(mode="json")
    for name in kind.hidden:
        document.pop(name, None)
    if not principal.can("config.write"):
        for name in kind.secrets:
            if document.get(name) is not None:
                document[name] = REDACTED
    return document


async def _items(request: Request, principal: Principal, kind: ConfigKind) -> list[BaseModel]:
    config = await load_tenant_config(context_of(request).storage, principal.tenant)
    items: list[BaseModel] = list(getattr(config, kind.section))
    return sorted(items, key=lambda item: _key_of(kind, item))


async def _find(request: Request, principal: Principal, kind: ConfigKind, key: str) -> BaseModel:
    for item in await _items(request, principal, kind):
        if _same_key(kind, _key_of(kind, item), key):
            return item
    raise ApiError(404, "not_found", f"no {kind.noun} {key!r}")


async def _validated(kind: ConfigKind, body: dict[str, Any]) -> BaseModel:
    try:
        # Off the event loop: an agent's new password is hashed here (argon2, CPU-bound).
        return await asyncio.to_thread(kind.model.model_validate, body)
    except ValidationError as error:
        raise invalid(validation_fields(error.errors(include_url=False))) from None


def _document_item(item: BaseModel) -> dict[str, Any]:
    return item.model_dump(mode="json", exclude_defaults=True)


def _kind_routes(router: APIRouter, book: SchemaBook, kind: ConfigKind) -> None:
    noun = kind.noun
    tag = "configuration"
    item_path = f"/{kind.path}/{{key}}"
    operation = kind.path.replace("-", "_")

    # Agents read some kinds too (the desktop offers not-ready reasons and dispositions, names queues).
    reader = DESK_READER if kind.agents_read else CONFIG_READER

    async def list_items(request: Request, page: PageQuery, principal: Principal = reader) -> dict[str, Any]:
        items = [present(kind, item, principal) for item in await _items(request, principal, kind)]
        return paged(items, page)

    async def get_item(key: str, request: Request, principal: Principal = reader) -> dict[str, Any]:
        return present(kind, await _find(request, principal, kind, key), principal)

    async def create_item(request: Request, principal: Writer) -> JSONResponse:
        item = await _validated(kind, await json_object(request))
        key = _key_of(kind, item)
        existing = {_key_of(kind, other) for other in await _items(request, principal, kind)}
        if key in existing:
            raise ApiError(409, "exists", f"{noun} {key!r} exists", {kind.key_field: "is taken"})

        def change(document: dict[str, Any]) -> None:
            document.setdefault(kind.section, []).append(_document_item(item))

        await _apply(request, principal, kind, key, change, "config.create")
        return JSONResponse(present(kind, item, principal), status_code=201)

    async def replace_item(key: str, request: Request, principal: Writer) -> dict[str, Any]:
        body = await json_object(request)
        current = await _find(request, principal, kind, key)
        stored_key = _key_of(kind, current)
        given = body.get(kind.key_field)
        if given is None:
            body[kind.key_field] = stored_key
        elif not _same_key(kind, stored_key, str(given)):
            raise invalid({kind.key_field: f"must be {stored_key!r}, the {noun} in the URL"})
        if kind.path == "agents" and body.get("password") is None and body.get("password_hash") is None:
            # No new password given: the agent keeps the one it has.
            body["password_hash"] = getattr(current, "password_hash", None)
        item = await _validated(kind, body)

        def change(document: dict[str, Any]) -> None:
            items = document.setdefault(kind.section, [])
            for index, raw in enumerate(items):
                if str(raw.get(kind.key_field)) == stored_key:
                    items[index] = _document_item(item)
                    return
            raise ApiError(404, "not_found", f"no {noun} {key!r}")

        await _apply(request, principal, kind, stored_key, change, "config.update")
        return present(kind, item, principal)

    async def delete_item(key: str, request: Request, principal: Writer) -> Response:
        current = await _find(request, principal, kind, key)
        stored_key = _key_of(kind, current)

        def change(document: dict[str, Any]) -> None:
            document[kind.section] = [
                raw for raw in document.get(kind.section, []) if str(raw.get(kind.key_field)) != stored_key
            ]

        await _apply(request, principal, kind, stored_key, change, "config.delete", conflict=True)
        return Response(status_code=204)

    not_found = {"404": {"description": f"no such {noun}"}}
    router.add_api_route(
        f"/{kind.path}",
        list_items,
        methods=["GET"],
        tags=[tag],
        summary=f"List {kind.path}",
        operation_id=f"list_{operation}",
        openapi_extra={"responses": {"200": book.page(kind.model)}},
    )
    router.add_api_route(
        f"/{kind.path}",
        create_item,
        methods=["POST"],
        tags=[tag],
        summary=f"Add a {noun}",
        operation_id=f"create_{operation}",
        status_code=201,
        response_class=JSONResponse,
        openapi_extra={
            **book.request(kind.model),
            "responses": {"201": book.response(kind.model), "409": {"description": "exists"}},
        },
    )
    router.add_api_route(
        item_path,
        get_item,
        methods=["GET"],
        tags=[tag],
        summary=f"One {noun}",
        operation_id=f"get_{operation}",
        openapi_extra={"responses": {"200": book.response(kind.model), **not_found}},
    )
    router.add_api_route(
        item_path,
        replace_item,
        methods=["PUT"],
        tags=[tag],
        summary=f"Replace a {noun}",
        operation_id=f"replace_{operation}",
        openapi_extra={
            **book.request(kind.model),
            "responses": {"200": book.response(kind.model), **not_found},
        },
    )
    router.add_api_route(
        item_path,
        delete_item,
        methods=["DELETE"],
        tags=[tag],
        summary=f"Remove a {noun}",
        operation_id=f"delete_{operation}",
        status_code=204,
        response_class=Response,
        openapi_extra={"responses": {**not_found, "409": {"description": "still in use"}}},
    )


async def _apply(
    request: Request,
    principal: Principal,
    kind: ConfigKind,
    key: str,
    change: Callable[[dict[str, Any]], None],
    action: str,
    *,
    conflict: bool = False,
) -> None:
    result = await editor_of(request).apply(principal.tenant, change)
    if not result.ok:
        fields = problem_fields(result.problems, f"{kind.section}[{key}]")
        if conflict:
            raise ApiError(409, "in_use", f"{kind.noun} {key!r} is still in use", fields)
        raise invalid(fields)
    await write_audit(
        context_of(request),
        principal.tenant,
        actor=principal.username,
        action=action,
        target=f"{kind.path}/{key}",
        detail={"revision": result.revision},
        source=client_address(request),
    )


# --- flows -----------------------------------------------------------------------------------------------


class FlowVersionInfo(BaseModel):
    version: int
    status: Literal["draft", "published", "retired"]
    published_at: str | None


class FlowSummary(BaseModel):
    id: str
    name: str
    published_version: int | None
    draft_version: int | None
    versions: int


class FlowVersion(BaseModel):
    version: int
    document: dict[str, Any]


class FlowDetail(BaseModel):
    id: str
    name: str
    published: FlowVersion | None
    draft: FlowVersion | None
    versions: list[FlowVersionInfo]


class FlowSaved(BaseModel):
    id: str
    version: int
    status: Literal["draft", "published"]


class PublishRequest(BaseModel):
    version: int | None = Field(default=None, ge=1)


class FlowPage(BaseModel):
    items: list[FlowSummary]
    total: int


async def _flow_detail(request: Request, tenant: str, flow_id: str) -> FlowDetail | None:
    async with context_of(request).storage.tenant_session(tenant) as session:
        history = await config_store.flow_history(session, flow_id)
        if not history:
            return None
        published_version = next((version for version, status, _at in history if status == "published"), None)
        drafts = [version for version, status, _at in history if status == "draft"]
        draft_version = drafts[-1] if drafts and drafts[-1] > (published_version or 0) else None
        published = draft = None
        if published_version is not None:
            stored = await config_store.read_flow_version(session, flow_id, published_version)
            published = FlowVersion(version=published_version, document=stored[1]) if stored else None
        if draft_version is not None:
            stored = await config_store.read_flow_version(session, flow_id, draft_version)
            draft = FlowVersion(version=draft_version, document=stored[1]) if stored else None
    newest = draft or published
    return FlowDetail(
        id=flow_id,
        name=str((newest.document.get("name") if newest else "") or ""),
        published=published,
        draft=draft,
        versions=[
            FlowVersionInfo(version=version, status=status, published_at=at.isoformat() if at else None)
            for version, status, at in history
        ],
    )


def _flow_routes(router: APIRouter, book: SchemaBook) -> None:

    @router.get("/flows", tags=["flows"], response_model=FlowPage, operation_id="list_flows")
    async def list_flows(request: Request, principal: Reader, page: PageQuery) -> FlowPage:
        async with context_of(request).storage.tenant_session(principal.tenant) as session:
            flow_ids = list(
                await session.scalars(
                    select(config_store.flow_versions_table.c.flow_id)
                    .distinct()
                    .order_by(config_store.flow_versions_table.c.flow_id)
                )
            )
        summaries = []
        for flow_id in flow_ids[page.offset : page.offset + page.limit]:
            detail = await _flow_detail(request, principal.tenant, flow_id)
            if detail is not None:
                summaries.append(
                    FlowSummary(
                        id=flow_id,
                        name=detail.name,
                        published_version=detail.published.version if detail.published else None,
                        draft_version=detail.draft.version if detail.draft else None,
                        versions=len(detail.versions),
                    )
                )
        return FlowPage(items=summaries, total=len(flow_ids))

    @router.get(
        "/flows/{flow_id}",
        tags=["flows"],
        response_model=FlowDetail,
        operation_id="get_flow",
        responses={404: {"description": "no such flow"}},
    )
    async def get_flow(flow_id: str, request: Request, principal: Reader) -> FlowDetail:
        detail = await _flow_detail(request, principal.tenant, flow_id)
        if detail is None:
            raise ApiError(404, "not_found", f"no flow {flow_id!r}")
        return detail

    @router.put(
        "/flows/{flow_id}/draft",
        tags=["flows"],
        response_model=FlowSaved,
        operation_id="save_flow_draft",
        openapi_extra=book.request(Flow),
        responses={422: {"description": "problems keyed by node id (@flow: the flow itself)"}},
    )
    async def save_draft(flow_id: str, request: Request, principal: Writer) -> FlowSaved:
        document = await json_object(request)
        given = document.setdefault("id", flow_id)
        if given != flow_id:
            raise invalid({FLOW_KEY: f"id: must be {flow_id!r}, the flow in the URL"})
        version, problems = await save_flow_draft(context_of(request).storage, principal.tenant, document)
        if version is None:
            raise invalid(flow_problem_fields(problems, flow_id), "the flow has problems; nothing was saved")
        await write_audit(
            context_of(request),
            principal.tenant,
            actor=principal.username,
            action="flow.draft",
            target=f"flows/{flow_id}",
            detail={"version": version},
            source=client_address(request),
        )
        return FlowSaved(id=flow_id, version=version, status="draft")

    @router.post(
        "/flows/{flow_id}/publish",
        tags=["flows"],
        response_model=FlowSaved,
        operation_id="publish_flow",
        responses={404: {"description": "no draft"}, 422: {"description": "problems keyed by node id"}},
    )
    async def publish(
        flow_id: str, request: Request, principal: Writer, body: PublishRequest | None = None
    ) -> FlowSaved:
        context = context_of(request)
        version = body.version if body is not None else None
        if version is None:
            detail = await _flow_detail(request, principal.tenant, flow_id)
            if detail is None or detail.draft is None:
                raise ApiError(404, "not_found", f"flow {flow_id!r} has no draft to publish")
            version = detail.draft.version
        async with editor_of(request).lock(principal.tenant):
            problems = await publish_flow(
                context.storage, principal.tenant, flow_id, version, directory=context.directory
            )
        if problems:
            if any("has no version" in problem.message for problem in problems):
                raise ApiError(404, "not_found", f"flow {flow_id!r} has no version {version}")
            raise invalid(
                flow_problem_fields(problems, flow_id), "the flow has problems; nothing was published"
            )
        await write_audit(
            context,
            principal.tenant,
            actor=principal.username,
            action="flow.publish",
            target=f"flows/{flow_id}",
            detail={"version": version},
            source=client_address(request),
        )
        return FlowSaved(id=flow_id, version=version, status="published")


# --- the whole document and the password policy ---------------------------------------------------------


class ImportSummary(BaseModel):
    revision: int | None
    changed: int
    flows_published: dict[str, int]
    flows_retired: list[str]


Admin = Annotated[Principal, Depends(require("users.manage"))]


def _document_routes(router: APIRouter) -> None:

    @router.get(
        "/config",
        tags=["configuration"],
        operation_id="export_config",
        responses={200: {"content": {"application/json": {}, "application/yaml": {}}}},
    )
    async def export_config(
        request: Request, principal: Writer, format: Literal["json", "yaml"] = "json"
    ) -> Response:
        """The whole configuration document (a secret: it holds SIP passwords); every export is audited."""
        context = context_of(request)
        document = await editor_of(request).document(principal.tenant)
        await write_audit(
            context,
            principal.tenant,
            actor=principal.username,
            action="config.export",
            target="config",
            detail={"format": format},
            source=client_address(request),
        )
        if format == "yaml":
            return PlainTextResponse(dump_document(document), media_type="application/yaml")
        return JSONResponse(document)

    @router.put(
        "/config",
        tags=["configuration"],
        response_model=ImportSummary,
        operation_id="import_config",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}, "application/yaml": {}},
            }
        },
        responses={422: {"description": "every problem, keyed by its document path; nothing changed"}},
    )
    async def import_config(request: Request, principal: Writer) -> ImportSummary:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "too_large", f"the document exceeds {MAX_BODY} bytes")
        is_yaml = "yaml" in request.headers.get("content-type", "")
        try:
            document = parse_document(raw, format="yaml" if is_yaml else "json")
        except ConfigSyntaxError as error:
            raise ApiError(400, "bad_document", str(error)) from None
        result = await editor_of(request).replace(principal.tenant, document)
        if not result.ok:
            fields: dict[str, str] = {}
            for problem in result.problems:
                add_field(fields, problem.path, problem.message)
            raise invalid(fields, "the configuration was not imported; nothing changed")
        await write_audit(
            context_of(request),
            principal.tenant,
            actor=principal.username,
            action="config.import",
            target="config",
            detail={"revision": result.revision, "changed": result.changed},
            source=client_address(request),
        )
        return ImportSummary(
            revision=result.revision,
            changed=result.changed,
            flows_published=result.flows_published,
            flows_retired=result.flows_retired,
        )

    @router.get("/password-policy", tags=["users"], response_model=PasswordPolicy, operation_id="get_policy")
    async def get_policy(request: Request, principal: Admin) -> PasswordPolicy:
        async with context_of(request).storage.tenant_session(principal.tenant) as session:
            return await load_policy(session)

    @router.put("/password-policy", tags=["users"], response_model=PasswordPolicy, operation_id="set_policy")
    async def set_policy(policy: PasswordPolicy, request: Request, principal: Admin) -> PasswordPolicy:
        async with context_of(request).storage.tenant_session(principal.tenant) as session:
            await save_policy(session, policy)
        await write_audit(
            context_of(request),
            principal.tenant,
            actor=principal.username,
            action="policy.update",
            target="password-policy",
            detail=policy.model_dump(mode="json"),
            source=client_address(request),
        )
        return policy


def config_router(book: SchemaBook) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for kind in KINDS:
        _kind_routes(router, book, kind)
    _flow_routes(router, book)
    _document_routes(router)
    return router


__all__ = ["KINDS", "ConfigKind", "Page", "PageQuery", "config_router", "page_of", "paged"]
