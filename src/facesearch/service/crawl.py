"""Collection from the public web: crawl jobs over a named scope, polite and resumable, whose
images go through the same ingest code and policy as local files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from protego import Protego

from facesearch.crawl.allowlist import allowed_by, invalid_entries
from facesearch.crawl.extract import (
    STOP_IMAGES,
    normalise_url,
    parse_page,
    robots_directives,
)
from facesearch.crawl.fetch import FetchLimits, FetchRefused, fetch
from facesearch.crawl.guard import guarded_transport, parse_networks
from facesearch.crawl.warc import ArchiveIndex, UnreadableArchive
from facesearch.errors import FacesearchError, InvalidRequest, NotFound, PolicyRefused
from facesearch.ingest import ImageTask, analyse_batch
from facesearch.service.base import Stopping
from facesearch.service.engine import Engine, IngestSummary
from facesearch.store.crawl import CrawlJob, FrontierUrl
from facesearch.types import Actor


@dataclass
class CrawlProgress:
    """Live figures of one crawl run, for the CLI's view and the server's page."""

    started: float = field(default_factory=time.monotonic)
    pages: int = 0
    images: int = 0
    faces: int = 0
    bytes: int = 0
    problems: Counter = field(default_factory=Counter)  # reason -> count
    hosts: dict[str, dict] = field(default_factory=dict)  # host -> requests, delay

    def rate(self, count: int) -> float:
        return count / max(time.monotonic() - self.started, 1e-9)


@dataclass
class CrawlStatus:
    job: CrawlJob
    counts: dict  # {"page": {state[:reason]: n}, "image": {...}, "totals": {bytes, faces}}
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)  # host -> state -> URLs
    rates: dict[str, float] = field(default_factory=dict)  # pages, images, faces per second


@dataclass
class _Host:
    slots: asyncio.Semaphore  # requests in flight to the host at once (crawl_host_concurrency)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # robots.txt, and request starts
    robots: Protego | None = None
    delay: float = 0.0
    next_at: float = 0.0
    requests: int = 0


@dataclass
class _Outcome:
    state: str  # done, refused, failed, skipped; "fetched" for an image still to ingest
    reason: str = ""
    body: bytes = b""
    url: str = ""  # after redirects
    faces: int = 0  # an unchanged image's faces, already indexed
    etag: str | None = None
    last_modified: str | None = None
    children: list[dict] = field(default_factory=list)  # frontier rows a page adds


# Fetch outcomes that are the crawler's own refusals; any other reason is a failure.
REFUSALS = {"ssrf", "dns", "too_large", "off_allowlist", "robots"}
WARC_BATCH = 32  # images stored per batch, so that an archive is read in bounded memory


async def _take_turn(host: _Host) -> None:
    """Wait until a request to host may start, crawl_delay after the last one started, and
    count it."""
    async with host.lock:
        wait = host.next_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        host.next_at = time.monotonic() + host.delay
        host.requests += 1


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Crawling(Engine):
    # Jobs ------------------------------------------------------------------------------------

    def start_crawl(self, actor: Actor, seeds: list[str], allow: list[str], source: str,
                    purpose: str, max_depth: int = 2, max_pages: int = 200,
                    images: list[str] | None = None) -> CrawlJob:
        """A crawl job over a named scope, queued until run. images: image URLs to collect
        directly (a URL list); they are their own allowlist."""
        self.authorise(actor, "crawl", "crawl.start")
        allow = [a.strip() for a in allow if a.strip()]
        images = [u for u in (normalise_url(x) for x in images or []) if u]
        if not allow and not images:
            self._refuse(actor, "crawl.start", "a crawl needs an allowlist of hosts or URL patterns: "
                         "untargeted scraping of facial images is prohibited (EU AI Act Art. 5(1)(e))")
        self._collecting_source(actor, source, "crawl.start")
        if not purpose.strip():
            raise InvalidRequest("a crawl needs a purpose")
        pages = [normalise_url(s) for s in seeds]
        if any(p is None for p in pages):
            raise InvalidRequest("seeds must be http or https URLs")
        if invalid_entries(allow):
            raise InvalidRequest(f"not an allowlist entry: {invalid_entries(allow)[0]!r} (a host "
                                 "name, a URL prefix, or a pattern with * as a whole first label)")
        if any(not allowed_by(p, allow) for p in pages):
            raise InvalidRequest("every seed must be inside the allowlist")
        if not 0 <= max_depth <= 20 or not 1 <= max_pages <= 1_000_000:
            raise InvalidRequest("depth 0-20 and 1 to 1,000,000 pages")
        with self.store.transaction() as conn:
            job_id = self.crawls.add_job(conn, source=source, purpose=purpose.strip(), seeds=pages + images,
                                         allow=allow or images, max_depth=max_depth,
                                         max_pages=max_pages, created_by=actor.name,
                                         created_at=self.now())
            self.crawls.enqueue(conn, job_id, [{"url": p, "kind": "page", "depth": 0} for p in pages]
                                + [{"url": u, "kind": "image", "depth": 0} for u in images])
            self._audit(conn, actor, "crawl.start", {"job_id": job_id, "source": source,
                                                     "purpose": purpose, "allow": allow,
                                                     "seeds": len(pages), "images": len(images)})
        job = self.crawls.job(job_id)
        assert job is not None
        return job

    def crawl_status(self, actor: Actor, job_id: int) -> CrawlStatus:
        self.authorise(actor, "crawl", "crawl.status")
        job = self.crawls.job(job_id)
        if job is None:
            raise NotFound("no such crawl job")
        counts = self.crawls.counts(job_id)
        hosts: dict[str, Counter] = {}
        for url, state in self.crawls.url_states(job_id):
            hosts.setdefault(host_of(url), Counter())[state] += 1
        # Since the job was created, until it ended (or now): over the whole job, pauses included.
        end = datetime.fromisoformat(job.finished_at) if job.finished_at else self.clock()
        seconds = max((end - datetime.fromisoformat(job.created_at)).total_seconds(), 1.0)
        done = {kind: sum(n for key, n in counts[kind].items() if key.startswith("done"))
                for kind in ("page", "image")}
        rates = {"pages": round(done["page"] / seconds, 3), "images": round(done["image"] / seconds, 3),
                 "faces": round(counts["totals"]["faces"] / seconds, 3)}
        return CrawlStatus(job, counts, {h: dict(c) for h, c in sorted(hosts.items())}, rates)

    def crawl_jobs(self, actor: Actor) -> list[CrawlJob]:
        self.authorise(actor, "crawl", "crawl.status")
        return self.crawls.jobs()

    def set_crawl_state(self, actor: Actor, job_id: int, command: str) -> CrawlJob:
        """pause, resume (queue it to run again) or cancel a job."""
        self.authorise(actor, "crawl", f"crawl.{command}")
        job = self.crawls.job(job_id)
        if job is None:
            raise NotFound("no such crawl job")
        allowed = {"pause": ({"queued", "running"}, "paused"), "resume": ({"paused"}, "queued"),
                   "cancel": ({"queued", "running", "paused"}, "cancelled")}
        if command not in allowed:
            raise InvalidRequest("pause, resume or cancel")
        states, target = allowed[command]
        if job.status not in states:
            raise InvalidRequest(f"the job is {job.status}")
        with self.store.transaction() as conn:
            if not self.crawls.set_status(conn, job_id, target,
                                          self.now() if target == "cancelled" else None, was=states):
                raise InvalidRequest("the job changed meanwhile; look at its status")
            self._audit(conn, actor, f"crawl.{command}", {"job_id": job_id})
        changed = self.crawls.job(job_id)
        assert changed is not None
        return changed

    def run_crawl(self, actor: Actor, job_id: int,
                  progress: Callable[[CrawlProgress], None] | None = None) -> CrawlStatus:
        """Run a queued (or interrupted) job until its frontier is empty, or it is paused or
        cancelled. Safe to run again after a crash: it goes on from the committed frontier."""
        self.authorise(actor, "crawl", "crawl.run")
        job = self.crawls.job(job_id)
        if job is None:
            raise NotFound("no such crawl job")
        if job.status not in ("queued", "running"):
            raise InvalidRequest(f"the job is {job.status}; resume it first" if job.status == "paused"
                                 else f"the job is {job.status}")
        self._collecting_source(actor, job.source, "crawl.run")
        with self.store.transaction() as conn:
            if not self.crawls.set_status(conn, job_id, "running", was={"queued", "running"}):
                raise InvalidRequest("the job changed meanwhile; look at its status")
        live = CrawlProgress()
        asyncio.run(self._crawl(actor, job, live, progress))
        status = self.crawl_status(actor, job_id)
        with self.store.transaction() as conn:
            self._audit(conn, actor, "crawl.run", {"job_id": job_id, "status": status.job.status,
                                                   "pages": live.pages, "images": live.images,
                                                   "faces": live.faces, "bytes": live.bytes,
                                                   "problems": dict(live.problems)})
        return status

    def run_crawl_in_background(self, actor: Actor, job_id: int) -> CrawlJob:
        """Queue a run of the job in the server's background thread; poll crawl_status."""
        self.authorise(actor, "crawl", "crawl.run")
        job = self.crawls.job(job_id)
        if job is None:
            raise NotFound("no such crawl job")
        self.in_background(self._run_quietly, actor, job_id)
        return job

    def _run_quietly(self, actor: Actor, job_id: int) -> None:
        try:
            self.check_stop()  # the server is stopping: the job stays queued
            self.run_crawl(actor, job_id, lambda _: self.check_stop())
        except (FacesearchError, Stopping):
            pass  # refusals are audited by run_crawl; the job's status tells the rest (one
            # stopped with the server between batches stays running: `crawl run` goes on)

    # The crawl loop ------------------------------------------------------------------------------

    async def _crawl(self, actor: Actor, job: CrawlJob, live: CrawlProgress,
                     progress: Callable[[CrawlProgress], None] | None) -> None:
        s = self.settings
        limits = FetchLimits(s.crawl_max_bytes, s.crawl_max_redirects, s.crawl_timeout_seconds)
        hosts: dict[str, _Host] = {}
        concurrency = max(1, s.crawl_concurrency)
        inflight = asyncio.Semaphore(concurrency)
        transport = guarded_transport(parse_networks(s.crawl_allowed_networks))
        async with httpx.AsyncClient(headers={"User-Agent": s.crawl_user_agent},
                                     transport=transport) as client:
            while True:
                current = self.crawls.job(job.id)
                if current is None or current.status != "running":
                    return
                # Twice as many URLs as may be fetched at once, so that hosts waiting out
                # their delay leave others to fetch.
                batch = self.crawls.next_queued(job.id, concurrency * 2)
                if not batch:
                    with self.store.transaction() as conn:  # unless paused or cancelled just now
                        self.crawls.set_status(conn, job.id, "done", self.now(), was={"running"})
                    return
                outcomes = await asyncio.gather(*(
                    self._visit(client, job, url, hosts, limits, inflight, live) for url in batch))
                self._commit(actor, job, batch, outcomes, live)
                for host, state in hosts.items():
                    live.hosts[host] = {"requests": state.requests, "delay": state.delay}
                if progress:
                    progress(live)

    async def _host(self, client: httpx.AsyncClient, job: CrawlJob, url: str,
                    hosts: dict[str, _Host], limits: FetchLimits) -> _Host:
        """The host's state, reading its robots.txt first (once per job, kept in the database
        so that a resumed crawl obeys the same rules)."""
        name = host_of(url)
        if name not in hosts:
            hosts[name] = _Host(asyncio.Semaphore(max(1, self.settings.crawl_host_concurrency)))
        host = hosts[name]
        if host.robots is None:
            async with host.lock:
                if host.robots is None:
                    text = self.crawls.robots(job.id, name)
                    if text is None:
                        text = await self._fetch_robots(client, name, limits, host)
                        self.crawls.save_robots(job.id, name, text, self.now())
                        text = self.crawls.robots(job.id, name) or ""
                    host.robots = Protego.parse(text)
                    delay = host.robots.crawl_delay(self.settings.crawl_user_agent)
                    host.delay = max(self.settings.crawl_delay_seconds, float(delay or 0))
                    host.next_at = time.monotonic() + host.delay
        return host

    async def _fetch_robots(self, client: httpx.AsyncClient, name: str, limits: FetchLimits,
                            host: _Host) -> str:
        try:
            host.requests += 1
            got = await fetch(client, f"{name}/robots.txt", limits)
            return got.body.decode("utf-8", "replace")
        except FetchRefused as exc:
            if exc.reason in ("ssrf", "dns"):
                raise  # the host itself is refused
            # No robots.txt (4xx) allows everything; an unreachable one (5xx, timeout) forbids
            # everything for now, as RFC 9309 asks.
            return "" if exc.reason.startswith("http_4") else "User-agent: *\nDisallow: /\n"

    async def _permit(self, client: httpx.AsyncClient, job: CrawlJob, hosts: dict[str, _Host],
                      limits: FetchLimits, kind: str, url: str) -> _Host:
        """May the crawler fetch url, a frontier URL or a redirect target? A page must be
        inside the job's allowlist (images may be hosted anywhere), and the robots.txt of
        the host it is on must allow it. Returns the host's state; raises FetchRefused
        (off_allowlist, robots, or ssrf/dns when the host itself is refused)."""
        if kind == "page" and not allowed_by(url, job.allow):
            raise FetchRefused("off_allowlist", url)
        host = await self._host(client, job, url, hosts, limits)
        assert host.robots is not None
        if not host.robots.can_fetch(url, self.settings.crawl_user_agent):
            raise FetchRefused("robots", url)
        return host

    async def _visit(self, client: httpx.AsyncClient, job: CrawlJob, url: FrontierUrl,
                     hosts: dict[str, _Host], limits: FetchLimits, inflight: asyncio.Semaphore,
                     live: CrawlProgress) -> _Outcome:
        permit = partial(self._permit, client, job, hosts, limits, url.kind)

        async def hop(target: str) -> None:
            """A redirect target: allowed as any URL is, and asked once its host's crawl delay
            has passed (it may be another host). The hop stays in the first host's slot."""
            await _take_turn(await permit(target))

        try:
            host = await permit(url.url)
            async with host.slots:
                await _take_turn(host)
                async with inflight:
                    try:
                        got = await fetch(client, url.url, limits, url.etag, url.last_modified, hop)
                    finally:  # the next request also waits crawl_delay after this one ended
                        host.next_at = max(host.next_at, time.monotonic() + host.delay)
        except FetchRefused as exc:
            return _Outcome("refused" if exc.reason in REFUSALS else "failed", exc.reason)
        live.bytes += len(got.body)
        meta = {"url": got.url, "etag": got.headers.get("etag"),
                "last_modified": got.headers.get("last-modified")}
        if got.status == 304:
            meta.update(etag=url.etag, last_modified=url.last_modified)
            if url.kind == "image":
                held = self.store.indexed_image(location=got.url)
                return (_Outcome("done", "not_modified", faces=held.faces, **meta) if held
                        else _Outcome("skipped", "not_modified", **meta))
            outcome = _Outcome("done", "not_modified", **meta)
            for child in self.crawls.found_on(url.url, job.id):  # unchanged: the same children
                if child["kind"] == "page" and url.depth >= job.max_depth:
                    continue
                row = {"url": child["url"], "kind": child["kind"], "depth": url.depth + 1,
                       "page_url": url.url, "page_title": child["page_title"],
                       "alt_text": child["alt_text"]}
                if child["state"] == "refused" and child["reason"] in ("off_allowlist", "noimageindex"):
                    row.update(state="refused", reason=child["reason"])
                outcome.children.append(row)
            return outcome
        header_directives = robots_directives(", ".join(got.headers.get_list("x-robots-tag")))
        if url.kind == "image":
            if header_directives & STOP_IMAGES:
                return _Outcome("refused", "noimageindex", **meta)
            return _Outcome("fetched", body=got.body, **meta)
        if "html" not in got.headers.get("content-type", "text/html"):
            return _Outcome("failed", "not_html", **meta)
        live.pages += 1
        page = parse_page(got.text(), got.url)
        directives = header_directives | page.directives
        outcome = _Outcome("done", **meta)
        refused_images = "noimageindex" if directives & STOP_IMAGES else ""
        for image in page.images:
            outcome.children.append({"url": image.url, "kind": "image", "depth": url.depth + 1,
                                     "page_url": got.url, "page_title": page.title,
                                     "alt_text": image.alt, **({"state": "refused", "reason": refused_images}
                                                               if refused_images else {})})
        if "nofollow" not in directives and "none" not in directives and url.depth < job.max_depth:
            for link in page.links:
                row = {"url": link, "kind": "page", "depth": url.depth + 1, "page_url": got.url}
                if not allowed_by(link, job.allow):
                    row.update(state="refused", reason="off_allowlist")
                outcome.children.append(row)
        return outcome

    def _commit(self, actor: Actor, job: CrawlJob, batch: list[FrontierUrl],
                outcomes: list[_Outcome], live: CrawlProgress) -> None:
        """Record a batch's results in frontier order: pages with the URLs they found, images
        through the ingest path (the same policy as local files)."""
        images = [(u, o) for u, o in zip(batch, outcomes) if o.state == "fetched"]
        faces_of = self._ingest_fetched(actor, job, images, live) if images else {}
        with self.store.transaction() as conn:
            for url, outcome in zip(batch, outcomes):
                state, reason, faces = outcome.state, outcome.reason, outcome.faces
                if state == "fetched":
                    state, reason, faces = faces_of[url.id]
                if reason and state != "done":
                    live.problems[reason] += 1
                self.crawls.finish(conn, url.id, state=state, reason=reason, fetched_at=self.now(),
                                   etag=outcome.etag, last_modified=outcome.last_modified,
                                   bytes=len(outcome.body), faces=faces)
                if outcome.children:
                    self._enqueue_children(conn, job, outcome.children)

    def _enqueue_children(self, conn, job: CrawlJob, children: list[dict]) -> None:  # noqa: ANN001
        pages = self.crawls.pages_known(conn, job.id)
        rows = []
        for row in children:
            if row["kind"] == "page" and "state" not in row:
                if pages >= job.max_pages:
                    row = {**row, "state": "refused", "reason": "page_limit"}
                else:
                    pages += 1
            rows.append(row)
        self.crawls.enqueue(conn, job.id, rows)

    def _ingest_fetched(self, actor: Actor, job: CrawlJob,
                        fetched: list[tuple[FrontierUrl, _Outcome]],
                        live: CrawlProgress) -> dict[int, tuple[str, str, int]]:
        """Analyse and store fetched images; returns, per frontier id, its (state, reason,
        faces indexed)."""
        return self._store_images(actor, "crawl.batch", {"job_id": job.id}, job.source, [
            (url.id, outcome.url, outcome.body, url.page_url,
             {"page_title": url.page_title, "alt_text": url.alt_text, "fetched_at": self.now(),
              "crawl_job": job.id}) for url, outcome in fetched], live)

    def _store_images(self, actor: Actor, action: str, detail: dict, source_name: str,
                      items: list[tuple[int, str, bytes, str | None, dict]],
                      live: CrawlProgress) -> dict[int, tuple[str, str, int]]:
        """Images from the web (key, URL, bytes, page URL, provenance) through the ingest
        path as the writer: deduplicated by content, analysed, suppressed people withheld,
        and committed in one transaction with their audit record (action, with detail), so
        that a killed crawl leaves no face unaudited. Returns per key (state, reason, faces
        indexed). Policy is checked under the writer lock, as for local files: the source may
        have been deleted or barred (lawful basis, excluded jurisdiction) since the crawl
        started; its refusal is audited. Bytes already stored, or stored earlier in the batch,
        are a duplicate: their URL and page are recorded as a sighting of the stored image, in
        the batch's transaction (none where the first copy was withheld or unreadable)."""
        results: dict[int, tuple[str, str, int]] = {}
        with self._writer() as index:
            try:
                source = self._collecting_source(actor, source_name, action)
            except PolicyRefused:
                return {key: ("refused", "source_refused", 0) for key, *_ in items}
            templates = self.store.suppression_templates()
            analysed = []
            in_batch: set[str] = set()
            copies: list[tuple[str, str, str | None]] = []  # (sha256, URL, page URL)
            for key, location, body, page_url, provenance in items:
                sha = hashlib.sha256(body).hexdigest()
                if sha in in_batch:  # the same bytes under another URL of this batch
                    results[key] = ("skipped", "duplicate", 0)
                    copies.append((sha, location, page_url))
                    continue
                in_batch.add(sha)
                known = self.store.indexed_image(sha256=sha)
                if known is not None:
                    # The same bytes under another URL are a duplicate; under this URL they are
                    # this URL's own result, committed just before a crash.
                    results[key] = (("done", "", known.faces) if known.location == location
                                    else ("skipped", "duplicate", 0))
                    copies.append((sha, location, page_url))
                    continue
                with self._analysis_lock:
                    found = analyse_batch([ImageTask(sha, location, body)], self.live_settings)[0]
                analysed.append((key, found, page_url, provenance))
            if not analysed and not copies:
                return results
            added = []
            low_quality: Counter[str] = Counter()
            with self.store.transaction() as conn:
                embedder = self.store.claim_embedder(conn, self.live_embedder)
                within = self.cut_off("suppress").distance if len(templates) else 0.0
                for key, found, page_url, provenance in analysed:
                    summary = IngestSummary()
                    added += self._write_one(conn, found, source, templates, summary,
                                             page_url=page_url, provenance=json.dumps(provenance),
                                             embedder=embedder, withhold_within=within)
                    low_quality += summary.faces_low_quality
                    if found.error:
                        results[key] = ("failed", "bad_image", 0)
                    elif summary.images_indexed == 0:
                        results[key] = ("refused", "suppressed", 0)
                    else:
                        results[key] = ("done", "", summary.faces_indexed)
                        live.images += 1
                        live.faces += summary.faces_indexed
                sightings = sum(self.store.add_sighting(conn, sha, location, page_url, source.id,
                                                        self.now())
                                for sha, location, page_url in copies)
                self._batch_committing(conn, actor, added)
                self._audit(conn, actor, action, {
                    **detail, "source": source.name,
                    "images_indexed": sum(1 for key, *_ in analysed if results[key][0] == "done"),
                    "sightings": sightings,
                    "faces_low_quality": dict(low_quality),
                    "face_ids": [face_id for face_id, _ in added]})
            self._index_added(index, added)
        return results

    # WARC archives ---------------------------------------------------------------------------

    def ingest_warc(self, actor: Actor, path: Path, source: str) -> dict[str, int]:
        """Index the images in a WARC archive (200 responses of image/*) with the provenance a
        crawl records: target URL, referring page (from the request record, else the first
        archived page embedding the image), that page's title and the image's alt text there,
        and the capture date. An image whose page or own X-Robots-Tag forbids indexing images
        is refused (noimageindex), as in a crawl. Returns counts by outcome."""
        self.authorise(actor, "crawl", "crawl.warc")
        self._collecting_source(actor, source, "crawl.warc")
        counts: Counter[str] = Counter()
        batch: list[tuple[int, str, bytes, str | None, dict]] = []

        def store() -> None:
            results = self._store_images(actor, "crawl.warc.batch", {"file": path.name}, source,
                                         batch, CrawlProgress())
            counts.update(f"{state}:{reason}" if reason else state for state, reason, _ in results.values())
            batch.clear()

        error = None
        try:
            archive = ArchiveIndex(path, self.settings.crawl_max_bytes)
            for image in archive.images(path, self.settings.max_image_bytes):
                if image.stops_images or (image.page and image.page.stops_images):
                    counts["refused:noimageindex"] += 1
                    continue
                batch.append((len(batch), image.url, image.body, image.page_url, {
                    "page_title": image.page.title if image.page else "",
                    "alt_text": image.page.alt_text.get(image.url, "") if image.page else "",
                    "warc_file": path.name, "warc_date": image.captured_at,
                    "warc_record_id": image.record_id}))
                if len(batch) == WARC_BATCH:
                    store()
            store()
        except UnreadableArchive as exc:  # a damaged archive: what was stored before stays stored
            error = str(exc)
        with self.store.transaction() as conn:
            self._audit(conn, actor, "crawl.warc", {"file": path.name, "source": source,
                                                    "images": sum(counts.values()),
                                                    "outcomes": dict(counts),
                                                    **({"error": error} if error else {})})
        if error:
            raise InvalidRequest(error)
        return dict(counts)
