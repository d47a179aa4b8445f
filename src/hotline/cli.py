"""The `hotline` command line. Errors are printed as sentences, not tracebacks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from hotline.config import Settings, parse_port_range


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description="Hotline call center platform")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run SIP, RTP and HTTP in one process")
    _server_options(serve)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for name in ("data_dir", "bind", "sip_port", "http_port", "public_address"):
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
    return 2


def _sentence(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return "invalid setting: " + "; ".join(parts)
    return str(error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
