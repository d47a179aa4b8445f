"""The `hotline` command line. Errors are printed as sentences, not tracebacks.

    hotline serve | demo [--data-dir D --bind A --sip-port P --http-port P --rtp-ports A-B --public-address A]
    hotline migrate
    hotline tenant create ID --name NAME [--time-zone Z --sip-domain D --seats N --concurrent-calls N]
    hotline number assign NUMBER --tenant T --target flow:main
    hotline config import FILE --tenant T
    hotline config export --tenant T [--output FILE] [--format yaml|json]

Exit status: 0 done, 2 bad input (a bad file, an invalid configuration, an unknown tenant), 1 the
system could not do it (database unreachable, a port in use).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from hotline.config import Settings, parse_port_range
from hotline.storage.engines import Storage

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where databases and recordings live (default ./data or $HOTLINE_DATA_DIR)",
    )


def _server_options(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--bind", default=None, help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--sip-port", type=int, default=None, help="SIP UDP/TCP port (default 5060)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP/WebSocket port (default 8080)")
    parser.add_argument("--rtp-ports", default=None, help="RTP port range A-B (default 20000-29999)")
    parser.add_argument("--public-address", default=None, help="address announced in SDP and Contact")
    parser.add_argument("--sip-tls-port", type=int, default=None, help="SIP over TLS port (off by default)")
    parser.add_argument("--sip-ws-port", type=int, default=None, help="SIP over WebSocket port (RFC 7118)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="certificate (PEM) for TLS and WSS")
    parser.add_argument("--tls-key", type=Path, default=None, help="private key (PEM) for TLS and WSS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description="Hotline call center platform")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run SIP, RTP and HTTP in one process")
    _server_options(serve)
    _admin_commands(commands)
    return parser


def _admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="create the demo tenant if missing, print how to call it, then serve like `serve`"
    )
    _server_options(demo)

    migrate = commands.add_parser("migrate", help="bring the platform and every tenant database up to date")
    _common(migrate)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser("create", help="create a tenant and its database")
    create.add_argument("tenant_id", metavar="ID", help="lowercase letters, digits and _ (e.g. acme)")
    create.add_argument("--name", required=True, help="the tenant's display name")
    create.add_argument("--time-zone", default="Asia/Shanghai", help="IANA time zone (default Asia/Shanghai)")
    create.add_argument("--sip-domain", default=None, help="the domain its phones register to")
    create.add_argument("--seats", type=int, default=10, help="licensed agent seats (default 10)")
    create.add_argument("--concurrent-calls", type=int, default=10, help="concurrent call limit (default 10)")
    _common(create)

    number = commands.add_parser("number", help="manage the platform's numbers")
    number_commands = number.add_subparsers(dest="number_command", required=True)
    assign = number_commands.add_parser("assign", help="give a number to a tenant, leading to a target")
    assign.add_argument("number", metavar="NUMBER", help="a DID, 400 number or short number")
    assign.add_argument("--tenant", required=True)
    assign.add_argument(
        "--target",
        required=True,
        help="flow:ID, queue:NAME, extension:NUMBER, forward:NUMBER, echo or readback",
    )
    _common(assign)

    config = commands.add_parser("config", help="a tenant's configuration as one YAML/JSON document")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_import = config_commands.add_parser(
        "import", help="replace a tenant's configuration with a document (all or nothing)"
    )
    config_import.add_argument("file", metavar="FILE", type=Path, help="YAML or JSON (by its .json suffix)")
    config_import.add_argument("--tenant", required=True)
    _common(config_import)
    config_export = config_commands.add_parser("export", help="write a tenant's configuration")
    config_export.add_argument("--tenant", required=True)
    config_export.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")
    config_export.add_argument(
        "--format", choices=("yaml", "json"), default=None, help="default yaml, or json for a .json output"
    )
    _common(config_export)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for name in (
        "data_dir",
        "bind",
        "sip_port",
        "http_port",
        "public_address",
        "sip_tls_port",
        "sip_ws_port",
        "tls_cert",
        "tls_key",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    rtp_ports = getattr(args, "rtp_ports", None)
    if rtp_ports is not None:
        overrides["rtp_port_min"], overrides["rtp_port_max"] = parse_port_range(rtp_ports)
    return Settings(**overrides)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValueError, ValidationError) as error:
        print(f"hotline: {_sentence(error)}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from hotline.app import run

        try:
            return run(settings)
        except OSError as error:
            print(f"hotline: cannot start: {error.strerror or error}", file=sys.stderr)
            return 1
    if args.command == "demo":
        code = _admin(settings, lambda storage: _demo(storage, settings))
        if code != 0:
            return code
        from hotline.app import run

        try:
            return run(settings)
        except OSError as error:
            print(f"hotline: cannot start: {error.strerror or error}", file=sys.stderr)
            return 1
    commands: dict[str, Callable[[Storage], Awaitable[int]]] = {
        "migrate": _migrate,
        "tenant": lambda storage: _tenant_create(storage, args),
        "number": lambda storage: _number_assign(storage, args),
        "config": lambda storage: (
            _config_import(storage, args)
            if args.config_command == "import"
            else _config_export(storage, args)
        ),
    }
    return _admin(settings, commands[args.command])


# --- administration commands ---------------------------------------------------------------------------


def _admin(settings: Settings, command: Callable[[Storage], Awaitable[int]]) -> int:
    """Run one command against the data directory's databases, turning failures into sentences."""
    from hotline.storage.engines import StorageError, UnknownTenant
    from hotline.tenancy.service import TenancyError

    async def run() -> int:
        storage = Storage(settings.data_dir, settings.database_url)
        try:
            return await command(storage)
        finally:
            await storage.close()

    try:
        return asyncio.run(run())
    except (TenancyError, ValueError, UnknownTenant) as error:
        print(f"hotline: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as error:
        print(f"hotline: {error}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as error:
        print(f"hotline: database error: {_first_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"hotline: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILED


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


async def _prepare(storage: Storage, tenant: str) -> None:
    """Bring the platform and this tenant's database up to date (both may predate this version)."""
    from hotline.tenancy.service import TenancyService, TenantNotFound

    await storage.migrate_platform()
    if await TenancyService(storage).get_tenant(tenant) is None:
        raise TenantNotFound(f"tenant {tenant!r} does not exist (create it with `hotline tenant create`)")
    await storage.create_tenant_database(tenant)


async def _migrate(storage: Storage) -> int:
    tenants = await storage.migrate()
    print(f"migrated the platform database and {len(tenants)} tenant database(s)")
    return 0


async def _tenant_create(storage: Storage, args: argparse.Namespace) -> int:
    from hotline.tenancy.config_document import normalize_sip_domain, set_sip_domain
    from hotline.tenancy.service import TenancyService

    if args.sip_domain is not None:
        normalize_sip_domain(args.sip_domain)  # refuse a bad domain before anything is created
    await storage.migrate_platform()
    tenancy = TenancyService(storage)
    tenant = await tenancy.create_tenant(
        args.tenant_id,
        args.name,
        time_zone=args.time_zone,
        concurrent_call_limit=args.concurrent_calls,
        seat_limit=args.seats,
    )
    domain = await set_sip_domain(storage, tenant.id, args.sip_domain) if args.sip_domain else None
    print(f"created tenant {tenant.id} ({tenant.name})" + (f", SIP domain {domain}" if domain else ""))
    return 0


async def _number_assign(storage: Storage, args: argparse.Namespace) -> int:
    from hotline.switch.directory import NumberTarget
    from hotline.tenancy.config_document import load_tenant_config
    from hotline.tenancy.service import TenancyService

    await _prepare(storage, args.tenant)
    try:
        target = NumberTarget.model_validate(args.target)
    except ValidationError as error:
        raise ValueError(f"target {args.target!r}: {_pydantic_sentence(error)}") from None
    config = await load_tenant_config(storage, args.tenant)
    known = {
        "flow": {flow.id for flow in config.flows},
        "queue": {queue.name for queue in config.queues},
        "extension": {extension.number for extension in config.extensions},
    }
    if target.kind in known and target.ref not in known[target.kind]:
        print(f"hotline: tenant {args.tenant} has no {target.kind} {target.ref!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    route = await TenancyService(storage).assign_number(
        args.number, args.tenant, target.kind, target.platform_target()
    )
    print(f"number {route.number} of tenant {route.tenant} now leads to {target}")
    return 0


def _format_of(path: Path | None, chosen: str | None) -> Literal["yaml", "json"]:
    if chosen == "json" or (chosen is None and path is not None and path.suffix.lower() == ".json"):
        return "json"
    return "yaml"


async def _config_import(storage: Storage, args: argparse.Namespace) -> int:
    from hotline.tenancy.config_document import ConfigSyntaxError, import_tenant, parse_document
    from hotline.tenancy.service import TenancyService

    path: Path = args.file
    try:
        text = path.read_bytes()
    except OSError as error:
        print(f"hotline: cannot read {path}: {error.strerror or error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        document = parse_document(text, format=_format_of(path, None))
    except ConfigSyntaxError as error:
        print(f"hotline: {path}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    await _prepare(storage, args.tenant)
    result = await import_tenant(storage, TenancyService(storage), args.tenant, document)
    if not result.ok:
        count = len(result.problems)
        print(
            f"hotline: {path} was not imported; nothing changed. {count} problem{'s' if count > 1 else ''}:",
            file=sys.stderr,
        )
        for problem in result.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    published = ", ".join(f"{flow} v{version}" for flow, version in sorted(result.flows_published.items()))
    print(
        f"imported {path} into tenant {args.tenant}: {result.changed} change(s), revision {result.revision}"
        + (f"; published {published}" if published else "")
    )
    return 0


async def _config_export(storage: Storage, args: argparse.Namespace) -> int:
    from hotline.tenancy.config_document import dump_document, export_tenant

    await _prepare(storage, args.tenant)
    document = await export_tenant(storage, args.tenant)
    text = dump_document(document, format=_format_of(args.output, args.format))
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote tenant {args.tenant}'s configuration to {args.output}")
    return 0


async def _demo(storage: Storage, settings: Settings) -> int:
    from hotline.demo import DemoError, demo_instructions, ensure_demo_tenant
    from hotline.tenancy.service import TenancyService

    await storage.migrate()
    try:
        info = await ensure_demo_tenant(storage, TenancyService(storage))
    except DemoError as error:
        print("hotline: the demo tenant could not be set up:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    host = settings.public_address or _reachable_address(settings.bind)
    print(demo_instructions(info, sip_host=host, sip_port=settings.sip_port, http_port=settings.http_port))
    sys.stdout.flush()
    return 0


def _reachable_address(bind: str) -> str:
    """The address others reach this machine at: the bind address, or for a wildcard bind the one the
    default route leaves from (a UDP connect sends no packet)."""
    if bind not in ("0.0.0.0", "::", ""):
        return bind
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    return address if address != "0.0.0.0" else "127.0.0.1"


def _pydantic_sentence(error: ValidationError) -> str:
    return "; ".join(detail["msg"].removeprefix("Value error, ") for detail in error.errors())


def _sentence(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return "invalid setting: " + "; ".join(parts)
    return str(error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
