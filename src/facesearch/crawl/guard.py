"""SSRF protection: the crawler connects only to addresses that are public, unless the
operator allows a network explicitly, and checks the very address it connects to."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable

import httpcore
import httpx

from facesearch.errors import PolicyRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list]  # socket.getaddrinfo's signature


# The NAT64 well-known prefix (RFC 6052): a gateway translates such an address to the IPv4
# address in its last 32 bits, which is where the connection ends up. The local-use prefix
# (64:ff9b:1::/48, RFC 8215) embeds the IPv4 address where the operator's prefix length puts
# it, which cannot be known here: it stays refused as reserved.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def translated_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:a.b.c.d) or NAT64."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def tunnel_endpoints(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses a tunnelled IPv6 address is relayed through: 6to4 (2002::/16) and
    Teredo (2001::/32, server and client)."""
    found = [address.sixtofour] if address.sixtofour else []
    return found + list(address.teredo or ())


def forbidden_address(address: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None if it is a public unicast address.
    An IPv6 address that stands for an IPv4 one (mapped, NAT64) is judged as that address;
    one that tunnels through IPv4 (6to4, Teredo) also by its endpoints."""
    if isinstance(address, ipaddress.IPv6Address):
        translated = translated_ipv4(address)
        if translated is not None:
            address = translated
        else:
            for endpoint in tunnel_endpoints(address):
                why = forbidden_address(endpoint)
                if why:
                    return f"{why} (tunnelled)"
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


def check_host(host: str, port: int, allowed_networks: list,
               resolve: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses host resolves to, in the resolver's order of preference, all checked;
    PolicyRefused (reason first: dns or ssrf) if it does not resolve or any address is
    loopback, private, link-local, multicast, reserved or otherwise not global and not
    inside an allowed network."""
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise PolicyRefused("dns: the host does not resolve") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise PolicyRefused("dns: the host does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        why = forbidden_address(address)
        if why and not any(address in network for network in allowed_networks):
            raise PolicyRefused(f"ssrf: {host} resolves to a {why} address")
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for the crawler: it resolves the host itself, refuses
    (PolicyRefused) unless check_host allows every address, and connects to one of those
    addresses, so that no second DNS answer (rebinding) can send the connection elsewhere.
    httpcore then starts TLS with the URL's host name as server_hostname: certificates are
    still verified against the name."""

    def __init__(self, allowed_networks: list, resolve: Resolver = socket.getaddrinfo) -> None:
        self.allowed_networks = allowed_networks
        self.resolve = resolve
        self.backend = httpcore.AnyIOBackend()  # what httpcore uses under asyncio

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        try:  # the connect timeout covers resolving, as in httpcore's own backend
            addresses = await asyncio.wait_for(asyncio.to_thread(
                check_host, host, port, self.allowed_networks, self.resolve), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from None
        *others, last = addresses
        for address in others:
            with contextlib.suppress(httpcore.ConnectError):  # refused or unreachable: the next
                return await self.backend.connect_tcp(address, port, timeout, local_address,
                                                      socket_options)
        return await self.backend.connect_tcp(last, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


def guarded_transport(allowed_networks: list,
                      resolve: Resolver = socket.getaddrinfo) -> httpx.AsyncHTTPTransport:
    """An httpx transport, with httpx's default limits and TLS verification, whose every
    connection goes through GuardedBackend. A client given it ignores proxy variables, as it
    should: a proxy would resolve and connect on its own."""
    transport = httpx.AsyncHTTPTransport()
    # httpx 0.28 has no parameter for httpcore's network backend; the pool it built (with its
    # limits, TLS context and HTTP versions) takes ours here, before any connection exists.
    transport._pool._network_backend = GuardedBackend(allowed_networks, resolve)
    return transport
