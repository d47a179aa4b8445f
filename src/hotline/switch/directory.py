"""The switch's configuration as data, and the in-memory directory read on every call (TEL-05, FM-14).

Models (pydantic v2, unknown fields refused; numbers may be written as YAML integers):

- :class:`Extension`: ``number``, SIP digest ``password``, ``name``, caller id, ``agent`` (the agent seat
  it belongs to, TEL-10), ``outbound_trunk`` (TEL-09).
- :class:`Trunk`: ``name``, ``kind`` (``register``: we register to the carrier; ``ip``: the carrier sends
  from known addresses), ``host``, ``port``, ``transport``, ``username``/``password`` for registration,
  ``allowed_sources`` (addresses or CIDRs), ``priority`` (lower is tried first, TEL-15),
  ``channel_limit``, ``caller_id`` rules (:class:`CallerIdRules`), dial ``prefix``.
- :class:`NumberEntry`: a number of the tenant's plan and its :class:`NumberTarget` (``flow:<id>``,
  ``queue:<name>``, ``extension:<number>``, ``forward:<number>``, ``echo``, ``readback``). ``public``
  numbers (DIDs, 400 numbers) are held in the platform's number map, so a call from any trunk finds the
  tenant (TEL-05); internal ones (``public: false``, feature codes such as 9196 echo) are dialled from
  the tenant's own phones only.

:class:`Directory` keeps every tenant's switch configuration in memory, loaded from the platform database
(tenants, SIP domains, public numbers) and each tenant's database (extensions, trunks, internal numbers,
published flows, calendars). Lookups are synchronous dictionary reads:

- ``tenant_for_domain(domain)``: the tenant whose ``sip_domain`` it is; an IP address or an unknown domain
  resolves to the only active tenant when there is exactly one.
- ``extension(tenant, number)``, ``digest_secret(tenant, user)`` (a registrar ``SecretLookup``).
- ``route(tenant, dialled) -> Route | None``: extension, internal number, or the tenant's public number.
- ``public_number(dnis) -> Route | None``: which tenant a called number belongs to, and its target.
- ``trunks_from(address) -> list[TrunkMatch]``: trunks whose allowed sources contain the address, most
  specific first; ``trunk_from(address, tenant=None)``; ``inbound(address, dnis)`` combines both when
  several tenants share a carrier's addresses.
- ``trunks(tenant)``, ``flow(tenant, flow_id)``, ``calendars(tenant)``, ``view(tenant)``.

Changes take effect without a restart: ``reload_tenant(tenant)`` / ``reload_platform()`` after a change
in this process (``hotline.tenancy.config_document.import_tenant`` calls them), and ``refresh()`` (run by
``watch(interval)``) picks up changes made by other processes (``hotline config import``) through each
tenant's configuration revision. Each tenant's view is swapped whole, so a lookup never sees half a
change; calls already running keep the objects they hold (IVR-15). ``subscribe(listener)`` tells other
rooms (ACD-18) which tenant changed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, model_serializer
from pydantic import model_validator as _model_validator
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from hotline.acd.config import AGENT_ID_PATTERN, CONFIG_ID_PATTERN, EXTENSION_NUMBER_PATTERN
from hotline.ivr.calendar import BusinessCalendar
from hotline.ivr.schema import Flow
from hotline.log import get_logger
from hotline.sip.auth import DigestSecret
from hotline.storage.engines import Storage, StorageError, UnknownTenant
from hotline.tenancy import config_store
from hotline.tenancy.models import NumberRecord, TenantRecord
from hotline.tenancy.service import InvalidNumber, normalize_number

log = get_logger(__name__)

DEFAULT_REGION: Final = "CN"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ExtensionNumber = Annotated[str, Field(pattern=EXTENSION_NUMBER_PATTERN)]
INTERNAL_NUMBER_PATTERN: Final = r"^[0-9*#]{1,20}$"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")


class _Model(BaseModel):
    # Numbers in YAML are easily written without quotes; they are text to us.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def ip_literal(host: str) -> IPAddress | None:
    """`host` as an IP address ("[::1]" too), or None when it is a name."""
    try:
        return ipaddress.ip_address(host.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def check_host(value: str) -> str:
    value = value.strip()
    if ip_literal(value) is None and not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


# --- extensions ------------------------------------------------------------------------------------------


class Extension(_Model):
    """A phone or softphone of the tenant's own (TEL-08). The SIP password is kept as given, in the
    tenant's own database: digest authentication needs it (or a realm-bound HA1) for every algorithm
    offered, and the demo prints it."""

    number: ExtensionNumber
    password: str = Field(min_length=8, max_length=64, repr=False)
    name: str = Field(default="", max_length=100)
    # Shown to other extensions and agents.
    caller_id_name: str = Field(default="", max_length=100)
    # Presented on outside calls (must be a number the trunk lets the tenant present).
    caller_id_number: str | None = Field(default=None, max_length=32)
    agent: str | None = Field(default=None, pattern=AGENT_ID_PATTERN)
    outbound_trunk: str | None = Field(default=None, pattern=CONFIG_ID_PATTERN)

    @_model_validator(mode="after")
    def _strong_password(self) -> Extension:
        if not (_LETTER.search(self.password) and _DIGIT.search(self.password)):
            raise ValueError("SIP password must mix letters and digits")
        return self

    def digest_secret(self) -> DigestSecret:
        return DigestSecret(password=self.password)


# --- trunks ----------------------------------------------------------------------------------------------


class CallerIdRules(_Model):
    """What a trunk lets the tenant present on outbound calls. ``allowed`` holds numbers, or prefixes
    ending in ``*``; an empty list allows anything. Anything else is replaced by ``default``."""

    default: str | None = Field(default=None, max_length=32)
    allowed: list[Annotated[str, Field(pattern=r"^\+?[0-9]{1,20}\*?$")]] = Field(
        default_factory=list, max_length=1000
    )

    def present(self, wanted: str | None) -> str | None:
        if wanted is not None and self.allows(wanted):
            return wanted
        return self.default

    def allows(self, number: str) -> bool:
        if not self.allowed:
            return True
        return any(
            number.startswith(rule[:-1]) if rule.endswith("*") else number == rule for rule in self.allowed
        )


class Trunk(_Model):
    name: str = Field(pattern=CONFIG_ID_PATTERN)
    kind: Literal["register", "ip"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "udp"
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password: str | None = Field(default=None, min_length=1, max_length=128, repr=False)
    register_expires: int = Field(default=3600, ge=60, le=86_400)
    allowed_sources: list[IPvAnyNetwork] = Field(default_factory=list, max_length=100)
    priority: int = Field(default=0, ge=0, le=1000)
    channel_limit: int | None = Field(default=None, ge=1, le=100_000)
    caller_id: CallerIdRules = Field(default_factory=CallerIdRules)
    # Digits put before the dialled number on outbound calls (e.g. a gateway's line prefix).
    prefix: str = Field(default="", pattern=r"^[0-9*#+]{0,10}$")
    enabled: bool = True

    @_model_validator(mode="after")
    def _consistent(self) -> Trunk:
        self.host = check_host(self.host)
        if self.kind == "register" and (self.username is None or self.password is None):
            raise ValueError("a register trunk needs username and password")
        if self.kind == "ip" and not self.allowed_sources and ip_literal(self.host) is None:
            raise ValueError(
                "an ip trunk whose host is a name needs allowed_sources, the addresses the carrier sends from"
            )
        return self

    def source_networks(self) -> list[IPNetwork]:
        """The addresses calls from this trunk come from: ``allowed_sources``, else the host's address."""
        if self.allowed_sources:
            return list(self.allowed_sources)
        address = ip_literal(self.host)
        return [ipaddress.ip_network(address)] if address is not None else []


