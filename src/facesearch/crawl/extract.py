"""What a crawled HTML page offers: its title, robots directives, links to follow and images
to collect with their provenance. Pure functions over text, tolerant of broken HTML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

# Robots directives that stop image collection: noindex (the page), noimageindex (its
# images), noai and noimageai (no use for machine learning, which a face template is).
STOP_IMAGES = frozenset({"noindex", "noimageindex", "noai", "noimageai", "none"})
# Directives that carry a value after a colon, unlike "googlebot: noindex" (a user agent).
VALUED = ("max-image-preview", "max-snippet", "max-video-preview", "unavailable_after")


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
        return not self.directives & STOP_IMAGES

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
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    netloc = name if port in (None, 80 if scheme == "http" else 443) else f"{name}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def robots_directives(value: str) -> set[str]:
    """Directives of a robots meta tag or X-Robots-Tag header ("noindex, nofollow"); a header
    scoped to a user agent ("otherbot: noindex") is read as applying to every crawler."""
    found = set()
    for part in value.lower().split(","):
        part = part.strip()
        if not part.startswith(VALUED):
            part = part.split(":")[-1].strip()
        if part:
            found.add(part)
    return found


class _Parser(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base, self.page = base, Page()
        self._in_title = False
        self._title_done = False  # only the document's first <title>, not an SVG's
        self._svg_depth = 0
        self._seen_images: set[str] = set()
        self._picture_from: int | None = None  # inside <picture>: the index of its first image

    def _image(self, url: str | None, alt: str = "") -> None:
        if not (url or "").strip():  # an empty src would resolve to the page itself
            return
        found = normalise_url(url or "", self.base)
        if found and found not in self._seen_images:
            self._seen_images.add(found)
            self.page.images.append(ImageRef(found, alt.strip()[:500]))

    def _srcset(self, value: str | None, alt: str = "") -> None:
        # As the HTML spec parses it: a URL runs to whitespace (it may hold commas, as CDN
        # URLs do); a comma ending it, or one after its descriptors, ends the candidate.
        text, position = value or "", 0
        while position < len(text):
            match = re.compile(r"[\s,]*(\S+)").match(text, position)
            if match is None:
                break
            url, position = match.group(1), match.end()
            if url.endswith(","):
                url = url.rstrip(",")
            else:
                comma = text.find(",", position)
                position = len(text) if comma < 0 else comma + 1
            self._image(url, alt)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "base" and a.get("href"):
            self.base = urljoin(self.base, a["href"])
        elif tag == "svg":
            self._svg_depth += 1
        elif tag == "title" and not self._title_done and not self._svg_depth:
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
            if self._picture_from is not None and a.get("alt", "").strip():
                # A <picture>'s <img> describes its every source: they share its alt text.
                images = self.page.images
                images[self._picture_from:] = [ImageRef(i.url, i.alt or a["alt"].strip()[:500])
                                               for i in images[self._picture_from:]]
        elif tag == "picture":
            self._picture_from = len(self.page.images)
        elif tag == "source":  # inside <picture>
            self._srcset(a.get("srcset"))
        elif tag == "a" and a.get("href", "").strip():
            found = normalise_url(a.get("href", ""), self.base)
            if found and "nofollow" not in (a.get("rel") or "").lower().split():
                self.page.links.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title, self._title_done = False, True
        elif tag == "svg" and self._svg_depth:
            self._svg_depth -= 1
        elif tag == "picture":
            self._picture_from = None

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
