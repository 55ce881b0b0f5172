"""Alembic migrations; installed as shared.migrations (see pyproject.toml)."""