# --- the number plan -------------------------------------------------------------------------------------

TargetKind = Literal["flow", "queue", "extension", "forward", "echo", "readback", "silence"]
TARGET_KINDS: Final = ("flow", "queue", "extension", "forward", "echo", "readback", "silence")
_TARGETS_WITH_REF: Final = ("flow", "queue", "extension", "forward")


class NumberTarget(_Model):
    """Where a number leads. Text form ``kind:ref`` (``flow:main``) or just ``echo`` / ``readback``."""

    kind: TargetKind
    ref: str | None = Field(default=None, min_length=1, max_length=64)

    @_model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            kind, _, ref = value.partition(":")
            return {"kind": kind.strip(), "ref": ref.strip() or None}
        return value

    @_model_validator(mode="after")
    def _ref_matches_kind(self) -> NumberTarget:
        if self.kind in _TARGETS_WITH_REF and not self.ref:
            raise ValueError(f"a {self.kind} target names one: write {self.kind}:<which>")
        if self.kind not in _TARGETS_WITH_REF and self.ref:
            raise ValueError(f"{self.kind} takes no name")
        if self.kind == "forward" and self.ref is not None:
            try:
                normalize_number(self.ref, DEFAULT_REGION)
            except InvalidNumber as error:
                raise ValueError(str(error)) from None
        return self

    @model_serializer
    def _as_text(self) -> str:
        return f"{self.kind}:{self.ref}" if self.ref else self.kind

    def __str__(self) -> str:
        return self._as_text()

    @classmethod
    def from_platform(cls, target_type: str, target: str) -> NumberTarget:
        """From the platform number map, where a target without a name stores its kind as the name."""
        return cls.model_validate(
            {"kind": target_type, "ref": target if target_type in _TARGETS_WITH_REF else None}
        )

    def platform_target(self) -> str:
        return self.ref or self.kind


