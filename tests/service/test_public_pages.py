"""What the public learns through the service: a request's status by its number and nothing
else, refused for an unknown number and past the address's allowance; an access report that
names sources by their display name and lawful bases in words, and an agency's case number only
where its organisation allows it (set by its admin or the operator, audited); a selfie of two
people side by side is refused."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from facesearch.config import Settings
from facesearch.errors import InvalidRequest, NotFound, RateLimited
from facesearch.service import FaceSearchService, lawful_basis_in_words
from facesearch.service.rights import STATUS_WORDS
from tests.conftest import OPERATOR, jpeg_bytes, lfw_photos, log_in
from tests.service.test_accounts_and_cases import PASSWORD, Clock, people
from tests.service.test_governance import NEAR, audited

CASE_NUMBER = "HOMICIDE-2026-0042"  # an agency's own number, telling of an investigation


@pytest.fixture
def clock() -> Clock:
    return Clock()


def service(tmp_path: Path, clock: Clock, **settings: object) -> FaceSearchService:
    return FaceSearchService(Settings(home=tmp_path / "data", workers=1, **settings), clock)


def photo(person: str, number: int) -> bytes:
    return lfw_photos(person)[number].read_bytes()


def test_a_request_number_shows_its_status_and_nothing_else(tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock, public_attempts_per_hour=5)
    try:
        team = people(svc)
        svc.create_user(OPERATOR, "dan", PASSWORD, "dpo", "Org")
        dan = log_in(svc, "dan", PASSWORD)[0]
        ack = svc.request_access("10.7.7.1", photo(NEAR[0], 0), "secret-contact@example.org")
        opt_out = svc.opt_out("10.7.7.1", photo(NEAR[1], 0))

        status = svc.request_status("10.7.7.2", ack.request_id.upper())  # as typed, any case
        assert asdict(status) == {
            "request_id": ack.request_id, "kind": "access", "received_at": ack.received_at,
            "deadline": ack.deadline, "status": STATUS_WORDS["access", "pending"]}
        [request_id] = [r.id for r in svc.access_requests(dan) if r.public_id == ack.request_id]
        svc.decide_access_request(dan, request_id, approve=False, note="not the person")
        refused = svc.request_status("10.7.7.2", ack.request_id)
        assert refused.status.startswith("refused") and "not the person" not in str(asdict(refused))
        assert "secret-contact" not in str(asdict(refused))
        hidden = svc.request_status("10.7.7.2", f"  {opt_out.request_id} ")
        assert (hidden.kind, hidden.deadline) == ("erasure", None)
        assert hidden.status == STATUS_WORDS["erasure", "hidden"]

        # A number nobody was given is refused, and audited like other anonymous refusals.
        for unknown in ("0123456789abcdef", "not a number"):
            with pytest.raises(NotFound, match="no request has this number"):
                svc.request_status("10.7.7.2", unknown)
        [record] = audited(svc, "request.status.refused")
        assert record["detail"]["reason"] == "unknown request number"
        # Five look-ups this hour from that address: the sixth is refused, even a good number.
        with pytest.raises(RateLimited, match="hour"):
            svc.request_status("10.7.7.2", ack.request_id)
        assert svc.request_status("10.7.7.3", ack.request_id).request_id == ack.request_id
    finally:
        svc.close()


def test_an_access_report_names_case_numbers_only_where_the_organisation_allows_it(
        tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock)
    try:
        team = people(svc)
        svc.add_source(OPERATOR, "press-2026", "legitimate_interests", "FR",
                       display_name="Regional press archive")
        svc.ingest(OPERATOR, lfw_photos(NEAR[0])[1:3], "press-2026")
        svc.create_user(OPERATOR, "dan", PASSWORD, "dpo", "Org")
        dan = log_in(svc, "dan", PASSWORD)[0]
        case = svc.open_case(team["ivy"], CASE_NUMBER, "missing person", offence_type="robbery")
        svc.search(team["ivy"], case.id, photo(NEAR[0], 0))

        def report(client: str) -> object:
            ack = svc.request_access(client, photo(NEAR[0], 0), "me@example.org")
            [request_id] = [r.id for r in svc.access_requests(dan) if r.public_id == ack.request_id]
            return svc.access_report(client, svc.decide_access_request(dan, request_id, True))

        hidden = report("10.8.8.1")
        assert len(hidden.images) == 2
        for image in hidden.images:
            assert image.source == "Regional press archive"
            assert image.lawful_basis == "legitimate interests (GDPR Art. 6(1)(f))"
            [used] = image.returned_by_searches
            assert (used.organisation, used.case) == ("Org", None)
            assert used.date[:10] == clock.now.date().isoformat()
        assert CASE_NUMBER not in str(asdict(hidden))

        # Another organisation's admin cannot allow it; the organisation's own admin can.
        svc.create_user(OPERATOR, "oda", PASSWORD, "admin", "Other Org")
        oda = log_in(svc, "oda", PASSWORD)[0]
        with pytest.raises(NotFound):
            svc.reveal_case_numbers(oda, "Org", True)
        assert audited(svc, "organisation.reveal_case_numbers.refused")[0]["actor"] == "oda"
        svc.reveal_case_numbers(team["ada"], "Org", True)
        [record] = audited(svc, "organisation.reveal_case_numbers")
        assert record["actor"] == "ada" and record["detail"] == {"organisation": "Org", "reveal": True}
        shown = report("10.8.8.2")
        assert {s.case for image in shown.images for s in image.returned_by_searches} == {CASE_NUMBER}
        # And the operator can take it back.
        svc.reveal_case_numbers(OPERATOR, "Org", False)
        again = report("10.8.8.3")
        assert {s.case for image in again.images for s in image.returned_by_searches} == {None}
    finally:
        svc.close()


def test_every_lawful_basis_reads_in_words_with_its_article() -> None:
    assert lawful_basis_in_words("legitimate_interests") == "legitimate interests (GDPR Art. 6(1)(f))"
    assert lawful_basis_in_words("public_task") == "a task in the public interest (GDPR Art. 6(1)(e))"
    for code in ("consent", "contract", "legal_obligation", "vital_interests"):
        words = lawful_basis_in_words(code)
        assert "_" not in words and "GDPR Art. 6(1)(" in words
    assert lawful_basis_in_words("some_new_basis") == "some new basis"


def test_a_selfie_of_two_people_side_by_side_is_refused_and_gives_its_place_back(
        tmp_path: Path, clock: Clock) -> None:
    svc = service(tmp_path, clock, public_requests_per_day=1)
    try:
        one = Image.open(lfw_photos(NEAR[0])[0]).convert("RGB")
        other = Image.open(lfw_photos(NEAR[1])[0]).convert("RGB")
        pair = Image.new("RGB", (one.width + other.width, one.height), "white")
        pair.paste(one, (0, 0))
        pair.paste(other, (one.width, 0))
        with pytest.raises(InvalidRequest, match="more than one person"):
            svc.opt_out("10.9.1.1", jpeg_bytes(pair))
        assert svc.opt_out("10.9.1.1", photo(NEAR[0], 0)).request_id  # the day's one request
    finally:
        svc.close()
