"""A crawl job's allowlist: which pages it may fetch. Entries are matched against the parsed
URL (scheme, host, port, path segments), never as text, so that neither a host name inside
a path (https://evil.test/.example.com/) nor a longer host (photos.example.evil.com) passes
for the allowed host.

Forms (README, "Collecting from the web"):
    example.com                   any http(s) URL on the host or its subdomains, any port
    *.example.com                 the same on its subdomains only
    https://example.com/photos    that scheme, host and port; paths /photos and /photos/...
                                  (whole segments: not /photos2)
    https://*.example.com/*       any subdomain (one label or more, not example.com itself);
                                  * in a path segment matches within that segment, and a
                                  final * matches whatever follows
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Entry:
    schemes: frozenset[str]
    host: str  # lower case; "*.example.com" for subdomains only
    subdomains: bool  # a bare host name allows its subdomains too
    port: int | None  # None: any port
    segments: tuple[str, ...]  # path prefix, by segment; may hold * patterns
    query: str | None  # if the entry has one, the URL's must equal it


def _segments(path: str) -> tuple[str, ...]:
    """Path segments with dot segments resolved (also written %2e, and separators written
    %2f or %5c, which a server may decode), so that /photos/..%2fadmin is /admin."""
    path = re.sub("%2e", ".", path, flags=re.IGNORECASE)
    path = re.sub("%2f|%5c", "/", path, flags=re.IGNORECASE)
    return tuple(s for s in posixpath.normpath("/" + path).split("/") if s)


def _valid_host(host: str) -> bool:
    """A host name or address, with * only as a whole first label (*.example.com)."""
    rest = host[2:] if host.startswith("*.") else host
    if ":" in rest:  # an IPv6 address; a port belongs in the URL form (https://host:8080/)
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            return False
        return rest == host
    return bool(rest) and not any(c in rest for c in "*/@[] ")


def _split_netloc(netloc: str) -> tuple[str, str] | None:
    """(host, port text) of an entry's netloc; urlsplit's hostname would do, but its port
    refuses the * of a pattern."""
    if netloc.startswith("["):  # an IPv6 literal
        host, _, rest = netloc[1:].partition("]")
        if rest and not rest.startswith(":"):
            return None
        return host, rest[1:]
    host, _, port = netloc.partition(":")
    return host, port


def parse_entry(entry: str) -> _Entry | None:
    """An allowlist entry, or None if it is not one of the forms above."""
    entry = entry.strip()
    if "://" not in entry:
        host = entry.lower().rstrip(".")
        if not _valid_host(host):
            return None
        return _Entry(frozenset(DEFAULT_PORTS), host, not host.startswith("*."), None, (), None)
    parts = urlsplit(entry)
    scheme = parts.scheme.lower()
    split = _split_netloc(parts.netloc.lower())
    if scheme not in DEFAULT_PORTS or split is None:
        return None
    host, port = split[0].rstrip("."), split[1]
    if not _valid_host(host) or (port and not port.isdigit()):
        return None
    return _Entry(frozenset({scheme}), host, False, int(port) if port else DEFAULT_PORTS[scheme],
                  _segments(parts.path), parts.query or None)


def _host_matches(pattern: str, host: str, subdomains: bool) -> bool:
    if pattern.startswith("*."):  # one label or more before the rest, compared by labels
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern or (subdomains and host.endswith("." + pattern))


def _path_matches(prefix: tuple[str, ...], path: tuple[str, ...]) -> bool:
    for position, pattern in enumerate(prefix):
        if pattern == "*" and position == len(prefix) - 1:
            return True  # a final * matches the rest, whatever it is (nothing too)
        if position >= len(path) or not fnmatchcase(path[position], pattern):
            return False
    return True


def matches(entry: _Entry, url: str) -> bool:
    """Whether url (an absolute http(s) URL) is inside the entry."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in entry.schemes or not host:
        return False
    if entry.port is not None and (port or DEFAULT_PORTS[scheme]) != entry.port:
        return False
    if not _host_matches(entry.host, host, entry.subdomains):
        return False
    if entry.query is not None and parts.query != entry.query:
        return False
    return _path_matches(entry.segments, _segments(parts.path))


def allowed_by(url: str, allow: list[str]) -> bool:
    """Whether url is inside any entry of the allowlist; entries of no known form allow
    nothing (start_crawl refuses them, see invalid_entries)."""
    return any(entry is not None and matches(entry, url) for entry in map(parse_entry, allow))


def invalid_entries(allow: list[str]) -> list[str]:
    return [entry for entry in allow if parse_entry(entry) is None]
