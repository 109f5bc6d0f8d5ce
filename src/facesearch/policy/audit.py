"""The audit trail's hash chain: pure functions over records, no database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

GENESIS = "0" * 64  # the prev_hash of the first record

# The fields a record's hash covers, in this order; the hash itself is not among them.
CHAINED_FIELDS = ("id", "at", "actor", "actor_id", "organisation", "role", "action",
                  "case_number", "purpose", "client", "detail", "prev_hash")


def record_hash(record: Mapping[str, object]) -> str:
    """sha256 over the record's fields as canonical JSON (detail is already a JSON string)."""
    canonical = json.dumps([record[name] for name in CHAINED_FIELDS], separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def first_broken(records: Iterable[Mapping[str, object]],
                 anchor: tuple[int, str] = (0, GENESIS)) -> tuple[int, str] | None:
    """(id, reason) of the first record that breaks the chain, or None if it is intact.

    An edited record fails its own hash; a deleted one leaves a gap in the ids and the next
    record's prev_hash pointing at nothing; an inserted one fails on its prev_hash. anchor is
    (id, hash) of the last record removed by retention, after which the chain starts."""
    expected_id, prev = anchor[0] + 1, anchor[1]
    for record in records:
        if record["id"] != expected_id:
            return int(record["id"]), f"expected record {expected_id} here (deleted?)"
        if record["prev_hash"] != prev:
            return int(record["id"]), "does not follow the record before it"
        if record_hash(record) != record["hash"]:
            return int(record["id"]), "its content does not match its hash (edited?)"
        expected_id, prev = expected_id + 1, str(record["hash"])
    return None
