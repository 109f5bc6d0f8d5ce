"""What a crawled HTML page offers: its title, robots directives, links to follow and images
to collect with their provenance. Pure functions over text, tolerant of broken HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

# Robots directives that stop collection: noindex (the page), noimageindex (its images) and
# noai (no use for machine learning, which a face template is).
STOPPING = ("noindex", "noimageindex", "noai", "none")


@dataclass(frozen=True)
class ImageRef:
    url: str
    alt: str = ""


@dataclass
class Page:
    title: str = ""
    directives: set[str] = field(default_factory=set)  # robots meta directives, lower case
    links: list[str] = field(default_factory=list)  # absolute, normalised, in page order
    images: list[ImageRef] = field(default_factory=list)  # absolute, normalised, deduplicated

    @property
    def images_allowed(self) -> bool:
        return not self.directives & {"noindex", "noimageindex", "noai", "none"}

    @property
    def follow(self) -> bool:
        return not self.directives & {"nofollow", "none"}


def normalise_url(url: str, base: str = "") -> str | None:
    """Absolute http(s) URL without fragment, scheme and host lower case, default port and
    empty path made explicit; None for anything else (mailto:, data:, javascript:, ...)."""
    try:
        absolute = urldefrag(urljoin(base, url.strip()))[0]
        parts = urlsplit(absolute)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    netloc = host if port in (None, 80 if scheme == "http" else 443) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # IPv6 literal
        netloc = f"[{host}]" + (f":{port}" if port not in (None, 80, 443) else "")
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def robots_directives(value: str) -> set[str]:
    """Directives of a robots meta tag or X-Robots-Tag header ("noindex, nofollow"); a header
    scoped to a user agent ("otherbot: noindex") is read as applying to every crawler."""
    found = set()
    for part in value.lower().split(","):
        part = part.split(":")[-1].strip()
        if part:
            found.add(part)
    return found


class _Parser(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base, self.page = base, Page()
        self._in_title = False
        self._seen_images: set[str] = set()

    def _image(self, url: str | None, alt: str = "") -> None:
        if not (url or "").strip():  # an empty src would resolve to the page itself
            return
        found = normalise_url(url or "", self.base)
        if found and found not in self._seen_images:
            self._seen_images.add(found)
            self.page.images.append(ImageRef(found, alt.strip()[:500]))

    def _srcset(self, value: str | None, alt: str = "") -> None:
        for candidate in (value or "").split(","):
            words = candidate.split()
            if words:
                self._image(words[0], alt)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "base" and a.get("href"):
            self.base = urljoin(self.base, a["href"])
        elif tag == "title":
            self._in_title = True
        elif tag == "meta":
            name = (a.get("name") or "").lower()
            if name in ("robots", "facesearch"):
                self.page.directives |= robots_directives(a.get("content", ""))
            if (a.get("property") or name).lower() in ("og:image", "og:image:url", "og:image:secure_url"):
                self._image(a.get("content"))
        elif tag == "link" and "image_src" in (a.get("rel") or "").lower().split():
            self._image(a.get("href"))
        elif tag == "img":
            self._image(a.get("src"), a.get("alt", ""))
            self._srcset(a.get("srcset"), a.get("alt", ""))
        elif tag == "source":  # inside <picture>
            self._srcset(a.get("srcset"))
        elif tag == "a" and a.get("href", "").strip():
            found = normalise_url(a.get("href", ""), self.base)
            if found and "nofollow" not in (a.get("rel") or "").lower().split():
                self.page.links.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and len(self.page.title) < 500:
            self.page.title += data


def parse_page(html: str, url: str) -> Page:
    """Parse an HTML page fetched from url. Broken markup yields what could be read."""
    parser = _Parser(url)
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser gives up on some garbage; keep what it read
        pass
    page = parser.page
    page.title = " ".join(page.title.split())[:500]
    page.links = list(dict.fromkeys(page.links))
    return page
