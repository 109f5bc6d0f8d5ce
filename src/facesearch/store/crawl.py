"""Crawl jobs, their frontier and the robots.txt of each host."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.store.schema import crawl_hosts, crawl_jobs, crawl_urls


@dataclass(frozen=True)
class CrawlJob:
    id: int
    source: str
    purpose: str
    seeds: list[str]
    allow: list[str]
    max_depth: int
    max_pages: int
    status: str
    created_by: str
    created_at: str
    finished_at: str | None


@dataclass(frozen=True)
class FrontierUrl:
    id: int
    url: str
    kind: str
    depth: int
    page_url: str | None
    page_title: str
    alt_text: str
    etag: str | None
    last_modified: str | None


class CrawlStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_job(self, conn: Connection, **values: object) -> int:
        values["seeds"] = json.dumps(values["seeds"])
        values["allow"] = json.dumps(values["allow"])
        return conn.execute(insert(crawl_jobs).values(status="queued", **values)).inserted_primary_key[0]

    def job(self, job_id: int) -> CrawlJob | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(crawl_jobs).where(crawl_jobs.c.id == job_id)).mappings().first()
        return _job(row) if row else None

    def jobs(self) -> list[CrawlJob]:
        with self.engine.connect() as conn:
            return [_job(r) for r in conn.execute(
                select(crawl_jobs).order_by(crawl_jobs.c.id.desc()).limit(100)).mappings()]

    def set_status(self, conn: Connection, job_id: int, status: str, finished_at: str | None = None,
                   *, was: Collection[str]) -> bool:
        """Set the job's status, only from one of the statuses in was, so that two writers (a
        pause, and the crawl loop finishing) cannot overwrite each other. Returns whether it
        changed."""
        return conn.execute(update(crawl_jobs).where(
            crawl_jobs.c.id == job_id, crawl_jobs.c.status.in_(list(was))).values(
            status=status, finished_at=finished_at)).rowcount == 1

    # Frontier ---------------------------------------------------------------------------------

    def enqueue(self, conn: Connection, job_id: int, rows: list[dict]) -> None:
        """Add URLs the job has not met yet (the first sighting wins: its depth, its page),
        with the validators of an earlier job's visit, so that a revisit asks conditionally."""
        for row in rows:
            known = conn.execute(select(crawl_urls.c.id).where(
                crawl_urls.c.job_id == job_id, crawl_urls.c.url == row["url"],
                crawl_urls.c.kind == row["kind"])).first()
            if known is not None:
                continue
            earlier = conn.execute(select(crawl_urls.c.etag, crawl_urls.c.last_modified).where(
                crawl_urls.c.url == row["url"], crawl_urls.c.kind == row["kind"],
                crawl_urls.c.job_id != job_id, crawl_urls.c.state == "done")
                .order_by(crawl_urls.c.id.desc()).limit(1)).first()
            validators = {"etag": earlier[0], "last_modified": earlier[1]} if earlier else {}
            conn.execute(insert(crawl_urls).values(job_id=job_id, **{"state": "queued", **validators, **row}))

    def found_on(self, page_url: str, job_id: int) -> list[dict]:
        """What an earlier visit of a page found (links and images), for a page unchanged
        since (304): the same children, as that visit recorded them."""
        with self.engine.connect() as conn:
            last = conn.execute(select(crawl_urls.c.job_id).where(
                crawl_urls.c.url == page_url, crawl_urls.c.kind == "page",
                crawl_urls.c.job_id != job_id, crawl_urls.c.state == "done")
                .order_by(crawl_urls.c.id.desc()).limit(1)).scalar()
            if last is None:
                return []
            rows = conn.execute(select(crawl_urls.c.url, crawl_urls.c.kind, crawl_urls.c.page_title,
                                       crawl_urls.c.alt_text, crawl_urls.c.state, crawl_urls.c.reason)
                                .where(crawl_urls.c.job_id == last, crawl_urls.c.page_url == page_url)
                                .order_by(crawl_urls.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def next_queued(self, job_id: int, limit: int) -> list[FrontierUrl]:
        query = (select(crawl_urls.c.id, crawl_urls.c.url, crawl_urls.c.kind, crawl_urls.c.depth,
                        crawl_urls.c.page_url, crawl_urls.c.page_title, crawl_urls.c.alt_text,
                        crawl_urls.c.etag, crawl_urls.c.last_modified)
                 .where(crawl_urls.c.job_id == job_id, crawl_urls.c.state == "queued")
                 .order_by(crawl_urls.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [FrontierUrl(**r) for r in conn.execute(query).mappings()]

    def finish(self, conn: Connection, url_id: int, **values: object) -> None:
        conn.execute(update(crawl_urls).where(crawl_urls.c.id == url_id).values(**values))

    def pages_known(self, conn: Connection, job_id: int) -> int:
        return conn.execute(select(func.count()).select_from(crawl_urls).where(
            crawl_urls.c.job_id == job_id, crawl_urls.c.kind == "page",
            crawl_urls.c.state != "refused")).scalar_one()

    def counts(self, job_id: int) -> dict[str, dict[str, int]]:
        """{kind: {state or state:reason: count}} of the job's frontier."""
        query = (select(crawl_urls.c.kind, crawl_urls.c.state, crawl_urls.c.reason, func.count(),
                        func.coalesce(func.sum(crawl_urls.c.bytes), 0), func.coalesce(func.sum(crawl_urls.c.faces), 0))
                 .where(crawl_urls.c.job_id == job_id)
                 .group_by(crawl_urls.c.kind, crawl_urls.c.state, crawl_urls.c.reason))
        found: dict[str, dict[str, int]] = {"page": {}, "image": {}, "totals": {"bytes": 0, "faces": 0}}
        with self.engine.connect() as conn:
            for kind, state, reason, count, size, faces in conn.execute(query).all():
                key = f"{state}:{reason}" if reason else state
                found[kind][key] = found[kind].get(key, 0) + count
                found["totals"]["bytes"] += size
                found["totals"]["faces"] += faces
        return found

    def url_states(self, job_id: int) -> list[tuple[str, str]]:
        """(url, state) of every URL of the job, unordered: the least a per-host count needs."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(crawl_urls.c.url, crawl_urls.c.state)
                                                   .where(crawl_urls.c.job_id == job_id))]

    def frontier(self, job_id: int) -> list[dict]:
        """Every URL of the job with its outcome (ids and times left out), in URL order."""
        query = (select(crawl_urls.c.url, crawl_urls.c.kind, crawl_urls.c.depth, crawl_urls.c.state,
                        crawl_urls.c.reason, crawl_urls.c.page_url, crawl_urls.c.faces)
                 .where(crawl_urls.c.job_id == job_id).order_by(crawl_urls.c.kind, crawl_urls.c.url))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # Hosts ----------------------------------------------------------------------------------------

    def robots(self, job_id: int, host: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(crawl_hosts.c.robots).where(
                crawl_hosts.c.job_id == job_id, crawl_hosts.c.host == host)).scalar()

    def save_robots(self, job_id: int, host: str, text: str, now: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(crawl_hosts.c.host).where(
                    crawl_hosts.c.job_id == job_id, crawl_hosts.c.host == host)).first() is None:
                conn.execute(insert(crawl_hosts).values(job_id=job_id, host=host, robots=text,
                                                        fetched_at=now))


def _job(row) -> CrawlJob:  # noqa: ANN001 - a row mapping
    return CrawlJob(**dict(row, seeds=json.loads(row["seeds"]), allow=json.loads(row["allow"])))
