"""Users, roles, permissions, data scopes, sign-in, sessions and API keys of a tenant (TEN-04..10, AGT-02).

Everything lives in the tenant's own database (tenant migration t0003), so a sign-in, a session or an API
key only ever opens its own tenant's data (principle 6, TEN-01):

- ``users``: username, display name, argon2id hash, roles, extra permissions, agent id (工号), department,
  data scope, enabled, when the password was last changed.
- ``login_throttle``: failed sign-ins per username and the lock (``PasswordPolicy.lockout_threshold``
  failures lock the name for ``lockout_minutes``).
- ``auth_sessions``: the SHA-256 of each session token (the token itself is only in the browser's cookie).
- ``api_keys``: the SHA-256 of each key, its roles, who made it, when it was last used or revoked.

Agents defined in the configuration document (``agents`` with a password) sign in with their agent id as
username and get the role ``agent`` (AGT-02); a user row of that name takes precedence.

Credentials carry their tenant in the clear (``<tenant>.<token>`` cookies, ``hk.<tenant>.<secret>`` keys):
the tenant part only says which database to look in; the secret is checked there.

    identity = await authenticate(storage, "demo", "8001", "s3cret99")        # BadCredentials / AccountLocked
    token = await create_session(storage, "demo", identity.username, policy)   # cookie value: f"demo.{token}"
    principal = await principal_for_session(storage, "demo", token)           # None when expired or revoked
    principal.can("config.write"); principal.data_scope                        # "all" | "department" | "self"

Roles (TEN-05): ``platform_admin`` (everything), ``tenant_admin``, ``supervisor``, ``team_leader``, ``qa``,
``agent``; :data:`ROLE_PERMISSIONS` maps each to its permissions, and a user may be granted more
(:data:`PERMISSIONS`, e.g. ``numbers.full`` to see full phone numbers, TEN-06). Data scopes (TEN-07):
``all`` (the tenant), ``department`` (own department), ``self`` (own records); by default the widest of
the user's roles' scopes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.acd.config import AGENT_ID_PATTERN, hash_password, verify_password
from hotline.events.ids import new_id
from hotline.storage.engines import Storage, UnknownTenant, validate_tenant_id
from hotline.storage.schema import TenantBase, UtcDateTime
from hotline.tenancy.config_store import config_objects_table

Role = Literal["platform_admin", "tenant_admin", "supervisor", "team_leader", "qa", "agent"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
Permission = Literal[
    "config.read",
    "config.write",
    "users.manage",
    "audit.read",
    "live.read",
    "agents.control",
    "monitor",
    "cdrs.read",
    "numbers.full",
    "recordings.listen",
    "export",
    "cti.agent",
]
PERMISSIONS: Final[tuple[Permission, ...]] = get_args(Permission)
DataScope = Literal["all", "department", "self"]
DATA_SCOPES: Final[tuple[DataScope, ...]] = get_args(DataScope)

_SUPERVISION: Final[frozenset[Permission]] = frozenset(
    {"config.read", "live.read", "agents.control", "monitor", "cdrs.read", "recordings.listen", "cti.agent"}
)
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    "platform_admin": frozenset(PERMISSIONS),
    "tenant_admin": frozenset(PERMISSIONS),
    "supervisor": _SUPERVISION | {"export"},
    "team_leader": _SUPERVISION,
    "qa": frozenset({"config.read", "cdrs.read", "recordings.listen"}),
    "agent": frozenset({"cti.agent", "cdrs.read"}),
}
ROLE_SCOPES: Final[dict[Role, DataScope]] = {
    "platform_admin": "all",
    "tenant_admin": "all",
    "supervisor": "all",
    "team_leader": "department",
    "qa": "all",
    "agent": "self",
}
ADMIN_ROLES: Final[frozenset[Role]] = frozenset({"platform_admin", "tenant_admin"})
USERNAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
SESSION_REFRESH: Final = timedelta(minutes=5)
POLICY_KIND: Final = "password_policy"
POLICY_KEY: Final = "default"

users_table = Table(
    "users",
    TenantBase.metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(512), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("permissions", JSON, nullable=False),
    Column("agent_id", String(32), nullable=True, unique=True),
    Column("department", String(64), nullable=True),
    Column("data_scope", String(16), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("password_changed_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_users_department", "department"),
)

login_throttle_table = Table(
    "login_throttle",
    TenantBase.metadata,
    Column("username", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", UtcDateTime(), nullable=True),
    Column("last_failure_at", UtcDateTime(), nullable=False),
)

auth_sessions_table = Table(
    "auth_sessions",
    TenantBase.metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Index("ix_auth_sessions_username", "username"),
)

api_keys_table = Table(
    "api_keys",
    TenantBase.metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("roles", JSON, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
)


def _now() -> datetime:
    return datetime.now(UTC)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# --- roles and scopes --------------------------------------------------------------------------------------


def permissions_of(roles: Iterable[Role], extra: Iterable[str] = ()) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    granted |= {name for name in extra if name in PERMISSIONS}
    return frozenset(granted)


def widest_scope(roles: Iterable[Role]) -> DataScope:
    scopes = {ROLE_SCOPES[role] for role in roles if role in ROLE_SCOPES}
    for scope in DATA_SCOPES:  # ordered widest first
        if scope in scopes:
            return scope
    return "self"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, an agent, or an API key, always of exactly one tenant."""

    tenant: str
    username: str
    display_name: str
    roles: tuple[Role, ...]
    permissions: frozenset[Permission]
    agent_id: str | None = None
    department: str | None = None
    data_scope: DataScope = "self"
    must_change_password: bool = False
    kind: Literal["session", "api_key"] = "session"
    # The session token's digest or the API key's id: what signing out or revoking removes.
    credential: str = ""

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def is_admin(self) -> bool:
        return bool(ADMIN_ROLES & set(self.roles))


