"""SSRF guard: only hosts that resolve to public addresses only are connected to.

No test uses DNS or the network: each injects its own resolver (a table, or getaddrinfo
restricted to numeric hosts with AI_NUMERICHOST). The check at connect time, over real
sockets, is tested in test_fetch_policy.py."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import pytest

from facesearch.crawl.guard import check_host, forbidden_address, parse_networks
from facesearch.errors import PolicyRefused

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


class FakeResolver:
    """getaddrinfo over a fixed table: host -> addresses; unknown hosts do not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int, type: int = 0, **_: object) -> list[tuple]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos = []
        for address in self.table[host]:
            if ":" in address:
                infos.append((socket.AF_INET6, type, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, type, 6, "", (address, port)))
        return infos


def numeric_only(host: str, port: int, type: int = 0, **_: object) -> list[tuple]:
    """The real getaddrinfo, but for IP literals only: AI_NUMERICHOST never asks DNS."""
    return socket.getaddrinfo(host, port, type=type, flags=socket.AI_NUMERICHOST)


def refusal(host: str, resolve: Callable, allowed: list | None = None) -> str:
    with pytest.raises(PolicyRefused) as raised:
        check_host(host, 80, allowed or [], resolve=resolve)
    return str(raised.value)


def test_a_host_with_public_addresses_is_allowed_and_its_addresses_returned_in_order() -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V6, PUBLIC_V4, PUBLIC_V6]})
    assert check_host("photos.example", 80, [], resolve=resolve) == [PUBLIC_V6, PUBLIC_V4]
    assert resolve.calls == [("photos.example", 80)]


def test_the_resolver_is_asked_for_the_port_to_connect_to() -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V4]})
    check_host("photos.example", 443, [], resolve=resolve)
    check_host("photos.example", 8080, [], resolve=resolve)
    assert resolve.calls == [("photos.example", 443), ("photos.example", 8080)]


FORBIDDEN = [
    "127.0.0.1", "127.255.255.254",  # loopback
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1",
    "192.168.255.255",  # private
    "169.254.169.254", "169.254.0.1",  # link-local, cloud metadata
    "224.0.0.1", "239.255.255.250",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "0.0.0.0",  # unspecified
    "100.64.0.1", "100.127.255.254",  # shared address space (CGNAT)
    "192.0.2.10", "198.18.0.1",  # documentation, benchmarking
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1",
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_a_host_resolving_to_a_non_public_address_is_refused_as_ssrf(address: str) -> None:
    resolve = FakeResolver({"inside.example": [address]})
    message = refusal("inside.example", resolve)
    assert message.startswith("ssrf:")
    assert "inside.example" in message
    assert forbidden_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", [
    "8.8.8.8", PUBLIC_V4, "11.0.0.1", "172.15.255.255", "172.32.0.1", "192.167.255.255",
    "192.169.0.1", "100.63.255.255", "100.128.0.1", "169.253.255.255", "223.255.255.254",
    PUBLIC_V6, "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_next_to_forbidden_ranges_are_allowed(address: str) -> None:
    assert forbidden_address(ipaddress.ip_address(address)) is None
    resolve = FakeResolver({"public.example": [address]})
    assert check_host("public.example", 443, [], resolve=resolve) == [address]


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "non-global"),
])
def test_the_reason_names_the_most_specific_kind_of_address(address: str, kind: str) -> None:
    assert forbidden_address(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("address", "kind"), [
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::169.254.169.254", "link-local"),  # NAT64 of the cloud metadata address
    ("64:ff9b::10.0.0.1", "private"),
    ("64:ff9b::100.64.0.1", "non-global"),
    ("2002:7f00:1::1", "loopback (tunnelled)"),  # 6to4 through 127.0.0.1
    ("2002:a9fe:a9fe::", "link-local (tunnelled)"),  # 6to4 through 169.254.169.254
    ("2002:c0a8:101:1::1", "private (tunnelled)"),  # 6to4 through 192.168.1.1
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback (tunnelled)"),  # Teredo, client 127.0.0.1
])
def test_an_ipv6_address_standing_for_a_forbidden_ipv4_one_is_refused_as_that_address(
        address: str, kind: str) -> None:
    assert forbidden_address(ipaddress.ip_address(address)) == kind
    resolve = FakeResolver({"nat64.example": [address]})
    assert refusal("nat64.example", resolve).startswith("ssrf:")
    assert refusal(address, numeric_only).startswith("ssrf:")


