"""Tenants and numbers in the platform database (TEN-01, TEN-03, TEL-05)."""

from __future__ import annotations

import asyncio

import pytest

from hotline.storage import Storage
from hotline.tenancy import (
    InvalidNumber,
    NumberNotFound,
    NumberRoute,
    NumberTaken,
    TenancyError,
    TenancyService,
    TenantExists,
    TenantNotFound,
    normalize_number,
)


@pytest.mark.parametrize(
    ("raw", "canonical", "kind"),
    [
        ("400-123-4567", "+864001234567", "400"),
        ("4001234567", "+864001234567", "400"),
        ("+86 400 123 4567", "+864001234567", "400"),
        ("0086 400 123 4567", "+864001234567", "400"),
        ("800 820 8820", "+868008208820", "400"),
        ("021-5123-4567", "+862151234567", "e164"),
        ("13800138000", "+8613800138000", "e164"),
        ("+1 (415) 555-2671", "+14155552671", "e164"),
        ("95588", "95588", "short"),
        ("8001", "8001", "short"),
    ],
)
def test_numbers_have_one_canonical_form(raw: str, canonical: str, kind: str) -> None:
    assert normalize_number(raw) == (canonical, kind)


@pytest.mark.parametrize("raw", ["", "abc", "+", "400-123-456x", "+999 1234", "1" * 30])
def test_what_is_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        normalize_number(raw)


async def test_creating_a_tenant_makes_its_database_and_row(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    tenant = await tenancy.create_tenant(
        "acme", " Acme Ltd ", time_zone="Asia/Shanghai", concurrent_call_limit=30, seat_limit=20
    )
    assert (tenant.id, tenant.name, tenant.status, tenant.time_zone) == (
        "acme",
        "Acme Ltd",
        "active",
        "Asia/Shanghai",
    )
    assert (tenant.concurrent_call_limit, tenant.seat_limit) == (30, 20)
    assert await storage.tenant_database_exists("acme")
    assert await tenancy.get_tenant("acme") == tenant
    assert await tenancy.get_tenant("beta") is None
    await tenancy.create_tenant("beta", "Beta")
    assert [t.id for t in await tenancy.list_tenants()] == ["acme", "beta"]
    assert await storage.tenant_databases() == ["acme", "beta"]

    with pytest.raises(TenantExists):
        await tenancy.create_tenant("acme", "Again")
    for bad_id in ("Acme", "a", "acme-ltd", "../x"):
        with pytest.raises(TenancyError, match="tenant id"):
            await tenancy.create_tenant(bad_id, "Bad")
    with pytest.raises(TenancyError, match="time zone"):
        await tenancy.create_tenant("gamma", "Gamma", time_zone="Mars/Olympus")
    with pytest.raises(TenancyError, match="concurrent call limit"):
        await tenancy.create_tenant("gamma", "Gamma", concurrent_call_limit=-1)
    with pytest.raises(TenancyError, match="name"):
        await tenancy.create_tenant("gamma", "   ")
    assert await tenancy.get_tenant("gamma") is None


async def test_licences_change_at_once(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme", concurrent_call_limit=10, seat_limit=5)
    changed = await tenancy.set_licence("acme", concurrent_call_limit=60, seat_limit=40)
    assert (changed.concurrent_call_limit, changed.seat_limit) == (60, 40)
    assert await tenancy.get_tenant("acme") == changed
    with pytest.raises(TenantNotFound):
        await tenancy.set_licence("nobody", concurrent_call_limit=1, seat_limit=1)


async def test_numbers_route_to_their_tenant_and_belong_to_one_only(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme")
    await tenancy.create_tenant("beta", "Beta")

    route = await tenancy.assign_number("400-123-4567", "acme", "flow", "main")
    assert route == NumberRoute("+864001234567", "400", "acme", "flow", "main")
    for dialled in ("4001234567", "+864001234567", "+86 400 123 4567"):
        assert await tenancy.lookup_number(dialled) == route

    with pytest.raises(NumberTaken):
        await tenancy.assign_number("+86 400 123 4567", "beta", "queue", "sales")
    assert (await tenancy.lookup_number("4001234567")) == route

    # The owner may re-point its number; the number stays one row.
    moved = await tenancy.assign_number("4001234567", "acme", "queue", "sales")
    assert (moved.target_type, moved.target) == ("queue", "sales")
    await tenancy.assign_number("95588", "beta", "extension", "8001")
    assert [n.number for n in await tenancy.numbers_of("acme")] == ["+864001234567"]
    assert [n.number for n in await tenancy.numbers_of("beta")] == ["95588"]

    assert await tenancy.lookup_number("4009999999") is None
    assert await tenancy.lookup_number("not a number") is None

    with pytest.raises(NumberNotFound):
        await tenancy.release_number("4001234567", "beta")
    await tenancy.release_number("4001234567", "acme")
    assert await tenancy.lookup_number("4001234567") is None
    taken_over = await tenancy.assign_number("4001234567", "beta", "flow", "beta_main")
    assert taken_over.tenant == "beta"


async def test_assignment_checks_its_input(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme")
    with pytest.raises(TenantNotFound):
        await tenancy.assign_number("4001234567", "nobody", "flow", "main")
    with pytest.raises(InvalidNumber):
        await tenancy.assign_number("call me", "acme", "flow", "main")
    with pytest.raises(TenancyError, match="target"):
        await tenancy.assign_number("4001234567", "acme", "voicemail", "main")  # type: ignore[arg-type]
    with pytest.raises(TenancyError, match="target"):
        await tenancy.assign_number("4001234567", "acme", "flow", "  ")
    assert await tenancy.numbers_of("acme") == []


async def test_two_tenants_racing_for_a_number_cannot_both_get_it(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme")
    await tenancy.create_tenant("beta", "Beta")
    for attempt in range(5):
        number = f"40012345{attempt}0"
        results = await asyncio.gather(
            tenancy.assign_number(number, "acme", "flow", "main"),
            tenancy.assign_number(number, "beta", "flow", "main"),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, NumberRoute)]
        losers = [r for r in results if isinstance(r, NumberTaken)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert await tenancy.lookup_number(number) == winners[0]


async def test_numbers_of_suspended_tenants_do_not_route(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme")
    route = await tenancy.assign_number("4001234567", "acme", "flow", "main")
    await tenancy.set_status("acme", "suspended")
    assert await tenancy.lookup_number("4001234567") is None
    await tenancy.set_status("acme", "active")
    assert await tenancy.lookup_number("4001234567") == route
    with pytest.raises(TenancyError):
        await tenancy.set_status("acme", "deleted")  # type: ignore[arg-type]