class NumberEntry(_Model):
    """``public`` numbers are normalised like the platform map does (E.164 when valid, else digits)."""

    number: str = Field(min_length=1, max_length=40)
    target: NumberTarget
    public: bool = True

    @_model_validator(mode="after")
    def _canonical(self) -> NumberEntry:
        if self.public:
            try:
                self.number, _kind = normalize_number(self.number, DEFAULT_REGION)
            except InvalidNumber as error:
                raise ValueError(str(error)) from None
        elif not re.fullmatch(INTERNAL_NUMBER_PATTERN, self.number):
            raise ValueError("an internal number is 1-20 of the keys 0-9, * and #")
        return self


# --- the directory ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str
    status: str
    time_zone: str
    sip_domain: str | None
    concurrent_call_limit: int
    seat_limit: int


@dataclass(frozen=True)
class Route:
    """A dialled or called number resolved: the tenant, the number as matched, and where it leads."""

    tenant: str
    number: str
    target: NumberTarget
    public: bool


@dataclass(frozen=True)
class TrunkMatch:
    tenant: str
    trunk: Trunk
    network: IPNetwork


@dataclass(frozen=True)
class TenantView:
    """One tenant's switch configuration at one configuration revision (read-only)."""

    tenant: str
    revision: int
    extensions: Mapping[str, Extension]
    trunks: Mapping[str, Trunk]
    internal_numbers: Mapping[str, NumberEntry]
    flows: Mapping[str, Flow]
    calendars: Mapping[str, BusinessCalendar]
    trunks_by_priority: tuple[Trunk, ...] = ()


@dataclass
class _PlatformView:
    tenants: dict[str, TenantInfo] = field(default_factory=dict)
    by_domain: dict[str, str] = field(default_factory=dict)
    public: dict[str, Route] = field(default_factory=dict)


def normalize_domain(domain: str) -> str:
    """Lower-case, without a port, brackets or a trailing dot."""
    text = domain.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


