"""Host and address helpers: IPv6 brackets, canonical forms, and the local address that routes somewhere."""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Documentation prefixes (RFC 5737, RFC 3849): asking the kernel for the route to one of them gives the
# default route's source address without sending a packet.
_DEFAULT_ROUTE_PROBE = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def strip_brackets(host: str) -> str:
    """'[::1]' -> '::1'; anything else unchanged."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def parse_ip(host: str) -> IPAddress | None:
    """The IP address `host` spells (brackets and a %zone allowed), or None for a domain name.

    An IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4 peer) becomes IPv4."""
    text = strip_brackets(host).split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_ipv6(host: str) -> bool:
    address = parse_ip(host)
    return isinstance(address, ipaddress.IPv6Address)


def normalize_host(host: str) -> str:
    """A canonical spelling, so that equal addresses compare equal: compressed IPs without brackets
    (IPv4-mapped IPv6 as plain IPv4), lower-case domain names without a trailing dot."""
    address = parse_ip(host)
    if address is not None:
        return address.compressed
    return strip_brackets(host).lower().rstrip(".")


def same_host(a: str, b: str) -> bool:
    return normalize_host(a) == normalize_host(b)


def format_host(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 addresses in brackets, everything else as is."""
    bare = strip_brackets(host)
    return f"[{bare}]" if ":" in bare else bare


def format_hostport(host: str, port: int | None) -> str:
    """'host:port' with IPv6 bracketed; the port is left out when None."""
    return format_host(host) if port is None else f"{format_host(host)}:{port}"


def is_wildcard(host: str) -> bool:
    """True for the any-address binds ('', '0.0.0.0', '::')."""
    if host == "":
        return True
    address = parse_ip(host)
    return address is not None and address.is_unspecified


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for IPv6 literals, AF_INET for IPv4 literals and names (names are looked up as IPv4 first)."""
    return socket.AF_INET6 if is_ipv6(host) else socket.AF_INET


# Where peers reach us on our own address rather than on the public one a NAT maps to. Spelled out because
# `ipaddress.is_private` also counts documentation and benchmarking ranges.
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def is_local_network(host: str) -> bool:
    """True when `host` is an IP literal in loopback, private (RFC 1918, ULA) or link-local space."""
    address = parse_ip(host)
    return address is not None and any(address in network for network in _LOCAL_NETWORKS)


def route_source_ip(destination_host: str | None, family: socket.AddressFamily) -> str | None:
    """The local IP the kernel would send from to reach `destination_host` (an IP literal; None means the
    default route). Connecting a UDP socket sends nothing; this is a routing-table lookup, it never blocks."""
    if destination_host and parse_ip(destination_host) is not None:
        target = strip_brackets(destination_host)
    else:
        target = _DEFAULT_ROUTE_PROBE[family]
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))
            local: str = probe.getsockname()[0]
    except OSError:
        return None
    return normalize_host(local)
