"""Creating tenants and giving them numbers.

    tenancy = TenancyService(storage)
    tenant = await tenancy.create_tenant("acme", "Acme Ltd", time_zone="Asia/Shanghai",
                                         concurrent_call_limit=30, seat_limit=20)
    await tenancy.assign_number("400-123-4567", "acme", "flow", "main")
    route = await tenancy.lookup_number("4001234567")   # NumberRoute(tenant="acme", target_type="flow", ...)

Creating a tenant makes its own database (SQLite file or PostgreSQL schema, migrated) and its row in the
platform database. A number belongs to one tenant at most (TEL-05): assigning a number another tenant
holds raises `NumberTaken`. Numbers are stored in one canonical form, so "400-123-4567", "4001234567" and
"+86 400 123 4567" are the same number: E.164 when the number is valid for the default region (or carries
a country code), else its digits (short codes, extensions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hotline.storage.engines import Storage, validate_tenant_id
from hotline.tenancy.models import (
    TARGET_TYPES,
    TENANT_STATUSES,
    NumberKind,
    NumberRecord,
    TargetType,
    TenantRecord,
    TenantStatus,
)


class TenancyError(ValueError):
    """A request the platform refuses, with a sentence saying why."""


class TenantExists(TenancyError):
    pass


class TenantNotFound(TenancyError, LookupError):
    pass


class NumberTaken(TenancyError):
    pass


class NumberNotFound(TenancyError, LookupError):
    pass


class InvalidNumber(TenancyError):
    pass


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    time_zone: str
    status: TenantStatus
    concurrent_call_limit: int
    seat_limit: int
    created_at: datetime


@dataclass(frozen=True)
class NumberRoute:
    """Where calls to a number go: the owning tenant and its entry target."""

    number: str
    kind: NumberKind
    tenant: str
    target_type: TargetType
    target: str


_SEPARATORS = re.compile(r"[\s\-().]")
_DIGITS = re.compile(r"^\+?[0-9]{2,20}$")


def normalize_number(raw: str, default_region: str = "CN") -> tuple[str, NumberKind]:
    """The canonical form of a dialled or configured number and its kind; raises InvalidNumber."""
    text = _SEPARATORS.sub("", raw or "")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _DIGITS.fullmatch(text):
        raise InvalidNumber(f"{raw!r} is not a phone number: use digits, optionally starting with +")
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and phonenumbers.is_valid_number(parsed):
        canonical = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        national = phonenumbers.national_significant_number(parsed)
        if parsed.country_code == 86 and national[:3] in ("400", "800"):
            return canonical, "400"
        number_type = phonenumbers.number_type(parsed)
        if number_type in (phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.SHARED_COST):
            return canonical, "400"
        return canonical, "e164"
    if text.startswith("+"):
        raise InvalidNumber(f"{raw!r} is not a valid international number")
    # Short codes, extensions and numbers the carrier presents in a private plan: keep the digits.
    return text, ("short" if len(text) <= 6 else "did")


def _tenant(record: TenantRecord) -> Tenant:
    return Tenant(
        id=record.id,
        name=record.name,
        time_zone=record.time_zone,
        status=record.status,  # type: ignore[arg-type]
        concurrent_call_limit=record.concurrent_call_limit,
        seat_limit=record.seat_limit,
        created_at=record.created_at,
    )


def _route(record: NumberRecord) -> NumberRoute:
    return NumberRoute(
        number=record.number,
        kind=record.kind,  # type: ignore[arg-type]
        tenant=record.tenant_id,
        target_type=record.target_type,  # type: ignore[arg-type]
        target=record.target,
    )


class TenancyService:
    def __init__(self, storage: Storage, *, default_region: str = "CN") -> None:
        self.storage = storage
        self.default_region = default_region

    # ------------------------------------------------------------------------------------ tenants

    async def create_tenant(
        self,
        tenant_id: str,
        name: str,
        *,
        time_zone: str = "Asia/Shanghai",
        concurrent_call_limit: int = 10,
        seat_limit: int = 10,
    ) -> Tenant:
        """Create the tenant's database and platform row. Raises TenantExists or TenancyError."""
        try:
            validate_tenant_id(tenant_id)
        except ValueError as error:
            raise TenancyError(str(error)) from None
        name = name.strip()
        if not name or len(name) > 200:
            raise TenancyError("tenant name must be 1-200 characters")
        _check_time_zone(time_zone)
        _check_limit("concurrent call limit", concurrent_call_limit)
        _check_limit("seat limit", seat_limit)
        if await self.get_tenant(tenant_id) is not None:
            raise TenantExists(f"tenant {tenant_id!r} already exists")
        # The database first: a platform row never points at a tenant without one.
        await self.storage.create_tenant_database(tenant_id)
        now = datetime.now(UTC)
        record = TenantRecord(
            id=tenant_id,
            name=name,
            time_zone=time_zone,
            status="active",
            concurrent_call_limit=concurrent_call_limit,
            seat_limit=seat_limit,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.storage.platform_session() as session:
                session.add(record)
        except IntegrityError:
            raise TenantExists(f"tenant {tenant_id!r} already exists") from None
        return _tenant(record)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self.storage.platform_session() as session:
            record = await session.get(TenantRecord, tenant_id)
            return _tenant(record) if record is not None else None

    async def list_tenants(self) -> list[Tenant]:
        async with self.storage.platform_session() as session:
            records = await session.scalars(select(TenantRecord).order_by(TenantRecord.id))
            return [_tenant(record) for record in records]

    async def set_status(self, tenant_id: str, status: TenantStatus) -> Tenant:
        if status not in TENANT_STATUSES:
            raise TenancyError(f"tenant status must be one of {', '.join(TENANT_STATUSES)}")
        return await self._update_tenant(tenant_id, status=status)

    async def set_licence(self, tenant_id: str, *, concurrent_call_limit: int, seat_limit: int) -> Tenant:
        """TEN-03: seats and concurrent calls change at once, without a restart."""
        _check_limit("concurrent call limit", concurrent_call_limit)
        _check_limit("seat limit", seat_limit)
        return await self._update_tenant(
            tenant_id, concurrent_call_limit=concurrent_call_limit, seat_limit=seat_limit
        )

    async def _update_tenant(self, tenant_id: str, **changes: object) -> Tenant:
        async with self.storage.platform_session() as session:
            record = await session.get(TenantRecord, tenant_id)
            if record is None:
                raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
            for field, value in changes.items():
                setattr(record, field, value)
            record.updated_at = datetime.now(UTC)
            return _tenant(record)

    # ------------------------------------------------------------------------------------ numbers

    async def assign_number(
        self, number: str, tenant_id: str, target_type: TargetType, target: str
    ) -> NumberRoute:
        """Give `number` to `tenant_id`, routed to a flow, queue, extension or forward (TEL-05).

        Re-assigning a number the tenant already holds changes its target; a number held by another
        tenant raises NumberTaken.
        """
        canonical, kind = normalize_number(number, self.default_region)
        if target_type not in TARGET_TYPES:
            raise TenancyError(f"number target must be one of {', '.join(TARGET_TYPES)}")
        target = target.strip()
        if not target or len(target) > 128:
            raise TenancyError("number target must be 1-128 characters")
        try:
            async with self.storage.platform_session() as session:
                tenant = await session.get(TenantRecord, tenant_id)
                if tenant is None:
                    raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
                if tenant.status == "closed":
                    raise TenancyError(f"tenant {tenant_id!r} is closed and cannot take numbers")
                record = await session.get(NumberRecord, canonical, with_for_update=True)
                if record is not None and record.tenant_id != tenant_id:
                    raise NumberTaken(f"number {canonical} is already assigned to another tenant")
                if record is None:
                    record = NumberRecord(
                        number=canonical,
                        kind=kind,
                        tenant_id=tenant_id,
                        target_type=target_type,
                        target=target,
                        created_at=datetime.now(UTC),
                    )
                    session.add(record)
                else:
                    record.target_type = target_type
                    record.target = target
                route = _route(record)
        except IntegrityError:
            # Another request assigned it between our read and our insert.
            raise NumberTaken(f"number {canonical} is already assigned") from None
        return route

    async def release_number(self, number: str, tenant_id: str) -> None:
        canonical, _kind = normalize_number(number, self.default_region)
        async with self.storage.platform_session() as session:
            record = await session.get(NumberRecord, canonical)
            if record is None or record.tenant_id != tenant_id:
                raise NumberNotFound(f"tenant {tenant_id!r} holds no number {canonical}")
            await session.delete(record)

    async def numbers_of(self, tenant_id: str) -> list[NumberRoute]:
        async with self.storage.platform_session() as session:
            records = await session.scalars(
                select(NumberRecord).where(NumberRecord.tenant_id == tenant_id).order_by(NumberRecord.number)
            )
            return [_route(record) for record in records]

    async def lookup_number(self, dnis: str) -> NumberRoute | None:
        """The tenant and target for a called number; None if unknown, unparseable or its tenant is not
        active (the switch then refuses the call)."""
        try:
            canonical, _kind = normalize_number(dnis, self.default_region)
        except InvalidNumber:
            return None
        async with self.storage.platform_session() as session:
            found = await session.execute(
                select(NumberRecord, TenantRecord.status)
                .join(TenantRecord, TenantRecord.id == NumberRecord.tenant_id)
                .where(NumberRecord.number == canonical)
            )
            row = found.first()
        if row is None or row[1] != "active":
            return None
        return _route(row[0])


def _check_time_zone(time_zone: str) -> None:
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise TenancyError(
            f"unknown time zone {time_zone!r}; use an IANA name such as Asia/Shanghai"
        ) from None


def _check_limit(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000:
        raise TenancyError(f"{what} must be a whole number from 0 to 100000")
