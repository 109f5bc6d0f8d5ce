"""Reading the audit trail: filters, export, and checking the hash chain."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from facesearch.errors import InvalidRequest
from facesearch.policy.audit import first_broken
from facesearch.service.base import ServiceBase
from facesearch.store.audit import AuditFilter
from facesearch.types import Actor

EXPORT_COLUMNS = ("id", "at", "actor", "actor_id", "organisation", "role", "action", "case_number",
                  "purpose", "client", "detail", "prev_hash", "hash")


@dataclass
class ChainCheck:
    records: int
    broken_at: int | None  # id of the first record that breaks the chain
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_at is None


class AuditTrail(ServiceBase):
    def audit_records(self, actor: Actor, where: AuditFilter) -> list[dict]:
        """Audit records matching the filter, oldest first; reading them is audited too."""
        self.authorise(actor, "audit.read", "audit.read")
        found = self.trail.records(where)
        self._audit_alone(actor, "audit.read", {"filter": _filter_detail(where), "records": len(found)})
        return found

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
            writer.writerow(dict(record, detail=json.dumps(record["detail"], sort_keys=True)))
        return out.getvalue()

    def verify_audit(self, actor: Actor) -> ChainCheck:
        """Recompute the hash chain over every record; names the first broken one."""
        self.authorise(actor, "audit.read", "audit.verify")
        count = 0

        def counted():  # noqa: ANN202
            nonlocal count
            for record in self.trail.chain():
                count += 1
                yield record

        broken = first_broken(counted(), self.trail.anchor())
        check = ChainCheck(count, *(broken or (None, "")))
        self._audit_alone(actor, "audit.verify", {"records": count, "broken_at": check.broken_at})
        return check


def _filter_detail(where: AuditFilter) -> dict:
    return {k: v for k, v in where.__dict__.items() if v is not None}