# --- password policy (TEN-09) ------------------------------------------------------------------------------


class PasswordPolicy(BaseModel):
    """A tenant's password and sign-in rules; stored as configuration object ``password_policy``."""

    model_config = ConfigDict(extra="forbid")

    min_length: int = Field(default=7, ge=6, le=64)
    require_letters: bool = True
    require_digits: bool = True
    require_symbols: bool = False
    # Passwords older than this must be changed at the next sign-in (None: never).
    max_age_days: int | None = Field(default=90, ge=1, le=3650)
    lockout_threshold: int = Field(default=5, ge=1, le=100)
    lockout_minutes: int = Field(default=15, ge=1, le=1440)
    session_hours: float = Field(default=12.0, gt=0, le=720)


_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_SYMBOL = re.compile(r"[^\w\s]|_")


def password_problems(policy: PasswordPolicy, password: str, username: str | None = None) -> list[str]:
    """Why `password` breaks `policy` (empty when it is acceptable)."""
    problems = []
    if len(password) < policy.min_length:
        problems.append(f"password must have at least {policy.min_length} characters")
    if len(password) > 128:
        problems.append("password must have at most 128 characters")
    if policy.require_letters and not _LETTER.search(password):
        problems.append("password must contain a letter")
    if policy.require_digits and not _DIGIT.search(password):
        problems.append("password must contain a digit")
    if policy.require_symbols and not _SYMBOL.search(password):
        problems.append("password must contain a symbol")
    if username and password.casefold() == username.casefold():
        problems.append("password must not be the username")
    return problems


async def load_policy(session: AsyncSession) -> PasswordPolicy:
    document = await session.scalar(
        select(config_objects_table.c.document).where(
            config_objects_table.c.kind == POLICY_KIND, config_objects_table.c.key == POLICY_KEY
        )
    )
    if document is None:
        return PasswordPolicy()
    try:
        return PasswordPolicy.model_validate(document)
    except ValidationError:
        return PasswordPolicy()


async def save_policy(session: AsyncSession, policy: PasswordPolicy) -> None:
    document = policy.model_dump(mode="json")
    updated = await session.execute(
        update(config_objects_table)
        .where(config_objects_table.c.kind == POLICY_KIND, config_objects_table.c.key == POLICY_KEY)
        .values(document=document, updated_at=_now())
    )
    if getattr(updated, "rowcount", 0) == 0:
        await session.execute(
            insert(config_objects_table).values(
                kind=POLICY_KIND, key=POLICY_KEY, document=document, updated_at=_now()
            )
        )


# --- users -------------------------------------------------------------------------------------------------


