"""SSRF guard: only http(s) URLs whose host resolves to public addresses only are fetched.

No test uses DNS or the network: each injects its own resolver (a table, or getaddrinfo
restricted to numeric hosts with AI_NUMERICHOST)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import pytest

from facesearch.crawl.guard import check_url, forbidden_address, parse_networks
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


def refusal(url: str, resolve: Callable, allowed: list | None = None) -> str:
    with pytest.raises(PolicyRefused) as raised:
        check_url(url, allowed or [], resolve=resolve)
    return str(raised.value)


def test_a_host_with_a_public_address_is_allowed_and_its_addresses_returned() -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V4, PUBLIC_V6]})
    assert check_url("http://photos.example/a.jpg", [], resolve=resolve) == sorted(
        [PUBLIC_V4, PUBLIC_V6])
    assert resolve.calls == [("photos.example", 80)]


def test_the_resolver_is_asked_for_the_urls_port() -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V4]})
    check_url("https://photos.example/a.jpg", [], resolve=resolve)
    check_url("http://photos.example:8080/a.jpg", [], resolve=resolve)
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
    message = refusal("http://inside.example/a.jpg", resolve)
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
    assert check_url("https://public.example/", [], resolve=resolve) == [address]


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


def test_the_cloud_metadata_address_is_refused_even_when_written_as_a_literal() -> None:
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:1/x.jpg",
                "http://10.0.0.1/x.jpg", "http://[::ffff:127.0.0.1]/", "http://127.1/",
                "http://2130706433/", "http://0x7f.1/"):
        assert refusal(url, numeric_only).startswith("ssrf:"), url


def test_a_link_local_address_with_a_zone_is_refused() -> None:
    resolve = FakeResolver({"zone.example": ["fe80::1%eth0"]})
    assert refusal("http://zone.example/", resolve).startswith("ssrf:")
    assert refusal("http://[fe80::1%25eth0]/", numeric_only)  # a zone in a URL: refused too


def test_a_host_with_one_public_and_one_private_address_is_refused() -> None:
    resolve = FakeResolver({"rebind.example": [PUBLIC_V4, "10.0.0.1"],
                            "rebind6.example": [PUBLIC_V6, "::1"]})
    assert "rebind.example" in refusal("http://rebind.example/", resolve)
    assert refusal("http://rebind6.example/", resolve).startswith("ssrf:")


def test_an_allowed_network_lets_loopback_through_and_nothing_else() -> None:
    allowed = parse_networks(["127.0.0.1/32"])
    resolve = FakeResolver({"site.test": ["127.0.0.1"], "other.test": ["127.0.0.2"],
                            "private.test": ["10.0.0.1"], "v6.test": ["::1"],
                            "mixed.test": ["127.0.0.1", "10.0.0.1"]})
    assert check_url("http://site.test:8000/a.jpg", allowed, resolve=resolve) == ["127.0.0.1"]
    assert check_url("http://127.0.0.1:8000/", allowed, resolve=numeric_only) == ["127.0.0.1"]
    for url in ("http://other.test/", "http://private.test/", "http://v6.test/",
                "http://mixed.test/"):
        assert refusal(url, resolve, allowed).startswith("ssrf:"), url


def test_an_allowed_private_network_covers_its_whole_range() -> None:
    allowed = parse_networks(["10.0.0.0/8", "fd00::/8"])
    resolve = FakeResolver({"a.test": ["10.1.2.3"], "b.test": ["fd12::1"],
                            "c.test": ["192.168.0.1"]})
    assert check_url("http://a.test/", allowed, resolve=resolve) == ["10.1.2.3"]
    assert check_url("http://b.test/", allowed, resolve=resolve) == ["fd12::1"]
    assert refusal("http://c.test/", resolve, allowed).startswith("ssrf:")


@pytest.mark.parametrize("url", [
    "ftp://photos.example/a.jpg", "file:///etc/passwd", "gopher://photos.example/",
    "javascript:alert(1)", "data:image/jpeg;base64,AAAA", "/relative/a.jpg",
    "photos.example/a.jpg", "http:///no-host", ""])
def test_urls_other_than_http_and_https_with_a_host_are_refused_unresolved(url: str) -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V4]})
    assert refusal(url, resolve).startswith("ssrf:")
    assert resolve.calls == []


def test_an_upper_case_scheme_is_still_http() -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V4]})
    assert check_url("HTTPS://photos.example/a.jpg", [], resolve=resolve) == [PUBLIC_V4]


def test_a_host_that_does_not_resolve_is_refused_with_a_dns_reason() -> None:
    message = refusal("http://nowhere.invalid/a.jpg", FakeResolver({}))
    assert message.startswith("dns:")


def test_a_resolver_failing_on_an_invalid_name_is_a_dns_refusal() -> None:
    def bad_idna(host: str, port: int, type: int = 0, **_: object) -> list[tuple]:
        raise UnicodeError("label too long")

    assert refusal("http://" + "a" * 70 + ".example/", bad_idna).startswith("dns:")


@pytest.mark.parametrize("url", ["http://photos.example:99999/a.jpg",
                                 "http://photos.example:port/a.jpg"])
def test_a_url_with_an_invalid_port_is_refused_rather_than_crashing(url: str) -> None:
    resolve = FakeResolver({"photos.example": [PUBLIC_V4]})
    with pytest.raises(PolicyRefused):
        check_url(url, [], resolve=resolve)


def test_parse_networks_skips_blanks_and_accepts_host_bits() -> None:
    networks = parse_networks(["127.0.0.1/32", " ", "", "10.1.2.3/8", " ::1/128 "])
    assert networks == [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
                        ipaddress.ip_network("::1/128")]
    with pytest.raises(ValueError):
        parse_networks(["not-a-network"])
