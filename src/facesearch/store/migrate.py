"""Bring a metadata database to the current schema with Alembic's migrations."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


@cache
def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Apply the migrations the database lacks (none, usually: checked first, cheaply)."""
    with engine.begin() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head():
            return
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
