"""Settings from FACESEARCH_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesearch.config import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("FACESEARCH_HOME", "FACESEARCH_DATABASE_URL", "FACESEARCH_EXCLUDED_JURISDICTIONS"):
        monkeypatch.delenv(name, raising=False)


def test_excluded_jurisdictions_from_a_comma_list_are_trimmed_and_upper_cased(monkeypatch):
    monkeypatch.setenv("FACESEARCH_EXCLUDED_JURISDICTIONS", "fr, DE")
    assert Settings().excluded_jurisdictions == ["FR", "DE"]


def test_excluded_jurisdictions_accept_a_single_code_and_ignore_empty_items(monkeypatch):
    monkeypatch.setenv("FACESEARCH_EXCLUDED_JURISDICTIONS", " it ,, ")
    assert Settings().excluded_jurisdictions == ["IT"]


def test_excluded_jurisdictions_accept_a_json_list(monkeypatch):
    monkeypatch.setenv("FACESEARCH_EXCLUDED_JURISDICTIONS", '["FR", "ES"]')
    assert Settings().excluded_jurisdictions == ["FR", "ES"]


def test_excluded_jurisdictions_default_to_none():
    assert Settings().excluded_jurisdictions == []


def test_facesearch_home_sets_the_data_directory(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FACESEARCH_HOME", str(tmp_path / "gallery"))
    settings = Settings()
    assert settings.home == tmp_path / "gallery"
    assert settings.crops_dir == tmp_path / "gallery" / "crops"
    assert settings.index_dir == tmp_path / "gallery" / "index"


def test_metadata_url_defaults_to_sqlite_inside_home(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FACESEARCH_HOME", str(tmp_path))
    assert Settings().metadata_url == f"sqlite:///{tmp_path / 'metadata.sqlite3'}"


def test_database_url_overrides_the_sqlite_default(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FACESEARCH_DATABASE_URL", "postgresql://db/facesearch")
    assert Settings(home=tmp_path).metadata_url == "postgresql://db/facesearch"


def test_numbers_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("FACESEARCH_MAX_IMAGE_PIXELS", "1000000")
    monkeypatch.setenv("FACESEARCH_SEARCH_FALSE_MATCHES", "2.5")
    settings = Settings()
    assert settings.max_image_pixels == 1_000_000
    assert settings.search_false_matches == 2.5
