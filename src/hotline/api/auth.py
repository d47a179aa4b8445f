"""Sign-in, sessions and request authentication (TEN-01, TEN-09, TEN-10, AGT-02).

Routes (docs/cti.md): ``POST /api/v1/session`` (sign in; sets the HTTP-only cookie ``hotline_session``),
``GET /api/v1/session``, ``DELETE /api/v1/session``, ``PUT /api/v1/session/password``.

Dependencies: `current_principal` (cookie, or ``Authorization: Bearer <api key>``; 401 otherwise) and
`require(permission)` (403 without it). The credential names its tenant; only that tenant's database is
opened to check it, and the principal carries that tenant, so every route works on exactly one tenant's
data (principle 6).

A cookie-authenticated request that changes something must come from our own origin (an ``Origin``
header naming another host is refused), so another site cannot act with a signed-in user's cookie.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, cast
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from hotline.acd.config import hash_password
from hotline.api.config_edit import ConfigEditor
from hotline.api.context import ApiContext
from hotline.api.errors import ApiError, invalid
from hotline.storage.engines import InvalidTenantId, UnknownTenant, validate_tenant_id
from hotline.tenancy import audit
from hotline.tenancy.users import (
    AccountLocked,
    BadCredentials,
    DataScope,
    Permission,
    Principal,
    Role,
    authenticate,
    create_session,
    end_session,
    load_policy,
    password_problems,
    principal_for_api_key,
    principal_for_session,
    set_password_hash,
)

COOKIE_NAME: Final = "hotline_session"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def context_of(connection: HTTPConnection) -> ApiContext:
    return cast(ApiContext, connection.app.state.context)


def editor_of(connection: HTTPConnection) -> ConfigEditor:
    return cast(ConfigEditor, connection.app.state.editor)


def client_address(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


def split_cookie(value: str) -> tuple[str, str] | None:
    tenant, _, token = value.partition(".")
    if not token:
        return None
    try:
        return validate_tenant_id(tenant), token
    except ValueError:
        return None


def same_origin(connection: HTTPConnection) -> bool:
    """True unless the request says it comes from a page of another host."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    host = connection.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


async def principal_of(connection: HTTPConnection, *, token: str | None = None) -> Principal | None:
    """Who sent this request or WebSocket: an API key (Authorization header or `token`) or the cookie."""
    context = context_of(connection)
    authorization = connection.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    principal: Principal | None = None
    if scheme.lower() == "bearer" and credentials.strip():
        principal = await principal_for_api_key(context.storage, credentials.strip())
    elif token:
        principal = await principal_for_api_key(context.storage, token)
    else:
        cookie = connection.cookies.get(COOKIE_NAME)
        parsed = split_cookie(cookie) if cookie else None
        if parsed is not None:
            principal = await principal_for_session(context.storage, parsed[0], parsed[1])
    if principal is not None and context.directory is not None:
        info = context.directory.tenant_info(principal.tenant)
        if info is not None and info.status != "active":
            return None
    return principal


async def current_principal(request: Request) -> Principal:
    principal = await principal_of(request)
    if principal is None:
        raise ApiError(401, "not_signed_in", "sign in first (session cookie or API key)")
    if principal.kind == "session" and request.method not in SAFE_METHODS and not same_origin(request):
        raise ApiError(403, "cross_origin", "this change must come from the Hotline web application itself")
    return principal


