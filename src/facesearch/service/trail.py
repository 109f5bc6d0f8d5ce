"""Reading the audit trail: filters, export, checking the hash chain and its signed head,
and signed checkpoints to keep elsewhere."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

from facesearch.errors import InvalidRequest
from facesearch.policy.audit import checkpoint_signed, first_broken, sign_checkpoint
from facesearch.service.base import ServiceBase
from facesearch.store.audit import AuditFilter
from facesearch.types import Actor

EXPORT_COLUMNS = ("id", "at", "actor", "actor_id", "organisation", "role", "action", "case_number",
                  "purpose", "client", "detail", "prev_hash", "hash")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
AUDIT_PAGE_SIZE = 50  # records a page of the audit trail shows


def spreadsheet_safe(value: object) -> object:
    """value, or a text cell that would start a formula with a quote before it, so that a
    username such as =HYPERLINK(...) reaches the auditor's sheet as text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass
class CropViews:
    """Views of face crops from one search's candidate list, one after another by one user:
    one line on the audit page instead of one per crop. records: newest first."""

    records: list[dict]

    @property
    def search_id(self) -> int:
        return self.records[0]["detail"]["search_id"]


@dataclass
class AuditPage:
    """A page of the trail, newest first, crop views grouped; older and newer: the cursors
    (AuditFilter.before and .after) of the pages on either side, None where there is none."""

    entries: list[dict | CropViews]
    older: int | None
    newer: int | None
    size: int  # records a page


@dataclass
class ChainCheck:
    records: int
    broken_at: int | None  # id of the first record that breaks the chain, or fails a check
    reason: str = ""
    checkpoint: str = ""  # what a checkpoint given showed, when it passed

    @property
    def intact(self) -> bool:
        return self.broken_at is None


