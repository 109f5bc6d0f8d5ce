"""The audit trail against someone who can write to the database: the head is signed with a
key kept outside it, checkpoints are signed for keeping elsewhere, and the CSV export cannot
carry a formula into the auditor's spreadsheet."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from facesearch.config import Settings
from facesearch.errors import FacesearchError, Forbidden, PolicyRefused
from facesearch.policy.audit import record_hash
from facesearch.service import AuditFilter, FaceSearchService
from facesearch.types import Actor
from tests.cli.test_cli import FACESEARCH
from tests.conftest import OPERATOR
from tests.service.test_accounts_and_cases import Clock

AUDITOR = Actor(name="aud", role="auditor", user_id=1, organisation="Org")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock):
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1), clock)
    yield service
    service.close()


def some_records(svc: FaceSearchService, count: int = 5) -> None:
    """count audit records (source.add)."""
    for _ in range(count):
        svc.add_source(OPERATOR, f"source-{svc.trail.head().last[0]}", "public_task", "FR")


def rewrite(svc: FaceSearchService, record_id: int, **changes: object) -> None:
    """What an attacker with database access does: edit one record, then recompute the hash of
    it and of every record after it, so that the chain itself checks."""
    with svc.store.engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(text(
            "SELECT * FROM audit_log WHERE id >= :id ORDER BY id"), {"id": record_id}).mappings()]
        prev = rows[0]["prev_hash"]
        for row in rows:
            if row["id"] == record_id:
                row.update(changes)
            row["prev_hash"] = prev
            row["hash"] = prev = record_hash(row)
            conn.execute(text("UPDATE audit_log SET actor = :actor, detail = :detail, "
                              "prev_hash = :prev_hash, hash = :hash WHERE id = :id"), row)


def sql(svc: FaceSearchService, statement: str) -> None:
    with svc.store.engine.begin() as conn:
        conn.execute(text(statement))


def test_a_chain_rewritten_with_every_hash_recomputed_fails_verification(svc) -> None:
    some_records(svc)
    assert svc.verify_audit(OPERATOR).intact
    rewrite(svc, 2, actor="someone-else")
    check = svc.verify_audit(OPERATOR)
    assert not check.intact
    assert "not the one last signed" in check.reason
    # The service goes on recording, but never signs over a head it did not sign itself.
    some_records(svc, 2)
    assert not svc.verify_audit(OPERATOR).intact


def test_removing_the_newest_records_fails_verification(svc) -> None:
    some_records(svc)
    newest = svc.trail.head().last[0]
    sql(svc, f"DELETE FROM audit_log WHERE id >= {newest - 1}")
    check = svc.verify_audit(OPERATOR)
    assert not check.intact and check.broken_at == newest - 2


def test_clearing_the_signature_leaves_the_trail_unsigned_until_an_operator_seals_it(svc) -> None:
    some_records(svc)
    sql(svc, "UPDATE audit_head SET head_mac = NULL")
    some_records(svc, 1)  # an append does not sign a head it cannot vouch for
    check = svc.verify_audit(OPERATOR)
    assert not check.intact and "not signed" in check.reason
    with pytest.raises(Forbidden):
        svc.seal_audit(AUDITOR)
    svc.seal_audit(OPERATOR)
    assert svc.verify_audit(OPERATOR).intact
    assert [r["action"] for r in svc.trail.records(AuditFilter(action="audit.seal"))] == ["audit.seal"]


def test_sealing_refuses_a_chain_whose_hashes_do_not_check(svc) -> None:
    some_records(svc)
    sql(svc, "UPDATE audit_log SET actor = 'x' WHERE id = 2")
    with pytest.raises(PolicyRefused):
        svc.seal_audit(OPERATOR)


def test_retention_keeps_the_head_signed_and_old_records_cannot_be_passed_off_as_pruned(
        svc, clock: Clock) -> None:
    some_records(svc, 3)
    clock.advance(days=svc.settings.audit_retention_days + 1)
    some_records(svc, 2)
    svc.run_retention(OPERATOR)
    assert svc.trail.anchor()[0] == 3
    assert svc.verify_audit(OPERATOR).intact
    # Deleting recent records and moving the anchor past them, as retention would: the
    # signature covers where the chain starts.
    first, hash_of_first = next(svc.trail.chain())["id"], next(svc.trail.chain())["hash"]
    sql(svc, f"DELETE FROM audit_log WHERE id <= {first}")
    sql(svc, f"UPDATE audit_head SET pruned_through = {first}, pruned_hash = '{hash_of_first}'")
    assert not svc.verify_audit(OPERATOR).intact


def test_a_checkpoint_verifies_while_the_trail_holds_its_record_and_after_retention(
        svc, clock: Clock) -> None:
    some_records(svc, 3)  # day 0: records 1-3
    clock.advance(days=1)
    checkpoint = svc.audit_checkpoint(AUDITOR)  # day 1: of record 3, itself recorded as 4
    assert set(checkpoint) == {"head_id", "head_hash", "at", "mac"}
    assert checkpoint["head_id"] == 3
    some_records(svc, 2)
    check = svc.verify_audit(AUDITOR, checkpoint)
    assert check.intact and check.checkpoint.startswith("record 3 matches")
    # Retention removes day 0, the checkpoint's record last: the chain's anchor is that record.
    clock.advance(days=svc.settings.audit_retention_days - 0.5)
    svc.run_retention(OPERATOR)
    assert svc.trail.anchor()[0] == 3
    check = svc.verify_audit(AUDITOR, checkpoint)
    assert check.intact and check.checkpoint.startswith("record 3 matches"), check.reason
    # Then day 1: the checkpoint is older than anything kept, and says so without failing.
    clock.advance(days=1)
    svc.run_retention(OPERATOR)
    assert svc.trail.anchor()[0] > 4
    check = svc.verify_audit(AUDITOR, checkpoint)
    assert check.intact and "removed by retention" in check.checkpoint, check.reason


def test_a_checkpoint_shows_a_rewrite_that_was_sealed_afterwards(svc) -> None:
    some_records(svc, 3)
    checkpoint = svc.audit_checkpoint(AUDITOR)
    some_records(svc, 2)
    rewrite(svc, 2, actor="someone-else")
    svc.seal_audit(OPERATOR)  # an operator vouches for what they were shown
    assert svc.verify_audit(AUDITOR).intact
    check = svc.verify_audit(AUDITOR, checkpoint)
    assert not check.intact and check.broken_at == 3 and "rewritten" in check.reason


def test_a_checkpoint_shows_records_removed_from_the_end(svc) -> None:
    some_records(svc, 4)
    checkpoint = svc.audit_checkpoint(AUDITOR)
    sql(svc, "DELETE FROM audit_log WHERE id >= 3")
    svc.seal_audit(OPERATOR)
    check = svc.verify_audit(AUDITOR, checkpoint)
    assert not check.intact and "removed from its end" in check.reason


def test_an_edited_or_foreign_checkpoint_is_refused(svc, tmp_path: Path) -> None:
    some_records(svc, 3)
    checkpoint = svc.audit_checkpoint(AUDITOR)
    for edited in (dict(checkpoint, head_id=2), dict(checkpoint, at="2020-01-01"),
                   dict(checkpoint, mac="0" * 64), {"head_id": 1}, {}):
        check = svc.verify_audit(AUDITOR, edited)
        assert not check.intact and "signature" in check.reason
    other = FaceSearchService(Settings(home=tmp_path / "other", workers=1))
    try:
        some_records(other, 3)
        assert not other.verify_audit(OPERATOR, checkpoint).intact  # another key
    finally:
        other.close()


def test_the_key_is_a_private_file_outside_the_database_unless_a_setting_gives_it(
        tmp_path: Path) -> None:
    home = tmp_path / "data"
    service = FaceSearchService(Settings(home=home, workers=1))
    some_records(service, 1)
    service.close()
    key_file = home / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in (home / "metadata.sqlite3").read_bytes().decode("latin-1")
    # The same trail read with another key does not verify; with the right one it does.
    secret = "s" * 40
    with_setting = FaceSearchService(Settings(home=home, workers=1, audit_key=secret))
    try:
        assert not with_setting.verify_audit(OPERATOR).intact
    finally:
        with_setting.close()
    elsewhere = tmp_path / "keys" / "audit.key"
    fresh = FaceSearchService(Settings(home=tmp_path / "fresh", workers=1, audit_key_file=elsewhere))
    try:
        some_records(fresh, 2)
        assert fresh.verify_audit(OPERATOR).intact
        assert elsewhere.is_file() and not (tmp_path / "fresh" / "audit.key").exists()
    finally:
        fresh.close()
    with pytest.raises(FacesearchError, match="32 characters"):
        FaceSearchService(Settings(home=tmp_path / "short", workers=1, audit_key="short"))


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)",
                                  "\tdata", "\rdata"])
def test_a_formula_in_an_audited_field_reaches_the_csv_export_as_text(svc, name: str) -> None:
    svc.add_source(Actor(name=name), "press", "public_task", "FR")
    exported = svc.export_audit(OPERATOR, AuditFilter(action="source.add"), "csv")
    [row] = list(csv.DictReader(io.StringIO(exported)))
    assert row["actor"] == "'" + name
    assert row["action"] == "source.add" and row["hash"].isalnum()
    [record] = json.loads(svc.export_audit(OPERATOR, AuditFilter(action="source.add"), "json"))
    assert record["actor"] == name  # JSON is data, not a sheet: kept as recorded


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FACESEARCH, "--data", str(home), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FACESEARCH_AUDIT_KEY": ""})


def test_the_cli_checkpoints_and_verifies_and_exits_6_on_a_rewritten_chain(tmp_path: Path) -> None:
    home = tmp_path / "data"
    service = FaceSearchService(Settings(home=home, workers=1))
    some_records(service, 3)
    service.close()
    saved = tmp_path / "checkpoint.json"
    assert run(home, "audit", "checkpoint", "--output", str(saved)).returncode == 0
    assert json.loads(saved.read_text())["head_id"] == 3
    done = run(home, "audit", "verify", "--checkpoint", str(saved))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "record 3 matches" in done.stdout
    service = FaceSearchService(Settings(home=home, workers=1))
    rewrite(service, 1, actor="someone-else")
    service.close()
    done = run(home, "audit", "verify")
    assert done.returncode == 6 and "not the one last signed" in done.stdout
    assert run(home, "audit", "verify", "--seal").returncode == 0
    done = run(home, "audit", "verify", "--checkpoint", str(saved))
    assert done.returncode == 6 and "rewritten" in done.stdout


@pytest.mark.parametrize("command", ["seal", "checkpoint"])
def test_a_record_appended_while_the_chain_is_checked_waits_for_the_signature(
        svc: FaceSearchService, command: str) -> None:
    """The head signed is the head checked: an append (or an insert by someone with database
    access) in between would be signed unchecked."""
    import threading
    import time

    some_records(svc)
    check, appended = svc._check_chain, threading.Event()

    def check_while_appending(signature: bool = True):  # noqa: ANN202
        def append() -> None:
            svc._audit_alone(OPERATOR, "stats", {})
            appended.set()

        threading.Thread(target=append).start()
        time.sleep(0.5)
        assert not appended.is_set(), "an append went in while the chain was being checked"
        return check(signature)

    svc._check_chain = check_while_appending
    signed = (svc.seal_audit(OPERATOR) if command == "seal"
              else svc.audit_checkpoint(OPERATOR))
    assert appended.wait(30)
    del svc._check_chain
    assert svc.verify_audit(OPERATOR).intact
    if command == "checkpoint":
        assert signed["head_id"] < svc.trail.head().last[0]  # the append came after
