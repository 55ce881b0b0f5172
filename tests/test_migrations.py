"""Alembic is the only way the schema is made: one head, upgrades from empty, and matches the models."""
from __future__ import annotations

import os
import subprocess
import sys

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


def test_a_database_that_cannot_be_reached_or_made_stops_migrate_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELPROOF_") and k != "DATABASE_URL"}
    (tmp_path / "file").write_text("a file where the database's folder should be")
    for url, says in (
        ("postgresql://pixelproof:s3cret@127.0.0.1:1/nowhere",
         "the database at postgresql+psycopg://pixelproof:***@127.0.0.1:1/nowhere cannot be used: connection failed"),
        (f"sqlite:///{tmp_path}/file/x.db", f"the SQLite database {tmp_path}/file/x.db cannot be made: File exists"),
    ):
        run = subprocess.run([sys.executable, "-m", "pixelproof.cli", "migrate"], env={**env, "DATABASE_URL": url},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        line, = run.stderr.strip().splitlines()
        assert line.startswith("Pixelproof will not start: ") and says in line and "s3cret" not in line, line