class AuditTrail(ServiceBase):
    def audit_records(self, actor: Actor, where: AuditFilter) -> list[dict]:
        """Audit records matching the filter, oldest first unless it asks for newest first;
        reading them is audited too."""
        self.authorise(actor, "audit.read", "audit.read")
        found = self.trail.records(where)
        self._audit_alone(actor, "audit.read", {"filter": _filter_detail(where), "records": len(found)})
        return found

    def audit_page(self, actor: Actor, where: AuditFilter,
                   size: int = AUDIT_PAGE_SIZE) -> AuditPage:
        """One page of the matching records, newest first: the latest (or those older than
        where.before, or newer than where.after), with consecutive crop views of one search
        by one user grouped (CropViews)."""
        found = self.audit_records(actor, replace(where, limit=size + 1, newest_first=True))
        if where.after is not None:  # the records just after the cursor, newest first
            more, found = len(found) > size, found[-size:]
            older, newer = (found[-1]["id"] if found else where.after + 1), (
                found[0]["id"] if more else None)
        else:
            more, found = len(found) > size, found[:size]
            older = found[-1]["id"] if more else None
            newer = found[0]["id"] if where.before is not None and found else None
        return AuditPage(_group_crop_views(found), older, newer, size)

    def export_audit(self, actor: Actor, where: AuditFilter, fmt: str) -> str:
        """The matching records as CSV or JSON text, as stored (hashes included)."""
        if fmt not in ("csv", "json"):
            raise InvalidRequest("format must be csv or json")
        self.authorise(actor, "audit.read", "audit.export")
        found = self.trail.records(where)
        self._audit_alone(actor, "audit.export", {"filter": _filter_detail(where), "format": fmt,
                                                  "records": len(found)})
        if fmt == "json":
            return json.dumps(found, indent=1)
        out = io.StringIO()
        writer = csv.DictWriter(out, EXPORT_COLUMNS)
        writer.writeheader()
        for record in found:
            row = dict(record, detail=json.dumps(record["detail"], sort_keys=True))
            writer.writerow({name: spreadsheet_safe(row[name]) for name in EXPORT_COLUMNS})
        return out.getvalue()

    def verify_audit(self, actor: Actor, checkpoint: dict | None = None) -> ChainCheck:
        """Recompute the hash chain over every record and check the head's signature; names
        the first broken record. checkpoint: one audit_checkpoint made earlier, which the
        chain must still hold (unless retention has removed its record since)."""
        self.authorise(actor, "audit.read", "audit.verify")
        check = self._check_chain()
        if check.intact and checkpoint is not None:
            check = self._check_checkpoint(check, checkpoint)
        self._audit_alone(actor, "audit.verify", {"records": check.records,
                                                  "broken_at": check.broken_at,
                                                  "checkpoint": checkpoint is not None})
        return check

    def audit_checkpoint(self, actor: Actor) -> dict:
        """A signed checkpoint of the chain's head ({head_id, head_hash, at, mac}), for the
        auditor to keep outside the database and give to verify_audit later. Only an intact
        chain with a valid signature is checkpointed."""
        self.authorise(actor, "audit.read", "audit.checkpoint")
        # Appends wait while the chain is checked and its head signed: the head signed is the
        # head checked, not a record slipped in between.
        with self.store.transaction() as conn:
            self.trail.lock(conn)
            check = self._check_chain()
            if check.intact:
                head = self.trail.head(conn)
                checkpoint = sign_checkpoint(self.trail.key(), head.last, self.now())
                self._audit(conn, actor, "audit.checkpoint", {"head_id": head.last[0],
                                                              "head_hash": head.last[1]})
        if not check.intact:
            self._refuse(actor, "audit.checkpoint", f"the audit trail fails its check at record "
                         f"{check.broken_at}: {check.reason}")
        return checkpoint

    def seal_audit(self, actor: Actor) -> ChainCheck:
        """Sign the chain's head after checking every hash: for a trail written before
        signing began (an upgrade), or once a failed signature check has been looked into.
        The operator's alone (the CLI): it vouches for the trail as it stands."""
        self.authorise(actor, "integrity", "audit.seal")
        # Appends wait while the chain is checked and sealed (see audit_checkpoint).
        with self.store.transaction() as conn:
            self.trail.lock(conn)
            check = self._check_chain(signature=False)
            if check.intact:
                head = self.trail.seal(conn)
                self._audit(conn, actor, "audit.seal", {"head_id": head.last[0],
                                                        "records": check.records})
        if not check.intact:
            self._refuse(actor, "audit.seal", f"the audit trail is broken at record "
                         f"{check.broken_at}: {check.reason}")
        return check

    def _check_chain(self, signature: bool = True) -> ChainCheck:
        """The hashes of every record, then (signature) the head's signature: made with our
        key over the chain's start and its last record, which a rewrite cannot make again."""
        anchor = self.trail.anchor()
        count, last = 0, anchor

        def counted(records: Iterator[dict]) -> Iterator[dict]:
            nonlocal count, last
            for record in records:
                count += 1
                last = (int(record["id"]), str(record["hash"]))
                yield record

        broken = first_broken(counted(self.trail.chain()), anchor)
        if broken or not signature:
            return ChainCheck(count, *(broken or (None, "")))
        head = self.trail.head()  # records appended since the chain was read are checked too
        broken = first_broken(counted(self.trail.chain(after=last[0])), last)
        if broken:
            return ChainCheck(count, *broken)
        if head.mac is None:
            return ChainCheck(count, head.last[0], "the trail's head is not signed (written "
                              "before signing began? `facesearch audit verify --seal` signs it)")
        if not self.trail.signed(head):
            return ChainCheck(count, head.last[0], "the trail's head is not the one last signed "
                              "with the audit key: records rewritten, or removed from its end "
                              "(or another key)")
        return ChainCheck(count, None)

    def _check_checkpoint(self, check: ChainCheck, checkpoint: dict) -> ChainCheck:
        """Whether the intact chain still holds the checkpoint's record, unchanged."""
        if not checkpoint_signed(self.trail.key(), checkpoint):
            return replace(check, broken_at=0, reason="the checkpoint's signature does not match: "
                           "edited, or signed with another key")
        record_id, expected = int(checkpoint["head_id"]), checkpoint["head_hash"]
        head = self.trail.head()
        taken = f"the checkpoint of {checkpoint['at']}"
        if record_id > head.last[0]:
            return replace(check, broken_at=head.last[0], reason=f"the trail ends at record "
                           f"{head.last[0]}, before record {record_id} of {taken}: records "
                           "were removed from its end")
        if record_id < head.anchor[0]:
            return replace(check, checkpoint=f"record {record_id} of {taken} has been removed "
                           f"by retention since; the trail now starts after record {head.anchor[0]}")
        stored = head.anchor[1] if record_id == head.anchor[0] else self.trail.record_hash(record_id)
        if stored != expected:
            return replace(check, broken_at=record_id, reason=f"record {record_id} is not the "
                           f"one of {taken}: the trail was rewritten since")
        return replace(check, checkpoint=f"record {record_id} matches {taken}")


def _filter_detail(where: AuditFilter) -> dict:
    return {k: v for k, v in where.__dict__.items() if v is not None}


def _group_crop_views(records: list[dict]) -> list[dict | CropViews]:
    entries: list[dict | CropViews] = []
    for record in records:
        search_id = record["detail"].get("search_id") if record["action"] == "face.crop" else None
        last = entries[-1] if entries else None
        if search_id is None:
            entries.append(record)
        elif (isinstance(last, CropViews) and last.search_id == search_id
              and last.records[-1]["actor"] == record["actor"]):
            last.records.append(record)
        else:
            entries.append(CropViews([record]))
    return entries