def require(permission: Permission, *alternatives: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting principals holding `permission` (or one of the `alternatives`)."""
    accepted = (permission, *alternatives)

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not any(principal.can(name) for name in accepted):
            raise ApiError(403, "forbidden", f"this needs the permission {' or '.join(accepted)}")
        return principal

    return dependency


Authenticated = Annotated[Principal, Depends(current_principal)]


async def write_audit(
    context: ApiContext,
    tenant: str,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    source: str | None = None,
) -> None:
    try:
        async with context.storage.tenant_session(tenant) as session:
            await audit.record(
                session, actor=actor, action=action, target=target, detail=detail, source=source
            )
    except (UnknownTenant, InvalidTenantId):
        return  # a sign-in attempt naming no tenant of ours has nowhere to be recorded


# --- the session resource -----------------------------------------------------------------------------------


class SignIn(BaseModel):
    tenant: str = Field(min_length=1, max_length=64)
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024, repr=False)


class SessionUser(BaseModel):
    username: str
    display_name: str
    roles: list[Role]
    agent_id: str | None
    permissions: list[Permission]
    data_scope: DataScope
    department: str | None
    # The password is older than the tenant's policy allows (TEN-09): the UI asks for a new one.
    must_change_password: bool


class SessionTenant(BaseModel):
    id: str
    name: str


class SessionInfo(BaseModel):
    user: SessionUser
    tenant: SessionTenant


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024, repr=False)
    new_password: str = Field(min_length=1, max_length=128, repr=False)


async def session_info(context: ApiContext, principal: Principal) -> SessionInfo:
    tenant = await context.tenancy.get_tenant(principal.tenant)
    return SessionInfo(
        user=SessionUser(
            username=principal.username,
            display_name=principal.display_name,
            roles=list(principal.roles),
            agent_id=principal.agent_id,
            permissions=sorted(principal.permissions),
            data_scope=principal.data_scope,
            department=principal.department,
            must_change_password=principal.must_change_password,
        ),
        tenant=SessionTenant(id=principal.tenant, name=tenant.name if tenant else principal.tenant),
    )


router = APIRouter(prefix="/api/v1", tags=["session"])

_BAD = "unknown tenant, username or password"


@router.post(
    "/session",
    response_model=SessionInfo,
    responses={401: {"description": "wrong credentials"}, 423: {"description": "locked after failures"}},
)
async def sign_in(body: SignIn, request: Request, response: Response) -> SessionInfo:
    context = context_of(request)
    source = client_address(request)
    try:
        identity = await authenticate(context.storage, body.tenant, body.username, body.password)
    except AccountLocked as locked:
        await write_audit(
            context,
            body.tenant,
            actor=body.username,
            action="login.locked",
            target=body.username,
            source=source,
        )
        retry = max(1, int((locked.until - datetime.now(UTC)).total_seconds()))
        raise ApiError(423, "locked", str(locked), headers={"Retry-After": str(retry)}) from None
    except BadCredentials:
        await write_audit(
            context,
            body.tenant,
            actor=body.username,
            action="login.failed",
            target=body.username,
            source=source,
        )
        raise ApiError(401, "bad_credentials", _BAD) from None
    tenant = await context.tenancy.get_tenant(body.tenant)
    if tenant is None:
        raise ApiError(401, "bad_credentials", _BAD)
    if tenant.status != "active":
        raise ApiError(403, "tenant_inactive", f"tenant {tenant.id} is {tenant.status}")
    async with context.storage.tenant_session(tenant.id) as session:
        policy = await load_policy(session)
        await audit.record(
            session, actor=identity.username, action="login", target=identity.username, source=source
        )
    token = await create_session(context.storage, tenant.id, identity.username, policy)
    response.set_cookie(
        COOKIE_NAME,
        f"{tenant.id}.{token}",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return await session_info(context, identity.principal(tenant.id, policy))


@router.get("/session", response_model=SessionInfo, responses={401: {"description": "not signed in"}})
async def get_session(request: Request, principal: Authenticated) -> SessionInfo:
    return await session_info(context_of(request), principal)


@router.delete("/session", status_code=204, response_class=Response)
async def sign_out(request: Request, principal: Authenticated) -> Response:
    context = context_of(request)
    if principal.kind == "session":
        await end_session(context.storage, principal.tenant, principal.credential)
        await write_audit(
            context,
            principal.tenant,
            actor=principal.username,
            action="logout",
            target=principal.username,
            source=client_address(request),
        )
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
    return response


@router.put("/session/password", status_code=204, response_class=Response)
async def change_password(body: PasswordChange, request: Request, principal: Authenticated) -> Response:
    """Change one's own password (TEN-09): the current one is checked like a sign-in (and counts toward
    the lock), the new one against the tenant's password policy."""
    context = context_of(request)
    if principal.kind != "session":
        raise ApiError(403, "forbidden", "API keys have no password")
    try:
        identity = await authenticate(
            context.storage, principal.tenant, principal.username, body.current_password
        )
    except AccountLocked as locked:
        raise ApiError(423, "locked", str(locked)) from None
    except BadCredentials:
        raise invalid({"current_password": "this is not your current password"}) from None
    async with context.storage.tenant_session(principal.tenant) as session:
        policy = await load_policy(session)
    problems = password_problems(policy, body.new_password, principal.username)
    if problems:
        raise invalid({"new_password": "; ".join(problems)})
    if identity.source == "agent":
        config_problems = await editor_of(request).set_agent_password(
            principal.tenant, principal.username, body.new_password
        )
        if config_problems:
            raise invalid({"new_password": "; ".join(problem.message for problem in config_problems)})
    else:
        password_hash = await asyncio.to_thread(hash_password, body.new_password)
        async with context.storage.tenant_session(principal.tenant) as session:
            await set_password_hash(session, principal.username, password_hash)
    await write_audit(
        context,
        principal.tenant,
        actor=principal.username,
        action="password.change",
        target=principal.username,
        source=client_address(request),
    )
    return Response(status_code=204)