@pytest.mark.parametrize("address", ["64:ff9b:1:2:3:4:7f00:1", "64:ff9b:1:ab::8.8.4.4",
                                     "64:ff9b:1:0:a:0:100:808"])
def test_a_local_use_nat64_address_is_refused_whatever_its_last_32_bits(address: str) -> None:
    """Under a /64 local-use prefix (RFC 8215) 64:ff9b:1:0:a:0:100:808 is 10.0.0.1, not the
    1.0.8.8 of its last 32 bits: where the IPv4 address sits depends on the operator's prefix."""
    assert forbidden_address(ipaddress.ip_address(address)) is not None
    assert refusal(address, numeric_only).startswith("ssrf:")


@pytest.mark.parametrize("address", ["64:ff9b::8.8.8.8", "64:ff9b::5db8:d70e", "2002:808:808::1"])
def test_nat64_and_6to4_addresses_of_public_ipv4_addresses_are_allowed(address: str) -> None:
    assert forbidden_address(ipaddress.ip_address(address)) is None
    resolve = FakeResolver({"v6only.example": [address]})
    assert check_host("v6only.example", 443, [], resolve=resolve) == [address]


def test_the_cloud_metadata_address_is_refused_even_when_written_as_a_literal() -> None:
    for host in ("169.254.169.254", "::1", "10.0.0.1", "::ffff:127.0.0.1", "127.1",
                 "2130706433", "0x7f.1"):
        assert refusal(host, numeric_only).startswith("ssrf:"), host


def test_a_link_local_address_with_a_zone_is_refused() -> None:
    resolve = FakeResolver({"zone.example": ["fe80::1%eth0"]})
    assert refusal("zone.example", resolve).startswith("ssrf:")
    assert refusal("fe80::1%eth0", numeric_only)  # a zone in a literal: refused too


def test_a_host_with_one_public_and_one_private_address_is_refused() -> None:
    resolve = FakeResolver({"rebind.example": [PUBLIC_V4, "10.0.0.1"],
                            "rebind6.example": [PUBLIC_V6, "::1"]})
    assert "rebind.example" in refusal("rebind.example", resolve)
    assert refusal("rebind6.example", resolve).startswith("ssrf:")


def test_an_allowed_network_lets_loopback_through_and_nothing_else() -> None:
    allowed = parse_networks(["127.0.0.1/32"])
    resolve = FakeResolver({"site.test": ["127.0.0.1"], "other.test": ["127.0.0.2"],
                            "private.test": ["10.0.0.1"], "v6.test": ["::1"],
                            "mixed.test": ["127.0.0.1", "10.0.0.1"]})
    assert check_host("site.test", 8000, allowed, resolve=resolve) == ["127.0.0.1"]
    assert check_host("127.0.0.1", 8000, allowed, resolve=numeric_only) == ["127.0.0.1"]
    for host in ("other.test", "private.test", "v6.test", "mixed.test"):
        assert refusal(host, resolve, allowed).startswith("ssrf:"), host


def test_an_allowed_private_network_covers_its_whole_range() -> None:
    allowed = parse_networks(["10.0.0.0/8", "fd00::/8"])
    resolve = FakeResolver({"a.test": ["10.1.2.3"], "b.test": ["fd12::1"],
                            "c.test": ["192.168.0.1"]})
    assert check_host("a.test", 80, allowed, resolve=resolve) == ["10.1.2.3"]
    assert check_host("b.test", 80, allowed, resolve=resolve) == ["fd12::1"]
    assert refusal("c.test", resolve, allowed).startswith("ssrf:")


def test_a_host_that_does_not_resolve_is_refused_with_a_dns_reason() -> None:
    assert refusal("nowhere.invalid", FakeResolver({})).startswith("dns:")
    assert refusal("empty.example", FakeResolver({"empty.example": []})).startswith("dns:")


def test_a_resolver_failing_on_an_invalid_name_is_a_dns_refusal() -> None:
    def bad_idna(host: str, port: int, type: int = 0, **_: object) -> list[tuple]:
        raise UnicodeError("label too long")

    assert refusal("a" * 70 + ".example", bad_idna).startswith("dns:")


def test_parse_networks_skips_blanks_and_accepts_host_bits() -> None:
    networks = parse_networks(["127.0.0.1/32", " ", "", "10.1.2.3/8", " ::1/128 "])
    assert networks == [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
                        ipaddress.ip_network("::1/128")]
    with pytest.raises(ValueError):
        parse_networks(["not-a-network"])
