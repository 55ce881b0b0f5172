"""Run Alembic migrations from code: the service upgrades to head on start and never calls create_all."""
from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shared.settings import SettingsError


def alembic_config(url: str) -> Config:
    """Found as the package `shared.migrations` (the top-level migrations/ folder, mapped there by pyproject.toml),
    so an installed wheel migrates as a checkout does."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("shared.migrations")))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """A database that cannot be reached or written stops start-up with one line that names it (its password
    hidden) and the driver's reason, not a traceback through Alembic."""
    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        reason = (str(exc.orig or exc).strip().splitlines() or ["unknown error"])[0]
        where = make_url(url).render_as_string(hide_password=True)
        raise SettingsError(f"Pixelproof will not start: the database at {where} cannot be used: {reason}") from None


def heads(url: str = "sqlite://") -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config(url)).get_heads())
