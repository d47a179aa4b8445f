"""The switch's directory: models, and lookups kept per tenant and current without a restart (FM-14)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hotline.ivr.schema import PlayNode
from hotline.sip.auth import compute_ha1
from hotline.storage import Storage
from hotline.switch.directory import (
    CallerIdRules,
    Directory,
    Extension,
    NumberEntry,
    NumberTarget,
    Trunk,
    normalize_domain,
)
from hotline.tenancy import TenancyService
from hotline.tenancy.config_document import import_tenant, set_sip_domain
from tests.storage.backends import open_storage

# --- models ------------------------------------------------------------------------------------------------


def test_extension_password_rules() -> None:
    extension = Extension.model_validate({"number": 1001, "password": "abc12345"})
    assert extension.number == "1001"
    assert "abc12345" not in repr(extension)
    secret = extension.digest_secret()
    assert secret.ha1_for("MD5", "1001", "hotline") == compute_ha1("MD5", "1001", "hotline", "abc12345")
    for password, message in [("abc1", "at least 8"), ("abcdefghij", "letters and digits")]:
        with pytest.raises(ValidationError, match=message):
            Extension.model_validate({"number": "1001", "password": password})
    with pytest.raises(ValidationError):
        Extension.model_validate({"number": "1", "password": "abc12345"})


def test_trunk_rules() -> None:
    with pytest.raises(ValidationError, match="username and password"):
        Trunk.model_validate({"name": "carrier", "kind": "register", "host": "sip.carrier.example"})
    with pytest.raises(ValidationError, match="allowed_sources"):
        Trunk.model_validate({"name": "carrier", "kind": "ip", "host": "sip.carrier.example"})
    with pytest.raises(ValidationError, match="host name or IP"):
        Trunk.model_validate({"name": "carrier", "kind": "ip", "host": "bad host!"})
    with pytest.raises(ValidationError):
        Trunk.model_validate(
            {"name": "c", "kind": "ip", "host": "10.0.0.1", "allowed_sources": ["10.0.0.1/8"]}
        )
    by_host = Trunk.model_validate({"name": "gw", "kind": "ip", "host": "192.0.2.7"})
    assert [str(net) for net in by_host.source_networks()] == ["192.0.2.7/32"]
    by_sources = Trunk.model_validate(
        {
            "name": "gw",
            "kind": "ip",
            "host": "sip.example",
            "allowed_sources": ["198.51.100.0/24", "2001:db8::1"],
        }
    )
    assert [str(net) for net in by_sources.source_networks()] == ["198.51.100.0/24", "2001:db8::1/128"]


def test_caller_id_rules() -> None:
    rules = CallerIdRules(default="4001234567", allowed=["02155501*", "13800138000"])
    assert rules.present("0215550123") == "0215550123"
    assert rules.present("13800138000") == "13800138000"
    assert rules.present("13900000000") == "4001234567"
    assert rules.present(None) == "4001234567"
    assert CallerIdRules().present("13900000000") == "13900000000"


def test_number_targets_and_entries() -> None:
    assert NumberTarget.model_validate("flow:main") == NumberTarget(kind="flow", ref="main")
    dumped: object = NumberTarget.model_validate("echo").model_dump()
    assert dumped == "echo"
    assert str(NumberTarget.model_validate("extension:1001")) == "extension:1001"
    for bad, message in [("flow", "names one"), ("echo:x", "takes no name"), ("forward:abc", "not a phone")]:
        with pytest.raises(ValidationError, match=message):
            NumberTarget.model_validate(bad)
    public = NumberEntry.model_validate({"number": "400-123-4567", "target": "queue:sales"})
    assert public.number == "+864001234567"
    internal = NumberEntry.model_validate({"number": "*97", "target": "echo", "public": False})
    assert internal.number == "*97"
    with pytest.raises(ValidationError, match="internal number"):
        NumberEntry.model_validate({"number": "12-34", "target": "echo", "public": False})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Acme.Example.COM", "acme.example.com"),
        ("acme.example.com:5060", "acme.example.com"),
        ("[2001:db8::1]:5060", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("acme.example.com.", "acme.example.com"),
    ],
)
def test_normalize_domain(given: str, expected: str) -> None:
    assert normalize_domain(given) == expected


# --- the directory -----------------------------------------------------------------------------------------


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened, _prefix = await open_storage("sqlite", tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def tenancy(storage: Storage) -> TenancyService:
    return TenancyService(storage)


def tts_flow(flow_id: str, text: str) -> dict[str, Any]:
    return {
        "id": flow_id,
        "entry": "hello",
        "nodes": [{"id": "hello", "type": "play", "prompts": [{"kind": "tts", "text": text}]}],
    }


def tenant_document(
    password: str, *, number: str, trunks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "numbers": [
            {"number": number, "target": "flow:main"},
            {"number": "9196", "target": "echo", "public": False},
        ],
        "extensions": [
            {"number": "1001", "password": password},
            {"number": "1002", "password": password + "b"},
        ],
        "trunks": trunks or [],
        "flows": [tts_flow("main", "hello")],
    }


async def apply(
    storage: Storage,
    tenancy: TenancyService,
    tenant: str,
    document: dict[str, Any],
    directory: Directory | None,
) -> None:
    result = await import_tenant(storage, tenancy, tenant, document, directory=directory)
    assert result.ok, result.problems


async def test_two_tenants_with_the_same_extension_numbers_are_kept_apart(
    storage: Storage, tenancy: TenancyService
) -> None:
    for tenant, password, number in [("acme", "acmepass1", "4001"), ("bolt", "boltpass2", "4002")]:
        await tenancy.create_tenant(tenant, tenant.title())
        await apply(storage, tenancy, tenant, tenant_document(password, number=number), None)
    directory = await Directory.open(storage)

    acme, bolt = directory.extension("acme", "1001"), directory.extension("bolt", "1001")
    assert acme is not None and bolt is not None
    assert acme.password == "acmepass1" and bolt.password == "boltpass2"
    acme_secret, bolt_secret = (
        directory.digest_secret("acme", "1001"),
        directory.digest_secret("bolt", "1001"),
    )
    assert acme_secret is not None and bolt_secret is not None
    assert acme_secret.ha1_for("MD5", "1001", "r") != bolt_secret.ha1_for("MD5", "1001", "r")
    assert directory.digest_secret("acme", "1003") is None
    assert directory.digest_secret("nobody", "1001") is None

    # Each tenant reaches its own public number from inside, never the other's.
    route = directory.route("acme", "4001")
    assert route is not None and (route.tenant, str(route.target), route.public) == (
        "acme",
        "flow:main",
        True,
    )
    assert directory.route("acme", "4002") is None
    echo = directory.route("bolt", "9196")
    assert echo is not None and (echo.tenant, str(echo.target), echo.public) == ("bolt", "echo", False)
    extension = directory.route("bolt", "1002")
    assert extension is not None and str(extension.target) == "extension:1002"
    # Public numbers find their tenant from anywhere (TEL-05), in any written form.
    called = directory.public_number("4002")
    assert called is not None and called.tenant == "bolt"
    assert directory.public_number("9196") is None  # internal codes are not public
    main = directory.flow("acme", "main")
    assert main is not None and main.id == "main"


async def test_sip_domain_resolves_the_tenant(storage: Storage, tenancy: TenancyService) -> None:
    await tenancy.create_tenant("acme", "Acme")
    directory = await Directory.open(storage)
    # One tenant: an address or a name nobody claims means that tenant.
    assert directory.tenant_for_domain("192.0.2.10") == "acme"
    assert directory.tenant_for_domain("[2001:db8::1]:5060") == "acme"
    assert directory.tenant_for_domain("pbx.unknown.example") == "acme"
    assert directory.tenant_for_domain(None) == "acme"

    await tenancy.create_tenant("bolt", "Bolt")
    await set_sip_domain(storage, "acme", "Acme.Example.com")
    await set_sip_domain(storage, "bolt", "bolt.example.com")
    with pytest.raises(ValueError, match="another tenant"):
        await set_sip_domain(storage, "bolt", "acme.example.com")
    await directory.reload_platform()
    assert directory.tenant_for_domain("acme.example.com") == "acme"
    assert directory.tenant_for_domain("ACME.example.com:5060") == "acme"
    assert directory.tenant_for_domain("bolt.example.com") == "bolt"
    # Two tenants: an address is ambiguous and must not pick one.
    assert directory.tenant_for_domain("192.0.2.10") is None
    assert directory.tenant_for_domain("other.example.com") is None

    await tenancy.set_status("bolt", "suspended")
    await directory.refresh()
    assert directory.tenant_for_domain("bolt.example.com") is None
    assert directory.view("bolt") is None
    # Only acme is active now: an address resolves to it again.
    assert directory.tenant_for_domain("192.0.2.10") == "acme"


async def test_trunk_by_source_address_and_cidr(storage: Storage, tenancy: TenancyService) -> None:
    await tenancy.create_tenant("acme", "Acme")
    await tenancy.create_tenant("bolt", "Bolt")
    acme_trunks: list[dict[str, Any]] = [
        {"name": "telecom", "kind": "ip", "host": "198.51.100.10", "priority": 1},
        {"name": "unicom", "kind": "ip", "host": "sbc.unicom.example", "allowed_sources": ["203.0.113.0/24"]},
        {
            "name": "backup",
            "kind": "register",
            "host": "sip.backup.example",
            "username": "u",
            "password": "p",
            "allowed_sources": ["2001:db8:5::/48"],
            "priority": 5,
        },
        {"name": "off", "kind": "ip", "host": "192.0.2.99", "enabled": False},
    ]
    # Bolt buys from the same carrier SBC as acme's "unicom" (one address, two tenants).
    bolt_trunks = [{"name": "shared", "kind": "ip", "host": "203.0.113.5"}]
    await apply(
        storage, tenancy, "acme", tenant_document("acmepass1", number="4001", trunks=acme_trunks), None
    )
    await apply(
        storage, tenancy, "bolt", tenant_document("boltpass2", number="4002", trunks=bolt_trunks), None
    )
    directory = await Directory.open(storage)

    telecom = directory.trunk_from("198.51.100.10")
    assert telecom is not None and (telecom.tenant, telecom.trunk.name) == ("acme", "telecom")
    unicom = directory.trunk_from("203.0.113.77")
    assert unicom is not None and (unicom.tenant, unicom.trunk.name) == ("acme", "unicom")
    backup = directory.trunk_from("2001:db8:5:1::9")
    assert backup is not None and backup.trunk.name == "backup"
    mapped = directory.trunk_from("::ffff:198.51.100.10")
    assert mapped is not None and mapped.trunk.name == "telecom"
    assert directory.trunk_from("192.0.2.99") is None  # disabled
    assert directory.trunk_from("192.0.2.1") is None
    assert directory.trunk_from("not an address") is None
    # The shared address: bolt's /32 is the most specific match, acme's /24 also contains it.
    matches = directory.trunks_from("203.0.113.5")
    assert [(m.tenant, m.trunk.name) for m in matches] == [("bolt", "shared"), ("acme", "unicom")]
    assert directory.trunk_from("203.0.113.5", tenant="acme") is not None
    # The called number decides which tenant a call from the shared address is for.
    inbound = directory.inbound("203.0.113.5", "4001")
    assert inbound is not None
    match, route = inbound
    assert (match.tenant, match.trunk.name) == ("acme", "unicom")
    assert route is not None and str(route.target) == "flow:main"
    inbound = directory.inbound("203.0.113.5", "4002")
    assert inbound is not None and inbound[0].tenant == "bolt"
    assert directory.inbound("192.0.2.1", "4001") is None
    # Enabled trunks are tried in priority order (TEL-15).
    assert [trunk.name for trunk in directory.trunks("acme")] == ["unicom", "telecom", "backup"]


async def test_a_config_change_is_visible_without_restart(storage: Storage, tenancy: TenancyService) -> None:
    await tenancy.create_tenant("acme", "Acme")
    await apply(storage, tenancy, "acme", tenant_document("acmepass1", number="4001"), None)
    directory = await Directory.open(storage)
    changed: list[str] = []
    directory.subscribe(changed.append)
    first_flow = directory.flow("acme", "main")
    assert first_flow is not None and first_flow.version == 1

    # In this process: the import reloads the directory it is given.
    document = tenant_document("newpass99", number="4001")
    document["extensions"].append({"number": "1003", "password": "third333x"})
    document["flows"] = [tts_flow("main", "hello again")]
    await apply(storage, tenancy, "acme", document, directory)
    extension = directory.extension("acme", "1001")
    assert extension is not None and extension.password == "newpass99"
    assert directory.extension("acme", "1003") is not None
    new_flow = directory.flow("acme", "main")
    assert new_flow is not None and new_flow.version == 2
    assert changed == ["acme"]
    # A call that started on version 1 keeps it (IVR-15): the old object is untouched.
    old_node = first_flow.nodes[0]
    assert isinstance(old_node, PlayNode) and old_node.prompts[0].model_dump()["text"] == "hello"

    # From another process (`hotline config import`): refresh() notices the revision moved.
    document["extensions"] = [{"number": "1001", "password": "otherpass7"}]
    await apply(storage, tenancy, "acme", document, None)
    extension = directory.extension("acme", "1001")
    assert extension is not None and extension.password == "newpass99"  # not yet
    assert await directory.refresh() == ["acme"]
    extension = directory.extension("acme", "1001")
    assert extension is not None and extension.password == "otherpass7"
    assert directory.extension("acme", "1003") is None
    assert await directory.refresh() == []  # nothing moved since

    # A number given on the command line (`hotline number assign`) shows up too.
    await tenancy.assign_number("4009", "acme", "echo", "echo")
    await directory.refresh()
    route = directory.public_number("4009")
    assert route is not None and (route.tenant, str(route.target)) == ("acme", "echo")

    # A tenant created later is found by refresh as well.
    await tenancy.create_tenant("bolt", "Bolt")
    await directory.refresh()
    assert directory.view("bolt") is not None


async def test_one_broken_tenant_database_does_not_stop_the_others(
    storage: Storage, tenancy: TenancyService, tmp_path: Path
) -> None:
    for tenant, number in [("acme", "4001"), ("bolt", "4002")]:
        await tenancy.create_tenant(tenant, tenant.title())
        await apply(storage, tenancy, tenant, tenant_document(f"{tenant}pass1", number=number), None)
    await storage.close()
    (tmp_path / "tenants" / "bolt" / "tenant.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "tenants" / "bolt" / f"tenant.db{suffix}").unlink(missing_ok=True)

    reopened = Storage(tmp_path)
    try:
        directory = await Directory.open(reopened)
        assert directory.extension("acme", "1001") is not None
        assert directory.view("bolt") is None
        assert await directory.refresh() == []
    finally:
        await reopened.close()
