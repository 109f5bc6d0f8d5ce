"""Web archives (WARC, read with warcio): the pages and image captures of a crawl made
elsewhere, with what the crawler itself records of a page and an image. Two passes over the
file: the first keeps only what pages say (titles, alt text, robots directives) and who
referred to what, the second yields the images one at a time, so that an archive of any size
is read in bounded memory."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import ChunkedDataException
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParserException

from facesearch.crawl.extract import STOP_IMAGES, normalise_url, parse_page, robots_directives


# What reading a damaged, truncated or foreign file raises: the file system's errors, those of
# the gzip and header parsing, and warcio's own.
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ArchiveLoadFailed, ChunkedDataException,
               StatusAndHeadersParserException)


class UnreadableArchive(Exception):
    """The file cannot be read as a WARC archive; the message says why, for the user."""


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except READ_ERRORS as exc:
        if isinstance(exc, OSError) and exc.strerror:
            raise UnreadableArchive(f"cannot read {path.name}: {exc.strerror}") from exc
        raise UnreadableArchive(f"{path.name} is not a readable WARC file ({type(exc).__name__})") from exc


@dataclass(frozen=True)
class ArchivedPage:
    title: str
    alt_text: dict[str, str]  # image URL -> its alt text on this page
    stops_images: bool  # noimageindex, noai, ... in a robots meta tag or X-Robots-Tag


@dataclass(frozen=True)
class ArchivedImage:
    url: str  # the capture's target, normalised
    body: bytes
    captured_at: str | None  # WARC-Date
    record_id: str | None
    page_url: str | None  # the referring page, else the first archived page embedding it
    page: ArchivedPage | None  # that page, if the archive holds it
    stops_images: bool  # its own X-Robots-Tag forbids indexing it


class ArchiveIndex:
    """What the first pass learns: pages by URL, and which page referred to each image.
    Raises UnreadableArchive for a file that is not a readable WARC archive."""

    def __init__(self, path: Path, max_page_bytes: int) -> None:
        self.pages: dict[str, ArchivedPage] = {}
        self.referer: dict[str, str] = {}  # target URL -> Referer of its request record
        self.embedded_in: dict[str, str] = {}  # image URL -> first archived page holding it
        with _reading(path), open(path, "rb") as stream:
            for record in ArchiveIterator(stream):
                target = normalise_url(record.rec_headers.get_header("WARC-Target-URI") or "")
                if target is None or not record.http_headers:
                    continue
                if record.rec_type == "request":
                    referer = normalise_url(record.http_headers.get_header("Referer") or "")
                    if referer:
                        self.referer[target] = referer
                elif _captured(record, "text/html") and target not in self.pages:
                    html = record.content_stream().read(max_page_bytes).decode("utf-8", "replace")
                    parsed = parse_page(html, target)
                    header = robots_directives(record.http_headers.get_header("X-Robots-Tag") or "")
                    self.pages[target] = ArchivedPage(
                        parsed.title, {i.url: i.alt for i in parsed.images},
                        bool((parsed.directives | header) & STOP_IMAGES))
                    for image in parsed.images:
                        self.embedded_in.setdefault(image.url, target)

    def images(self, path: Path, max_bytes: int) -> Iterator[ArchivedImage]:
        """The second pass: each image capture (a 200 response of image/*), in archive order,
        its body read up to max_bytes + 1 (so that a larger one can be refused). Raises
        UnreadableArchive where the file is damaged; what was yielded before stands."""
        with _reading(path), open(path, "rb") as stream:
            for record in ArchiveIterator(stream):
                url = normalise_url(record.rec_headers.get_header("WARC-Target-URI") or "")
                if url is None or not record.http_headers or not _captured(record, "image/"):
                    continue
                page_url = self.referer.get(url) or self.embedded_in.get(url)
                header = robots_directives(record.http_headers.get_header("X-Robots-Tag") or "")
                yield ArchivedImage(
                    url, record.content_stream().read(max_bytes + 1),
                    record.rec_headers.get_header("WARC-Date"),
                    record.rec_headers.get_header("WARC-Record-ID"), page_url,
                    self.pages.get(page_url or ""), bool(header & STOP_IMAGES))


def _captured(record, content_type: str) -> bool:  # noqa: ANN001 - warcio's ArcWarcRecord
    return (record.rec_type == "response" and record.http_headers.get_statuscode() == "200"
            and (record.http_headers.get_header("Content-Type") or "").lower().startswith(content_type))
