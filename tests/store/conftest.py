"""The store tests run on a SQLite file and, when FACESEARCH_TEST_POSTGRES_URL names a server
(scripts/test.sh starts one with scripts/postgres.sh), on PostgreSQL too."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

POSTGRES = os.environ.get("FACESEARCH_TEST_POSTGRES_URL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite", "postgresql"] if POSTGRES else ["sqlite"])


@pytest.fixture
def database_url(backend: str, tmp_path) -> str:
    """An empty database of the backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    engine = create_engine(POSTGRES)
    with engine.begin() as conn:  # a clean slate: the test database belongs to the tests
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return POSTGRES
