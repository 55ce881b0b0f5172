"""Run Alembic migrations from code: the service upgrades to head on start and never calls create_all."""
from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def alembic_config(url: str) -> Config:
    """Found as the package `shared.migrations` (the top-level migrations/ folder, mapped there by pyproject.toml),
    so an installed wheel migrates as a checkout does."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("shared.migrations")))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def heads(url: str = "sqlite://") -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config(url)).get_heads())