Listener = Callable[[str], None]
_ModelT = TypeVar("_ModelT", bound=BaseModel)


class Directory:
    """Every tenant's switch configuration in memory. Build with ``await Directory.open(storage)``."""

    def __init__(self, storage: Storage, *, default_region: str = DEFAULT_REGION) -> None:
        self.storage = storage
        self.default_region = default_region
        self._platform = _PlatformView()
        self._views: dict[str, TenantView] = {}
        # prefix length -> network -> matches, longest prefixes first when looked up
        self._sources: dict[int, dict[IPNetwork, list[TrunkMatch]]] = {}
        self._listeners: list[Listener] = []
        self._reload_lock = asyncio.Lock()

    @classmethod
    async def open(cls, storage: Storage, *, default_region: str = DEFAULT_REGION) -> Directory:
        directory = cls(storage, default_region=default_region)
        await directory.load()
        return directory

    # ------------------------------------------------------------------------------------ loading

    async def load(self) -> None:
        """Load the platform and every tenant."""
        async with self._reload_lock:
            await self._load_platform()
            for tenant in list(self._platform.tenants):
                await self._load_tenant_safely(tenant)
            self._drop_missing()

    async def reload_platform(self) -> None:
        """Re-read tenants, SIP domains and public numbers (after `hotline number assign`, a new tenant)."""
        async with self._reload_lock:
            await self._load_platform()
            for tenant in list(self._platform.tenants):
                if tenant not in self._views:
                    await self._load_tenant_safely(tenant)
            self._drop_missing()

    async def reload_tenant(self, tenant: str) -> None:
        """Re-read one tenant's configuration now (after a change made in this process)."""
        async with self._reload_lock:
            await self._load_tenant(tenant)

    async def refresh(self) -> list[str]:
        """Pick up changes made by other processes: the platform always, each tenant whose configuration
        revision moved. Returns the tenants reloaded."""
        reloaded = []
        async with self._reload_lock:
            await self._load_platform()
            for tenant in list(self._platform.tenants):
                view = self._views.get(tenant)
                try:
                    async with self.storage.tenant_session(tenant) as session:
                        revision = await config_store.read_revision(session)
                except (StorageError, SQLAlchemyError) as error:
                    log.warning("directory.revision_unreadable", tenant=tenant, error=str(error))
                    continue
                changed = view is None or view.revision != revision
                if changed and await self._load_tenant_safely(tenant):
                    reloaded.append(tenant)
            self._drop_missing()
        return reloaded

    async def watch(self, interval: float = 2.0) -> None:
        """Refresh every `interval` seconds until cancelled (the server runs this as a task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except (StorageError, SQLAlchemyError) as error:
                log.warning("directory.refresh_failed", error=str(error))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(tenant)` after each reload of a tenant; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def _load_platform(self) -> None:
        async with self.storage.platform_session() as session:
            tenants = (await session.scalars(select(TenantRecord))).all()
            numbers = (await session.scalars(select(NumberRecord))).all()
        platform = _PlatformView()
        for record in tenants:
            domain = normalize_domain(record.sip_domain) if record.sip_domain else None
            platform.tenants[record.id] = TenantInfo(
                id=record.id,
                name=record.name,
                status=record.status,
                time_zone=record.time_zone,
                sip_domain=domain,
                concurrent_call_limit=record.concurrent_call_limit,
                seat_limit=record.seat_limit,
            )
            if domain:
                platform.by_domain[domain] = record.id
        for number in numbers:
            owner = platform.tenants.get(number.tenant_id)
            if owner is None or owner.status != "active":
                continue
            try:
                target = NumberTarget.from_platform(number.target_type, number.target)
            except ValidationError:
                log.warning("directory.bad_number_target", number=number.number, tenant=number.tenant_id)
                continue
            platform.public[number.number] = Route(number.tenant_id, number.number, target, True)
        self._platform = platform

    async def _load_tenant_safely(self, tenant: str) -> bool:
        # One tenant's unreadable database must not keep the others from being served.
        try:
            return await self._load_tenant(tenant)
        except (StorageError, SQLAlchemyError) as error:
            log.error("directory.tenant_unreadable", tenant=tenant, error=str(error))
            return False

    async def _load_tenant(self, tenant: str) -> bool:
        try:
            async with self.storage.tenant_session(tenant) as session:
                revision = await config_store.read_revision(session)
                objects = await config_store.read_objects(
                    session, kinds=("extension", "trunk", "number", "calendar")
                )
                flows = await config_store.read_live_flows(session)
        except UnknownTenant:
            log.warning("directory.tenant_without_database", tenant=tenant)
            return False
        trunks = _parse(tenant, "trunk", objects.get("trunk", {}), Trunk)
        view = TenantView(
            tenant=tenant,
            revision=revision,
            extensions=_parse(tenant, "extension", objects.get("extension", {}), Extension),
            trunks=trunks,
            internal_numbers=_parse(tenant, "number", objects.get("number", {}), NumberEntry),
            flows=_parse(tenant, "flow", flows, Flow),
            calendars=_parse(tenant, "calendar", objects.get("calendar", {}), BusinessCalendar),
            trunks_by_priority=tuple(
                sorted(
                    (trunk for trunk in trunks.values() if trunk.enabled),
                    key=lambda trunk: (trunk.priority, trunk.name),
                )
            ),
        )
        self._views[tenant] = view
        self._index_sources()
        log.info("directory.loaded", tenant=tenant, revision=revision)
        for listener in list(self._listeners):
            try:
                listener(tenant)
            except Exception as error:  # a listener's bug must not stop the reload
                log.error("directory.listener_failed", tenant=tenant, error=repr(error))
        return True

    def _drop_missing(self) -> None:
        gone = [tenant for tenant in self._views if tenant not in self._platform.tenants]
        for tenant in gone:
            del self._views[tenant]
        if gone:
            self._index_sources()

    def _index_sources(self) -> None:
        sources: dict[int, dict[IPNetwork, list[TrunkMatch]]] = {}
        for tenant, view in self._views.items():
            for trunk in view.trunks_by_priority:
                for network in trunk.source_networks():
                    sources.setdefault(network.prefixlen, {}).setdefault(network, []).append(
                        TrunkMatch(tenant, trunk, network)
                    )
        self._sources = dict(sorted(sources.items(), reverse=True))

    # ------------------------------------------------------------------------------------ lookups

    def tenants(self) -> list[TenantInfo]:
        return list(self._platform.tenants.values())

    def tenant_info(self, tenant: str) -> TenantInfo | None:
        return self._platform.tenants.get(tenant)

    def view(self, tenant: str) -> TenantView | None:
        """The tenant's configuration, only while the tenant is active."""
        info = self._platform.tenants.get(tenant)
        if info is None or info.status != "active":
            return None
        return self._views.get(tenant)

    def tenant_for_domain(self, domain: str | None) -> str | None:
        """The tenant a SIP request's domain (Request-URI or To host) belongs to."""
        name = normalize_domain(domain) if domain else ""
        owner = self._platform.by_domain.get(name)
        if owner is not None:
            info = self._platform.tenants[owner]
            return owner if info.status == "active" else None
        active = [info.id for info in self._platform.tenants.values() if info.status == "active"]
        # An address or a name nobody claims: unambiguous only on a single-tenant installation.
        return active[0] if len(active) == 1 else None

    def extension(self, tenant: str, number: str) -> Extension | None:
        view = self.view(tenant)
        return view.extensions.get(number) if view is not None else None

    def digest_secret(self, tenant: str, user: str) -> DigestSecret | None:
        """For the registrar and INVITE authentication (``hotline.sip.registrar.SecretLookup``)."""
        extension = self.extension(tenant, user)
        return extension.digest_secret() if extension is not None else None

    def route(self, tenant: str, dialled: str) -> Route | None:
        """What `dialled` reaches from inside `tenant`: an extension, an internal number, or one of the
        tenant's public numbers."""
        view = self.view(tenant)
        if view is None:
            return None
        if dialled in view.extensions:
            return Route(tenant, dialled, NumberTarget(kind="extension", ref=dialled), False)
        entry = view.internal_numbers.get(dialled)
        if entry is not None:
            return Route(tenant, entry.number, entry.target, False)
        route = self.public_number(dialled)
        return route if route is not None and route.tenant == tenant else None

    def public_number(self, dnis: str) -> Route | None:
        """The tenant and target of a called number (TEL-05); None when no active tenant holds it."""
        try:
            canonical, _kind = normalize_number(dnis, self.default_region)
        except InvalidNumber:
            return None
        return self._platform.public.get(canonical)

    def trunks(self, tenant: str) -> tuple[Trunk, ...]:
        """The tenant's enabled trunks in the order to try them (priority, then name)."""
        view = self.view(tenant)
        return view.trunks_by_priority if view is not None else ()

    def trunks_from(self, address: str) -> list[TrunkMatch]:
        """Enabled trunks of active tenants whose allowed sources contain `address`, most specific
        network first, then by priority."""
        ip = ip_literal(address)
        if ip is None:
            return []
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        found: list[TrunkMatch] = []
        for prefixlen, networks in self._sources.items():
            if prefixlen > ip.max_prefixlen:
                continue
            network = ipaddress.ip_network(f"{ip}/{prefixlen}", strict=False)
            for match in networks.get(network, ()):
                if self.view(match.tenant) is not None:
                    found.append(match)
        return found

    def trunk_from(self, address: str, tenant: str | None = None) -> TrunkMatch | None:
        """The trunk a request from `address` came in on: within `tenant`, or the most specific match when
        it belongs to one tenant only (else None: use ``inbound`` with the called number)."""
        matches = self.trunks_from(address)
        if tenant is not None:
            return next((match for match in matches if match.tenant == tenant), None)
        if not matches:
            return None
        best = matches[0].network.prefixlen
        tenants = {match.tenant for match in matches if match.network.prefixlen == best}
        return matches[0] if len(tenants) == 1 else None

    def inbound(self, address: str, dnis: str) -> tuple[TrunkMatch, Route | None] | None:
        """A call from a trunk: which trunk (and so tenant) and where the called number leads.

        When several tenants share the carrier's addresses, the called number picks the tenant. Returns
        None when the address belongs to no trunk, or the number to none of the tenants sharing it."""
        matches = self.trunks_from(address)
        if not matches:
            return None
        route = self.public_number(dnis)
        if route is not None:
            for match in matches:
                if match.tenant == route.tenant:
                    return match, route
        single = self.trunk_from(address)
        if single is None:
            return None
        return single, self.route(single.tenant, dnis)

    def flow(self, tenant: str, flow_id: str) -> Flow | None:
        """The published version of a flow (new calls start on it; running calls keep theirs)."""
        view = self.view(tenant)
        return view.flows.get(flow_id) if view is not None else None

    def calendars(self, tenant: str) -> Mapping[str, BusinessCalendar]:
        view = self.view(tenant)
        return view.calendars if view is not None else MappingProxyType({})


def _parse(
    tenant: str, kind: str, documents: Mapping[str, Any], model: type[_ModelT]
) -> Mapping[str, _ModelT]:
    """Stored documents were validated when written; one that no longer parses is skipped and logged
    rather than taking the tenant's other objects down with it."""
    parsed: dict[str, _ModelT] = {}
    for key, document in documents.items():
        try:
            parsed[key] = model.model_validate(document)
        except ValidationError as error:
            log.error("directory.bad_object", tenant=tenant, kind=kind, key=key, error=str(error))
    return MappingProxyType(parsed)