class UserFields(BaseModel):
    """What an administrator sets on a user (everything but the username and the password)."""

    model_config = ConfigDict(extra="forbid")

    display_name: str = Field(default="", max_length=200)
    roles: list[Role] = Field(min_length=1, max_length=len(ROLES))
    # Granted on top of the roles' own (TEN-06), e.g. numbers.full.
    permissions: list[Permission] = Field(default_factory=list, max_length=len(PERMISSIONS))
    agent_id: str | None = Field(default=None, pattern=AGENT_ID_PATTERN)
    department: str | None = Field(default=None, min_length=1, max_length=64)
    # None: the widest scope of the roles.
    data_scope: DataScope | None = None
    enabled: bool = True

    @field_validator("roles", "permissions")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an entry is listed twice")
        return value


class UserCreate(UserFields):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=1, max_length=128, repr=False)


class UserUpdate(UserFields):
    """A PUT: the whole user; ``password`` only when it changes."""

    username: str | None = Field(default=None, pattern=USERNAME_PATTERN)
    password: str | None = Field(default=None, min_length=1, max_length=128, repr=False)


class User(BaseModel):
    username: str
    display_name: str
    roles: list[Role]
    permissions: list[Permission]
    agent_id: str | None
    department: str | None
    data_scope: DataScope | None
    enabled: bool
    password_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class UserError(ValueError):
    """A user change the tenant refuses; ``field`` names the offending field, ``status`` the HTTP kind."""

    def __init__(self, message: str, *, field: str = "", code: str = "invalid", status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.status = status


_USER_COLUMNS = [column for column in users_table.c if column.name != "password_hash"]


def _user(row: Any) -> User:
    return User.model_validate(dict(row))


async def get_user(session: AsyncSession, username: str) -> User | None:
    row = (await session.execute(select(*_USER_COLUMNS).where(users_table.c.username == username))).first()
    return _user(row._mapping) if row is not None else None


async def list_users(session: AsyncSession, *, offset: int = 0, limit: int = 50) -> tuple[list[User], int]:
    total = int(await session.scalar(select(func.count()).select_from(users_table)) or 0)
    rows = await session.execute(
        select(*_USER_COLUMNS).order_by(users_table.c.username).offset(offset).limit(limit)
    )
    return [_user(row) for row in rows.mappings()], total


async def _check_agent_link(session: AsyncSession, fields: UserFields, username: str) -> None:
    if fields.agent_id is None:
        return
    exists = await session.scalar(
        select(config_objects_table.c.key).where(
            config_objects_table.c.kind == "agent", config_objects_table.c.key == fields.agent_id
        )
    )
    if exists is None:
        raise UserError(f"no agent {fields.agent_id!r} in the configuration", field="agent_id")
    holder = await session.scalar(
        select(users_table.c.username).where(
            users_table.c.agent_id == fields.agent_id, users_table.c.username != username
        )
    )
    if holder is not None:
        raise UserError(f"agent {fields.agent_id} is already user {holder}'s", field="agent_id", status=409)


def _check_password(policy: PasswordPolicy, password: str, username: str) -> None:
    problems = password_problems(policy, password, username)
    if problems:
        raise UserError("; ".join(problems), field="password")


async def create_user(session: AsyncSession, user: UserCreate, password_hash: str | None = None) -> User:
    """Add a user; raises UserError (409 when the name is taken). `password_hash` may be given when the
    caller hashed ``user.password`` off the event loop already."""
    policy = await load_policy(session)
    _check_password(policy, user.password, user.username)
    if await get_user(session, user.username) is not None:
        raise UserError(f"user {user.username!r} exists", field="username", code="exists", status=409)
    await _check_agent_link(session, user, user.username)
    now = _now()
    await session.execute(
        insert(users_table).values(
            username=user.username,
            password_hash=password_hash or await asyncio.to_thread(hash_password, user.password),
            password_changed_at=now,
            created_at=now,
            updated_at=now,
            **user.model_dump(include=set(UserFields.model_fields)),
        )
    )
    created = await get_user(session, user.username)
    assert created is not None
    return created


async def update_user(
    session: AsyncSession, username: str, change: UserUpdate, password_hash: str | None = None
) -> User:
    existing = await get_user(session, username)
    if existing is None:
        raise UserError(f"no user {username!r}", code="not_found", status=404)
    if change.username is not None and change.username != username:
        raise UserError("the username cannot change; it must match the URL", field="username")
    await _check_agent_link(session, change, username)
    values: dict[str, Any] = change.model_dump(include=set(UserFields.model_fields))
    values["updated_at"] = _now()
    if change.password is not None:
        _check_password(await load_policy(session), change.password, username)
        values["password_hash"] = password_hash or await asyncio.to_thread(hash_password, change.password)
        values["password_changed_at"] = values["updated_at"]
    await session.execute(update(users_table).where(users_table.c.username == username).values(**values))
    updated = await get_user(session, username)
    assert updated is not None
    return updated


async def delete_user(session: AsyncSession, username: str) -> None:
    deleted = await session.execute(delete(users_table).where(users_table.c.username == username))
    if getattr(deleted, "rowcount", 0) == 0:
        raise UserError(f"no user {username!r}", code="not_found", status=404)
    await session.execute(delete(auth_sessions_table).where(auth_sessions_table.c.username == username))


async def enabled_admins(session: AsyncSession) -> list[str]:
    rows = await session.execute(
        select(users_table.c.username, users_table.c.roles).where(users_table.c.enabled.is_(True))
    )
    return [name for name, roles in rows if ADMIN_ROLES & set(roles or [])]


async def set_password_hash(session: AsyncSession, username: str, password_hash: str) -> None:
    now = _now()
    await session.execute(
        update(users_table)
        .where(users_table.c.username == username)
        .values(password_hash=password_hash, password_changed_at=now, updated_at=now)
    )


async def agents_of_department(session: AsyncSession, department: str) -> set[str]:
    rows = await session.scalars(
        select(users_table.c.agent_id).where(
            users_table.c.department == department, users_table.c.agent_id.is_not(None)
        )
    )
    return {agent_id for agent_id in rows if agent_id}


async def agents_in_scope(session: AsyncSession, principal: Principal) -> set[str] | None:
    """The agent ids whose records `principal` may see (TEN-07); None for the whole tenant."""
    if principal.data_scope == "all":
        return None
    own = {principal.agent_id} if principal.agent_id else set()
    if principal.data_scope == "department" and principal.department:
        return own | await agents_of_department(session, principal.department)
    return own


# --- sign-in -----------------------------------------------------------------------------------------------


class SignInError(Exception):
    code = "bad_credentials"


class BadCredentials(SignInError):
    pass


class AccountLocked(SignInError):
    code = "locked"

    def __init__(self, until: datetime) -> None:
        super().__init__(f"too many failed sign-ins; try again after {until.isoformat(timespec='seconds')}")
        self.until = until


@dataclass(frozen=True)
class Identity:
    """A user or configured agent as stored; becomes a Principal when a credential is checked."""

    username: str
    display_name: str
    roles: tuple[Role, ...]
    extra_permissions: tuple[str, ...] = ()
    agent_id: str | None = None
    department: str | None = None
    data_scope: DataScope | None = None
    password_changed_at: datetime | None = None
    enabled: bool = True
    password_hash: str | None = field(default=None, repr=False)
    # "user": a users row; "agent": an agent of the configuration document.
    source: Literal["user", "agent"] = "user"

    def principal(
        self,
        tenant: str,
        policy: PasswordPolicy,
        *,
        kind: Literal["session", "api_key"] = "session",
        credential: str = "",
        now: datetime | None = None,
    ) -> Principal:
        expired = False
        if policy.max_age_days is not None and self.password_changed_at is not None:
            age = (now or _now()) - self.password_changed_at
            expired = age > timedelta(days=policy.max_age_days)
        return Principal(
            tenant=tenant,
            username=self.username,
            display_name=self.display_name,
            roles=self.roles,
            permissions=permissions_of(self.roles, self.extra_permissions),
            agent_id=self.agent_id,
            department=self.department,
            data_scope=self.data_scope or widest_scope(self.roles),
            must_change_password=expired,
            kind=kind,
            credential=credential,
        )


async def load_identity(session: AsyncSession, username: str) -> Identity | None:
    """The user row named `username`, else the configured agent with that id; None if neither (or the
    agent has no password)."""
    row = (await session.execute(select(users_table).where(users_table.c.username == username))).first()
    if row is not None:
        data = row._mapping
        return Identity(
            username=data["username"],
            display_name=data["display_name"],
            roles=tuple(role for role in data["roles"] if role in ROLES),
            extra_permissions=tuple(data["permissions"] or ()),
            agent_id=data["agent_id"],
            department=data["department"],
            data_scope=data["data_scope"] if data["data_scope"] in DATA_SCOPES else None,
            password_changed_at=data["password_changed_at"],
            enabled=bool(data["enabled"]),
            password_hash=data["password_hash"],
        )
    agent = await session.scalar(
        select(config_objects_table.c.document).where(
            config_objects_table.c.kind == "agent", config_objects_table.c.key == username
        )
    )
    if not isinstance(agent, dict) or not agent.get("password_hash"):
        return None
    return Identity(
        username=username,
        display_name=str(agent.get("name") or username),
        roles=("agent",),
        agent_id=username,
        enabled=bool(agent.get("enabled", True)),
        password_hash=str(agent["password_hash"]),
        source="agent",
    )


_dummy_hash: list[str] = []


def _verify(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        # Unknown names cost as much as known ones, so timing does not tell which names exist.
        if not _dummy_hash:
            _dummy_hash.append(hash_password(secrets.token_urlsafe(16)))
        verify_password(_dummy_hash[0], password)
        return False
    return verify_password(password_hash, password)


async def _register_failure(
    session: AsyncSession, username: str, policy: PasswordPolicy, now: datetime
) -> datetime | None:
    """Count a failed sign-in; returns the lock's end when this failure locks the name."""
    updated = await session.execute(
        update(login_throttle_table)
        .where(login_throttle_table.c.username == username)
        .values(failures=login_throttle_table.c.failures + 1, last_failure_at=now)
    )
    if getattr(updated, "rowcount", 0) == 0:
        await session.execute(
            insert(login_throttle_table).values(
                username=username, failures=1, locked_until=None, last_failure_at=now
            )
        )
    failures = int(
        await session.scalar(
            select(login_throttle_table.c.failures).where(login_throttle_table.c.username == username)
        )
        or 0
    )
    if failures < policy.lockout_threshold:
        return None
    until = now + timedelta(minutes=policy.lockout_minutes)
    # The count starts again once the lock ends.
    await session.execute(
        update(login_throttle_table)
        .where(login_throttle_table.c.username == username)
        .values(failures=0, locked_until=until)
    )
    return until


async def authenticate(
    storage: Storage, tenant: str, username: str, password: str, *, now: datetime | None = None
) -> Identity:
    """Check a username and password in `tenant`'s database. Raises BadCredentials or AccountLocked
    (also for the right password while the name is locked); UnknownTenant is reported as BadCredentials."""
    now = now or _now()
    try:
        validate_tenant_id(tenant)
    except ValueError:
        raise BadCredentials("unknown tenant, username or password") from None
    if not re.fullmatch(USERNAME_PATTERN, username) or len(password) > 1024:
        _verify(None, password[:1024])
        raise BadCredentials("unknown tenant, username or password")
    try:
        async with storage.tenant_session(tenant) as session:
            policy = await load_policy(session)
            locked_until = await session.scalar(
                select(login_throttle_table.c.locked_until).where(login_throttle_table.c.username == username)
            )
            identity = await load_identity(session, username)
    except UnknownTenant:
        await asyncio.to_thread(_verify, None, password)
        raise BadCredentials("unknown tenant, username or password") from None
    if locked_until is not None and locked_until > now:
        raise AccountLocked(locked_until)
    usable = identity is not None and identity.enabled and bool(identity.roles)
    valid = await asyncio.to_thread(_verify, identity.password_hash if identity else None, password)
    if valid and usable:
        assert identity is not None
        async with storage.tenant_session(tenant) as session:
            await session.execute(
                delete(login_throttle_table).where(login_throttle_table.c.username == username)
            )
        return identity
    for attempt in range(2):
        try:
            async with storage.tenant_session(tenant) as session:
                until = await _register_failure(session, username, policy, now)
            break
        except IntegrityError:  # two first failures at once inserted the same row: count again
            if attempt:
                raise
    if until is not None:
        raise AccountLocked(until)
    raise BadCredentials("unknown tenant, username or password")


# --- sessions ----------------------------------------------------------------------------------------------


async def create_session(storage: Storage, tenant: str, username: str, policy: PasswordPolicy) -> str:
    """A new session for `username`; returns the token (only its digest is stored)."""
    token = secrets.token_urlsafe(32)
    now = _now()
    async with storage.tenant_session(tenant) as session:
        await session.execute(
            insert(auth_sessions_table).values(
                token_hash=token_digest(token),
                username=username,
                created_at=now,
                expires_at=now + timedelta(hours=policy.session_hours),
                last_seen_at=now,
            )
        )
        # Expired sessions of this user are removed as new ones are made (no sweeper task needed).
        await session.execute(
            delete(auth_sessions_table).where(
                auth_sessions_table.c.username == username, auth_sessions_table.c.expires_at < now
            )
        )
    return token


async def principal_for_session(
    storage: Storage, tenant: str, token: str, *, now: datetime | None = None
) -> Principal | None:
    """The principal of a live session in `tenant`'s database, or None (unknown, expired, user gone or
    disabled, tenant without a database). Sliding expiry: use renews the session."""
    now = now or _now()
    digest = token_digest(token)
    try:
        async with storage.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    select(auth_sessions_table).where(auth_sessions_table.c.token_hash == digest)
                )
            ).first()
            if row is None or row.expires_at <= now:
                return None
            identity = await load_identity(session, row.username)
            if identity is None or not identity.enabled or not identity.roles:
                return None
            policy = await load_policy(session)
            if now - row.last_seen_at > SESSION_REFRESH:
                await session.execute(
                    update(auth_sessions_table)
                    .where(auth_sessions_table.c.token_hash == digest)
                    .values(last_seen_at=now, expires_at=now + timedelta(hours=policy.session_hours))
                )
    except UnknownTenant:
        return None
    return identity.principal(tenant, policy, credential=digest, now=now)


