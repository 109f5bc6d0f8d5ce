"""The audit log table: chained appends, filtered reads, and the records in order for checking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.policy.audit import GENESIS, record_hash
from facesearch.store.schema import audit_head, audit_log


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    organisation: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." such as "search."
    case_number: str | None = None
    since: str | None = None  # ISO 8601, inclusive
    until: str | None = None  # ISO 8601, exclusive
    limit: int = 1000


class AuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            if conn.execute(select(audit_head.c.id)).first() is None:
                conn.execute(insert(audit_head).values(id=1, appends=0, pruned_through=0,
                                                       pruned_hash=GENESIS))

    def append(self, conn: Connection, record: dict) -> dict:
        """Append inside conn's transaction. record: every chained field except id and
        prev_hash, with detail as a dict."""
        # Take the write lock before reading the chain's end (see schema.audit_head).
        conn.execute(update(audit_head).where(audit_head.c.id == 1)
                     .values(appends=audit_head.c.appends + 1))
        last = conn.execute(select(audit_log.c.id, audit_log.c.hash)
                            .order_by(audit_log.c.id.desc()).limit(1)).first()
        if last is None:  # empty, or every record pruned: continue from the anchor
            last = conn.execute(select(audit_head.c.pruned_through, audit_head.c.pruned_hash)).first()
        row = dict(record, id=last[0] + 1, prev_hash=last[1],
                   detail=json.dumps(record["detail"], sort_keys=True, separators=(",", ":")))
        row["hash"] = record_hash(row)
        conn.execute(insert(audit_log).values(**row))
        return row

    def records(self, where: AuditFilter | None = None) -> list[dict]:
        """Matching records, oldest first, with detail decoded."""
        where = where or AuditFilter()
        query = select(audit_log).order_by(audit_log.c.id)
        if where.actor:
            query = query.where(audit_log.c.actor == where.actor)
        if where.organisation:
            query = query.where(audit_log.c.organisation == where.organisation)
        if where.action and where.action.endswith("."):
            query = query.where(audit_log.c.action.startswith(where.action))
        elif where.action:
            query = query.where(audit_log.c.action == where.action)
        if where.case_number:
            query = query.where(audit_log.c.case_number == where.case_number)
        if where.since:
            query = query.where(audit_log.c.at >= where.since)
        if where.until:
            query = query.where(audit_log.c.at < where.until)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(where.limit)).mappings().all()
        return [dict(r, detail=json.loads(r["detail"])) for r in rows]

    def anchor(self) -> tuple[int, str]:
        """(id, hash) of the last record removed by retention: the chain starts after it."""
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_head.c.pruned_through, audit_head.c.pruned_hash)).first()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def prune_before(self, conn: Connection, cutoff: str) -> int:
        """Remove the records older than cutoff, from the start of the chain, and anchor the
        chain at the last one removed. Returns how many went."""
        last = conn.execute(select(audit_log.c.id, audit_log.c.hash).where(audit_log.c.at < cutoff)
                            .order_by(audit_log.c.id.desc()).limit(1)).first()
        if last is None:
            return 0
        # Records are appended in time order, so everything up to the newest old one goes.
        removed = conn.execute(audit_log.delete().where(audit_log.c.id <= last[0])).rowcount
        conn.execute(update(audit_head).where(audit_head.c.id == 1)
                     .values(pruned_through=last[0], pruned_hash=last[1]))
        return removed

    def chain(self, batch: int = 10_000) -> Iterator[dict]:
        """Every record exactly as stored, in id order, for checking the chain."""
        last = 0
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(select(audit_log).where(audit_log.c.id > last)
                                    .order_by(audit_log.c.id).limit(batch)).mappings().all()
                if not rows:
                    return
                yield from (dict(r) for r in rows)
                last = rows[-1]["id"]
