"""One HTTP fetch, the careful way: every redirect target asked the caller's permission
before it is requested, a byte limit, a timeout, a redirect limit and conditional requests.
Addresses are checked against SSRF when connecting (guard.guarded_transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from facesearch.crawl.extract import normalise_url
from facesearch.errors import PolicyRefused


class FetchRefused(Exception):
    """The URL was not fetched, or not completely: reason is a short keyword for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass
class Fetched:
    url: str  # after redirects
    status: int  # 200, or 304 when a conditional request found it unchanged
    headers: httpx.Headers
    body: bytes

    def text(self) -> str:
        """The body decoded with its declared charset (UTF-8 when none or unknown)."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    max_redirects: int
    timeout: float


async def fetch(client: httpx.AsyncClient, url: str, limits: FetchLimits,
                etag: str | None = None, last_modified: str | None = None,
                permit: Callable[[str], Awaitable[object]] | None = None) -> Fetched:
    """GET url (a normalised http(s) URL) with a client whose transport is
    guard.guarded_transport, following redirects by hand: permit(target) is awaited before
    each target is asked; it raises FetchRefused if the crawler may not fetch it (the caller's
    rule for any URL) and waits out the target host's crawl delay. Raises FetchRefused with
    reason ssrf, dns, redirects, too_large, timeout, network, http_<status> or permit's."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    for hop in range(limits.max_redirects + 1):
        try:
            # The deadline covers the whole request, not each read: a server trickling its
            # answer a byte at a time cannot hold a crawl for longer.
            async with asyncio.timeout(limits.timeout), client.stream(
                    "GET", url, headers=headers, follow_redirects=False,
                    timeout=limits.timeout) as response:
                if not response.has_redirect_location:
                    return await _read(url, response, limits)
                target = normalise_url(urljoin(url, response.headers.get("location", "")))
        except PolicyRefused as exc:  # the transport refused to connect (guard.GuardedBackend)
            raise FetchRefused(exc.message.split(":")[0], exc.message) from None
        except (httpx.TimeoutException, TimeoutError):
            raise FetchRefused("timeout") from None
        except httpx.HTTPError as exc:
            raise FetchRefused("network", type(exc).__name__) from None
        if target is None:
            raise FetchRefused("ssrf", "redirect to a non-http URL")
        if hop == limits.max_redirects:
            break  # no permission asked for a target that will not be fetched
        if permit is not None:
            await permit(target)
        url = target
    raise FetchRefused("redirects", f"more than {limits.max_redirects} redirects")


async def _read(url: str, response: httpx.Response, limits: FetchLimits) -> Fetched:
    if response.status_code == 304:
        return Fetched(url, 304, response.headers, b"")
    if response.status_code != 200:
        raise FetchRefused(f"http_{response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise FetchRefused("too_large", f"{declared} bytes declared")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limits.max_bytes:
            raise FetchRefused("too_large", f"over {limits.max_bytes} bytes")
    return Fetched(url, 200, response.headers, bytes(body))