async def end_session(storage: Storage, tenant: str, token_hash: str) -> None:
    async with storage.tenant_session(tenant) as session:
        await session.execute(
            delete(auth_sessions_table).where(auth_sessions_table.c.token_hash == token_hash)
        )


# --- API keys ----------------------------------------------------------------------------------------------

API_KEY_PREFIX: Final = "hk"


class ApiKey(BaseModel):
    id: str
    name: str
    roles: list[Role]
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def split_api_key(key: str) -> tuple[str, str] | None:
    """(tenant, secret) of a key written ``hk.<tenant>.<secret>``, or None when it is not one."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[2]:
        return None
    try:
        return validate_tenant_id(parts[1]), parts[2]
    except ValueError:
        return None


async def create_api_key(
    session: AsyncSession, tenant: str, name: str, roles: Sequence[Role], created_by: str
) -> tuple[ApiKey, str]:
    """A new key; returns it with the key text, which is shown once and stored only as a digest."""
    secret = secrets.token_urlsafe(32)
    key = f"{API_KEY_PREFIX}.{tenant}.{secret}"
    record = ApiKey(
        id=new_id(),
        name=name,
        roles=list(roles),
        created_by=created_by,
        created_at=_now(),
        last_used_at=None,
        revoked_at=None,
    )
    await session.execute(insert(api_keys_table).values(key_hash=token_digest(secret), **record.model_dump()))
    return record, key


async def list_api_keys(session: AsyncSession) -> list[ApiKey]:
    columns = [column for column in api_keys_table.c if column.name != "key_hash"]
    rows = await session.execute(select(*columns).order_by(api_keys_table.c.created_at))
    return [ApiKey.model_validate(dict(row)) for row in rows.mappings()]


async def revoke_api_key(session: AsyncSession, key_id: str) -> bool:
    updated = await session.execute(
        update(api_keys_table)
        .where(api_keys_table.c.id == key_id, api_keys_table.c.revoked_at.is_(None))
        .values(revoked_at=_now())
    )
    return bool(getattr(updated, "rowcount", 0))


async def principal_for_api_key(
    storage: Storage, key: str, *, now: datetime | None = None
) -> Principal | None:
    parsed = split_api_key(key)
    if parsed is None:
        return None
    tenant, secret = parsed
    now = now or _now()
    digest = token_digest(secret)
    try:
        async with storage.tenant_session(tenant) as session:
            row = (
                await session.execute(select(api_keys_table).where(api_keys_table.c.key_hash == digest))
            ).first()
            if row is None or row.revoked_at is not None:
                return None
            if row.last_used_at is None or now - row.last_used_at > SESSION_REFRESH:
                await session.execute(
                    update(api_keys_table).where(api_keys_table.c.id == row.id).values(last_used_at=now)
                )
    except UnknownTenant:
        return None
    roles = tuple(role for role in row.roles if role in ROLES)
    return Principal(
        tenant=tenant,
        username=f"apikey:{row.name}",
        display_name=row.name,
        roles=roles,
        permissions=permissions_of(roles),
        data_scope=widest_scope(roles),
        kind="api_key",
        credential=row.id,
    )
