"""Users and roles, API keys and the audit log (TEN-04/05/06/07/10, API-01).

    GET/POST /api/v1/users, GET/PUT/DELETE /api/v1/users/{username}   config.read to read, users.manage
    GET/POST /api/v1/api-keys, DELETE /api/v1/api-keys/{id}          users.manage (the key is shown once)
    GET /api/v1/audit?offset=&limit=&action=                         audit.read, newest first

Only a platform administrator grants ``platform_admin``; nobody removes their own account or admin
rights, and the last enabled administrator stays (409). A key gets no permission its creator lacks.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from hotline.acd.config import hash_password
from hotline.api.auth import client_address, context_of, require
from hotline.api.config_routes import PageQuery
from hotline.api.errors import ApiError, invalid
from hotline.tenancy import audit
from hotline.tenancy.users import (
    ADMIN_ROLES,
    ApiKey,
    Principal,
    Role,
    User,
    UserCreate,
    UserError,
    UserUpdate,
    create_api_key,
    create_user,
    delete_user,
    enabled_admins,
    get_user,
    list_api_keys,
    list_users,
    load_policy,
    password_problems,
    permissions_of,
    revoke_api_key,
    update_user,
)

Reader = Annotated[Principal, Depends(require("config.read"))]
Manager = Annotated[Principal, Depends(require("users.manage"))]
Auditor = Annotated[Principal, Depends(require("audit.read"))]


class UserPage(BaseModel):
    items: list[User]
    total: int


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    roles: list[Role] = Field(min_length=1, max_length=6)


class ApiKeyCreated(ApiKey):
    # Shown once: only its digest is stored.
    key: str


class ApiKeyPage(BaseModel):
    items: list[ApiKey]
    total: int


class AuditRow(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    source: str | None


class AuditPage(BaseModel):
    items: list[AuditRow]
    total: int


def _user_error(error: UserError) -> ApiError:
    if error.status == 422:
        return invalid({error.field: str(error)})
    return ApiError(error.status, error.code, str(error), {error.field: str(error)} if error.field else None)


def _check_grant(principal: Principal, roles: list[Role]) -> None:
    if "platform_admin" in roles and "platform_admin" not in principal.roles:
        raise ApiError(403, "forbidden", "only a platform administrator grants platform_admin")


async def _check_password(request: Request, tenant: str, username: str, password: str) -> str:
    """The new password's hash, once it meets the tenant's policy (hashed off the event loop)."""
    async with context_of(request).storage.tenant_session(tenant) as session:
        policy = await load_policy(session)
    problems = password_problems(policy, password, username)
    if problems:
        raise invalid({"password": "; ".join(problems)})
    return await asyncio.to_thread(hash_password, password)


router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/users", response_model=UserPage, operation_id="list_users")
async def users(request: Request, principal: Reader, page: PageQuery) -> UserPage:
    async with context_of(request).storage.tenant_session(principal.tenant) as session:
        items, total = await list_users(session, offset=page.offset, limit=page.limit)
    return UserPage(items=items, total=total)


@router.get("/users/{username}", response_model=User, operation_id="get_user")
async def user(username: str, request: Request, principal: Reader) -> User:
    async with context_of(request).storage.tenant_session(principal.tenant) as session:
        found = await get_user(session, username)
    if found is None:
        raise ApiError(404, "not_found", f"no user {username!r}")
    return found


@router.post("/users", status_code=201, response_model=User, operation_id="create_user")
async def add_user(body: UserCreate, request: Request, principal: Manager) -> User:
    _check_grant(principal, body.roles)
    password_hash = await _check_password(request, principal.tenant, body.username, body.password)
    try:
        async with context_of(request).storage.tenant_session(principal.tenant) as session:
            created = await create_user(session, body, password_hash)
            await audit.record(
                session,
                actor=principal.username,
                action="user.create",
                target=f"users/{body.username}",
                detail={"roles": list(body.roles), "permissions": list(body.permissions)},
                source=client_address(request),
            )
    except UserError as error:
        raise _user_error(error) from None
    return created


@router.put("/users/{username}", response_model=User, operation_id="replace_user")
async def change_user(username: str, body: UserUpdate, request: Request, principal: Manager) -> User:
    _check_grant(principal, body.roles)
    keeps_admin = body.enabled and bool(ADMIN_ROLES & set(body.roles))
    if username == principal.username and principal.is_admin and not keeps_admin:
        raise ApiError(409, "self", "you cannot disable yourself or take away your own admin role")
    password_hash = (
        await _check_password(request, principal.tenant, username, body.password) if body.password else None
    )
    try:
        async with context_of(request).storage.tenant_session(principal.tenant) as session:
            before = await get_user(session, username)
            if before is not None and "platform_admin" in before.roles:
                _check_grant(principal, ["platform_admin"])
            had_admins = bool(await enabled_admins(session))
            updated = await update_user(session, username, body, password_hash)
            if had_admins and not await enabled_admins(session):
                raise UserError(
                    "the tenant would have no enabled administrator", code="last_admin", status=409
                )
            await audit.record(
                session,
                actor=principal.username,
                action="user.update",
                target=f"users/{username}",
                detail={
                    "roles": list(body.roles),
                    "permissions": list(body.permissions),
                    "enabled": body.enabled,
                    "password_changed": body.password is not None,
                },
                source=client_address(request),
            )
    except UserError as error:
        raise _user_error(error) from None
    return updated


@router.delete("/users/{username}", status_code=204, response_class=Response, operation_id="delete_user")
async def remove_user(username: str, request: Request, principal: Manager) -> Response:
    if username == principal.username:
        raise ApiError(409, "self", "you cannot delete your own account")
    try:
        async with context_of(request).storage.tenant_session(principal.tenant) as session:
            before = await get_user(session, username)
            if before is not None and "platform_admin" in before.roles:
                _check_grant(principal, ["platform_admin"])
            had_admins = bool(await enabled_admins(session))
            await delete_user(session, username)
            if had_admins and not await enabled_admins(session):
                raise UserError(
                    "the tenant would have no enabled administrator", code="last_admin", status=409
                )
            await audit.record(
                session,
                actor=principal.username,
                action="user.delete",
                target=f"users/{username}",
                source=client_address(request),
            )
    except UserError as error:
        raise _user_error(error) from None
    return Response(status_code=204)


# --- API keys ------------------------------------------------------------------------------------------


@router.get("/api-keys", response_model=ApiKeyPage, operation_id="list_api_keys")
async def api_keys(request: Request, principal: Manager, page: PageQuery) -> ApiKeyPage:
    async with context_of(request).storage.tenant_session(principal.tenant) as session:
        keys = await list_api_keys(session)
    return ApiKeyPage(items=keys[page.offset : page.offset + page.limit], total=len(keys))


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated, operation_id="create_api_key")
async def add_api_key(body: ApiKeyCreate, request: Request, principal: Manager) -> ApiKeyCreated:
    if not permissions_of(body.roles) <= principal.permissions:
        raise ApiError(403, "forbidden", "a key cannot have permissions its creator lacks")
    async with context_of(request).storage.tenant_session(principal.tenant) as session:
        record, key = await create_api_key(
            session, principal.tenant, body.name, body.roles, principal.username
        )
        await audit.record(
            session,
            actor=principal.username,
            action="api_key.create",
            target=f"api-keys/{record.id}",
            detail={"name": body.name, "roles": list(body.roles)},
            source=client_address(request),
        )
    return ApiKeyCreated(key=key, **record.model_dump())


@router.delete("/api-keys/{key_id}", status_code=204, response_class=Response, operation_id="revoke_api_key")
async def remove_api_key(key_id: str, request: Request, principal: Manager) -> Response:
    async with context_of(request).storage.tenant_session(principal.tenant) as session:
        if not await revoke_api_key(session, key_id):
            raise ApiError(404, "not_found", f"no active API key {key_id!r}")
        await audit.record(
            session,
            actor=principal.username,
            action="api_key.revoke",
            target=f"api-keys/{key_id}",
            source=client_address(request),
        )
    return Response(status_code=204)


# --- the audit log -------------------------------------------------------------------------------------


@router.get("/audit", response_model=AuditPage, operation_id="list_audit", tags=["audit"])
async def audit_log(
    request: Request,
    principal: Auditor,
    page: PageQuery,
    action: Annotated[str | None, Query(max_length=64, description="only this action")] = None,
) -> AuditPage:
    async with context_of(request).storage.tenant_session(principal.tenant) as session:
        entries, total = await audit.list_entries(
            session, offset=page.offset, limit=page.limit, action=action
        )
    return AuditPage(items=[AuditRow.model_validate(entry.model_dump()) for entry in entries], total=total)


__all__ = ["router"]
