"""The audit log table: chained appends with a signed head, filtered reads, and the records
in order for checking."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from facesearch.errors import FacesearchError
from facesearch.policy.audit import GENESIS, head_mac, record_hash
from facesearch.store.schema import audit_head, audit_log

MIN_KEY_CHARS = 32  # a FACESEARCH_AUDIT_KEY shorter than this is refused as guessable


def load_key(secret: str, path: Path) -> bytes:
    """The audit key: secret (FACESEARCH_AUDIT_KEY) if set, else the contents of the key file
    at path, which is created (32 random bytes, hex, mode 0600) the first time. Processes
    starting together agree: the file appears whole or not at all (a hard link)."""
    if secret:
        if len(secret) < MIN_KEY_CHARS:
            raise FacesearchError(f"FACESEARCH_AUDIT_KEY needs at least {MIN_KEY_CHARS} characters")
        return secret.encode()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            draft.unlink()
    key = path.read_text().strip()
    if len(key) < MIN_KEY_CHARS:
        raise FacesearchError(f"the audit key file {path} holds no key")
    return key.encode()


@dataclass(frozen=True)
class Head:
    """The chain's state in one snapshot: where it starts, its last record, its signature."""

    anchor: tuple[int, str]  # (id, hash) of the last record removed by retention
    last: tuple[int, str]  # (id, hash) of the last record; the anchor if none is left
    mac: str | None  # head_mac of the two, written by the last append or prune


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    organisation: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." such as "search."
    case_number: str | None = None
    since: str | None = None  # ISO 8601, inclusive
    until: str | None = None  # ISO 8601, exclusive
    limit: int = 1000
    # A page of the trail: records with ids below `before` (older) or above `after` (newer);
    # newest first, the latest before `before` or the earliest after `after`.
    before: int | None = None
    after: int | None = None
    newest_first: bool = False


class AuditStore:
    """key: the audit key (load_key), asked for when first needed."""

    def __init__(self, engine: Engine, key: Callable[[], bytes]) -> None:
        self.engine = engine
        self.key = cache(key)
        with engine.begin() as conn:
            if conn.execute(select(audit_head.c.id)).first() is None:
                # A new trail is signed from the start: an unsigned head is never signed
                # over by an append (see append), only by seal after a check.
                empty = (0, GENESIS)
                conn.execute(insert(audit_head).values(id=1, appends=0, pruned_through=0,
                                                       pruned_hash=GENESIS,
                                                       head_mac=head_mac(self.key(), empty, empty)))

    def head(self, conn: Connection | None = None) -> Head:
        """The chain's state, read in one statement (one snapshot, whatever the isolation)."""
        newest = select(func.max(audit_log.c.id)).scalar_subquery()
        query = (select(audit_head.c.pruned_through, audit_head.c.pruned_hash, audit_head.c.head_mac,
                        audit_log.c.id, audit_log.c.hash)
                 .select_from(audit_head.outerjoin(audit_log, audit_log.c.id == newest))
                 .where(audit_head.c.id == 1))
        if conn is None:
            with self.engine.connect() as own:
                row = own.execute(query).one()
        else:
            row = conn.execute(query).one()
        anchor = (int(row[0]), str(row[1]))
        last = (int(row[3]), str(row[4])) if row[3] is not None else anchor
        return Head(anchor, last, row[2])

    def signed(self, head: Head) -> bool:
        """Whether head carries the signature of exactly its own state, made with our key."""
        return head.mac is not None and hmac.compare_digest(
            head.mac, head_mac(self.key(), head.anchor, head.last))

    @staticmethod
    def lock(conn: Connection) -> None:
        """Take the write lock before reading the chain's end (see schema.audit_head): until
        conn's transaction ends, appends wait."""
        conn.execute(update(audit_head).where(audit_head.c.id == 1)
                     .values(appends=audit_head.c.appends + 1))

    def _sign(self, conn: Connection, was: Head, anchor: tuple[int, str],
              last: tuple[int, str]) -> None:
        """Sign the new state only if the state it follows was signed by us: a head rewritten
        (or unsigned) behind the service's back is never signed over, so verify keeps
        showing it until an operator seals the trail again."""
        if self.signed(was):
            conn.execute(update(audit_head).where(audit_head.c.id == 1)
                         .values(head_mac=head_mac(self.key(), anchor, last)))

    def append(self, conn: Connection, record: dict) -> dict:
        """Append inside conn's transaction and sign the new head. record: every chained
        field except id and prev_hash, with detail as a dict."""
        self.lock(conn)
        was = self.head(conn)
        row = dict(record, id=was.last[0] + 1, prev_hash=was.last[1],
                   detail=json.dumps(record["detail"], sort_keys=True, separators=(",", ":")))
        row["hash"] = record_hash(row)
        conn.execute(insert(audit_log).values(**row))
        self._sign(conn, was, was.anchor, (row["id"], row["hash"]))
        return row

    def seal(self, conn: Connection) -> Head:
        """Sign the head as it stands (the caller has checked the chain): for a trail written
        before signing began, or after a failed check has been looked into."""
        self.lock(conn)
        head = self.head(conn)
        conn.execute(update(audit_head).where(audit_head.c.id == 1)
                     .values(head_mac=head_mac(self.key(), head.anchor, head.last)))
        return self.head(conn)

    def record_hash(self, record_id: int) -> str | None:
        """The stored hash of one record, or None if there is none with that id."""
        with self.engine.connect() as conn:
            return conn.execute(select(audit_log.c.hash).where(audit_log.c.id == record_id)).scalar()

    def records(self, where: AuditFilter | None = None) -> list[dict]:
        """Matching records, oldest first (newest first if where.newest_first), with detail
        decoded."""
        where = where or AuditFilter()
        # The records nearest the cursor come first; a page of newer ones is then turned round.
        ascending = not where.newest_first or where.after is not None
        query = select(audit_log).order_by(audit_log.c.id if ascending else audit_log.c.id.desc())
        if where.before is not None:
            query = query.where(audit_log.c.id < where.before)
        if where.after is not None:
            query = query.where(audit_log.c.id > where.after)
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
        if where.newest_first and ascending:
            rows = rows[::-1]
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
        self.lock(conn)
        was = self.head(conn)
        # Records are appended in time order, so everything up to the newest old one goes.
        removed = conn.execute(audit_log.delete().where(audit_log.c.id <= last[0])).rowcount
        conn.execute(update(audit_head).where(audit_head.c.id == 1)
                     .values(pruned_through=last[0], pruned_hash=last[1]))
        anchor = (int(last[0]), str(last[1]))
        self._sign(conn, was, anchor, anchor if was.last[0] <= anchor[0] else was.last)
        return removed

    def chain(self, after: int = 0, batch: int = 10_000) -> Iterator[dict]:
        """Every record after id after exactly as stored, in id order, for checking the chain."""
        last = after
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(select(audit_log).where(audit_log.c.id > last)
                                    .order_by(audit_log.c.id).limit(batch)).mappings().all()
                if not rows:
                    return
                yield from (dict(r) for r in rows)
                last = rows[-1]["id"]
