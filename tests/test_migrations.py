"""Alembic is the only way the schema is made: one head, upgrades from empty, and matches the models."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from shared.migrate import heads, upgrade
from shared.models import Base


def test_single_head():
    assert len(heads()) == 1


def test_upgrade_from_empty_matches_models(db_url):
    upgrade(db_url)
    upgrade(db_url)  # idempotent: the service runs it on every start
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert {"jobs", "images", "predictions", "alembic_version"} <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"
