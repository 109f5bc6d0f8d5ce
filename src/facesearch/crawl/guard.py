"""SSRF protection: only http(s), and only hosts whose every address is public, unless the
operator allows a network explicitly."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from facesearch.errors import PolicyRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden_address(address: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None if it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    # Most specific first: Python counts link-local, unspecified and reserved ranges as
    # private too.
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:  # shared (100.64/10), documentation and similar ranges
        return "non-global"
    return None


def parse_networks(values: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def check_url(url: str, allowed_networks: list, resolve=socket.getaddrinfo) -> list[str]:  # noqa: ANN001
    """The addresses url's host resolves to, all checked; PolicyRefused (reason first) if the
    scheme is not http(s) or any address is loopback, private, link-local, multicast, reserved
    or otherwise not global and not inside an allowed network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyRefused("ssrf: only http and https URLs are fetched")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise PolicyRefused("ssrf: the URL's port is not a port number") from None
    try:
        infos = resolve(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise PolicyRefused("dns: the host does not resolve") from None
    addresses = sorted({info[4][0] for info in infos})
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        why = forbidden_address(address)
        if why and not any(address in network for network in allowed_networks):
            raise PolicyRefused(f"ssrf: {parts.hostname} resolves to a {why} address")
    return addresses
