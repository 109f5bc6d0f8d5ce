"""A source's display name is what people read wherever its images are told of: a search's
sightings, the record of processing, an access report; the internal name stays for machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearchService, record_in_words
from tests.conftest import OPERATOR, lfw_photos
from tests.service.test_accounts_and_cases import Clock

PERSON = "Al_Sharpton"


@pytest.fixture
def svc(tmp_path: Path):
    service = FaceSearchService(Settings(home=tmp_path / "data", workers=1), Clock())
    yield service
    service.close()


def test_sightings_and_the_record_of_processing_name_a_source_by_its_display_name(
        svc: FaceSearchService) -> None:
    svc.add_source(OPERATOR, "feed-7", "legitimate_interests", "US", display_name="Daily Press")
    svc.add_source(OPERATOR, "web", "legitimate_interests", "US")
    photo = lfw_photos(PERSON)[1]
    svc.ingest(OPERATOR, [photo], "feed-7")
    svc.ingest(OPERATOR, [photo], "web", location_of=lambda _: "https://web.example/a.jpg")

    actor = svc.local_operator(OPERATOR.name)
    case = svc.open_case(actor, "T-1", "criminal investigation", offence_type="robbery")
    result = svc.search(actor, case.id, lfw_photos(PERSON)[0].read_bytes(), face="largest")
    [seen] = [p for p in result.photos if len(p.sightings) == 2]
    assert [s.source for s in seen.sightings] == ["Daily Press", "web"]  # a source with none: its name
    assert result.faces[0].candidates[0].source == "feed-7"  # machines keep the name

    record = record_in_words(svc.record_of_processing(OPERATOR))
    assert any(line.startswith("Daily Press: legitimate interests") for line in record["sources"])
    assert any(line.startswith("web: ") for line in record["sources"])
