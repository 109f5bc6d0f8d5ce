"""Migrations, the audit chain, accounts, cases and the crawl frontier on each backend."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from facesearch.policy.audit import first_broken
from facesearch.store.accounts import AccountStore, Session
from facesearch.store.audit import AuditFilter, AuditStore
from facesearch.store.crawl import CrawlStore
from facesearch.store.metadata import MetadataStore
from facesearch.store.migrate import head
from facesearch.store.schema import metadata


KEY = b"k" * 32


def record(n: int) -> dict:
    return {"at": f"2026-01-01T00:00:{n % 60:02d}+00:00", "actor": f"user{n % 3}", "actor_id": n,
            "organisation": "Org", "role": "admin", "action": "test" if n % 2 else "other",
            "case_number": "", "purpose": "", "client": "cli", "detail": {"n": n}}


def test_the_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    MetadataStore(database_url).close()
    engine = create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head()
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_concurrent_audit_appends_form_one_unbroken_chain(database_url: str) -> None:
    store = MetadataStore(database_url)
    trail = AuditStore(store.engine, lambda: KEY)

    def append(start: int) -> None:
        for n in range(start, start + 20):
            with store.transaction() as conn:
                trail.append(conn, record(n))

    threads = [threading.Thread(target=append, args=(s,)) for s in (0, 100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    chain = list(trail.chain())
    assert [r["id"] for r in chain] == list(range(1, 81))
    assert first_broken(chain) is None
    assert len(trail.records(AuditFilter(action="test"))) == 40
    with store.engine.begin() as conn:  # an edit anywhere is found at exactly that record
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = 37"))
    assert first_broken(trail.chain())[0] == 37
    store.close()


def test_audit_retention_anchors_the_chain(database_url: str) -> None:
    store = MetadataStore(database_url)
    trail = AuditStore(store.engine, lambda: KEY)
    with store.transaction() as conn:
        for n in range(10):
            trail.append(conn, dict(record(n), at=f"2026-01-{n + 1:02d}T00:00:00+00:00"))
    with store.transaction() as conn:
        assert trail.prune_before(conn, "2026-01-05") == 4
    with store.transaction() as conn:
        trail.append(conn, record(99))
    assert trail.anchor()[0] == 4
    assert first_broken(trail.chain(), trail.anchor()) is None
    assert [r["id"] for r in trail.chain()][0] == 5
    store.close()


def test_users_keys_and_sessions(database_url: str) -> None:
    store = MetadataStore(database_url)
    accounts = AccountStore(store.engine)
    with store.transaction() as conn:
        org = accounts.add_organisation(conn, "Org", "2026-01-01")
        user = accounts.add_user(conn, org, "ivy", "investigator", "pending", "hash", "2026-01-01")
        accounts.add_api_key(conn, user, "k", "fsk_abc", "f" * 64, "2026-01-01")
        accounts.add_session(conn, "a" * 64, user, "csrf", "2026-01-01", "2026-01-02")
    assert accounts.user(username="ivy").organisation == "Org"
    assert accounts.user_id_for_key("f" * 64) == user
    assert accounts.session("a" * 64, "2026-01-01T12") == Session(user, "csrf", "full")
    assert accounts.session("a" * 64, "2026-01-03") is None
    with store.transaction() as conn:
        accounts.set_jurisdictions(conn, org, ["FR", "BE"])
    assert accounts.organisation("Org").jurisdiction_set == {"FR", "BE"}
    store.close()


def test_the_crawl_frontier_keeps_the_first_sighting_and_counts_outcomes(database_url: str) -> None:
    store = MetadataStore(database_url)
    crawls = CrawlStore(store.engine)
    with store.transaction() as conn:
        job = crawls.add_job(conn, source="s", purpose="p", seeds=["http://a/"], allow=["a"],
                             max_depth=1, max_pages=10, created_by="t", created_at="2026")
        crawls.enqueue(conn, job, [{"url": "http://a/", "kind": "page", "depth": 0},
                                   {"url": "http://a/x.jpg", "kind": "image", "depth": 1},
                                   {"url": "http://a/x.jpg", "kind": "image", "depth": 5},
                                   {"url": "http://b/", "kind": "page", "depth": 1,
                                    "state": "refused", "reason": "off_allowlist"}])
    queued = crawls.next_queued(job, 10)
    assert [(u.url, u.depth) for u in queued] == [("http://a/", 0), ("http://a/x.jpg", 1)]
    with store.transaction() as conn:
        crawls.finish(conn, queued[1].id, state="done", bytes=100, faces=2)
    counts = crawls.counts(job)
    assert counts["page"] == {"queued": 1, "refused:off_allowlist": 1}
    assert counts["image"] == {"done": 1} and counts["totals"] == {"bytes": 100, "faces": 2}
    store.close()


def test_a_crawl_job_changes_status_only_from_the_status_its_writer_expects(database_url: str) -> None:
    store = MetadataStore(database_url)
    crawls = CrawlStore(store.engine)
    with store.transaction() as conn:
        job = crawls.add_job(conn, source="s", purpose="p", seeds=["http://a/"], allow=["a"],
                             max_depth=1, max_pages=10, created_by="t", created_at="2026")
        assert crawls.set_status(conn, job, "running", was={"queued"})
        assert crawls.set_status(conn, job, "paused", was={"queued", "running"})  # a pause...
        # ...that lands as the crawl loop finds its frontier empty: the pause stands.
        assert not crawls.set_status(conn, job, "done", "2027", was={"running"})
    assert crawls.job(job).status == "paused" and crawls.job(job).finished_at is None
    store.close()
