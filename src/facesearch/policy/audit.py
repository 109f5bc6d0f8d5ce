"""The audit trail's hash chain and its signatures: pure functions over records, no database.

The chain shows an edit, a deletion or an insertion to anyone who recomputes the hashes, but
not a rewrite that recomputes them all. So the service signs the chain's head (HMAC-SHA256
with a key kept outside the database) on every append, and signs checkpoints that an auditor
keeps elsewhere: without the key, a rewritten chain can no longer be made to verify."""

from __future__ import annotations

import hashlib
import hmac
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


def _mac(key: bytes, fields: list[object]) -> str:
    message = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def head_mac(key: bytes, anchor: tuple[int, str], head: tuple[int, str]) -> str:
    """The signature of a chain state: where it starts (the retention anchor, so that old
    records cannot be passed off as pruned) and its last record, each as (id, hash)."""
    return _mac(key, ["facesearch audit head", anchor[0], anchor[1], head[0], head[1]])


CHECKPOINT_FIELDS = ("head_id", "head_hash", "at")


def sign_checkpoint(key: bytes, head: tuple[int, str], at: str) -> dict[str, object]:
    """A checkpoint of the chain's head at time at (ISO 8601), signed, for keeping elsewhere."""
    checkpoint: dict[str, object] = {"head_id": head[0], "head_hash": head[1], "at": at}
    checkpoint["mac"] = _mac(key, ["facesearch audit checkpoint",
                                   *(checkpoint[name] for name in CHECKPOINT_FIELDS)])
    return checkpoint


def checkpoint_signed(key: bytes, checkpoint: Mapping[str, object]) -> bool:
    """Whether the checkpoint is one sign_checkpoint made with this key, unchanged."""
    try:
        fields = [checkpoint[name] for name in CHECKPOINT_FIELDS]
        mac = str(checkpoint["mac"])
    except (KeyError, TypeError):
        return False
    if not isinstance(fields[0], int) or isinstance(fields[0], bool):
        return False
    return hmac.compare_digest(_mac(key, ["facesearch audit checkpoint", *fields]), mac)
