"""Typed settings, read from the environment in one place.

Every process (web, worker, CLI) calls :func:`load_settings` once at start-up; an invalid value stops the
process there with a message naming the variable, instead of failing on the first request.
"""
from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import limits

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "default.safetensors"  # crop-based detector for real uploads
CIFAKE_CHECKPOINT = REPO_ROOT / "models" / "cifake" / "cifake.safetensors"  # the earlier 32x32 CIFAKE model

# Arithmetic of the forward pass (shared.modeling.device.compute_dtype); "auto" follows the hardware.
Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


class SettingsError(SystemExit):
    """Raised at start-up when the environment does not describe a runnable service."""


def make_folder(folder: Path, what: str, advice: str = "") -> None:
    """Make a folder the settings name (the data folder, the uploads', the SQLite database's), or stop start-up
    in one line that says which and why, not with a traceback in every process."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"Pixelproof will not start: {what} cannot be made: {exc.strerror} ({exc.filename})"
                            f"{advice}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIXELPROOF_", extra="ignore", frozen=True)

    # Where state lives. SQLite and a local folder are the embedded defaults.
    data_dir: Path = Path("var")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    storage_dir: Path | None = None
    port: int = Field(default=8000, ge=1, le=65535, validation_alias="PORT")
    # The web listens on loopback unless told otherwise; see exposure_problem().
    host: str = Field(default="127.0.0.1", min_length=1)
    allow_open_access: bool = False  # listen beyond loopback with no API tokens, knowingly

    # The model.
    model_path: Path = DEFAULT_CHECKPOINT
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(default=limits.BATCH_SIZE, ge=1, le=4096)
    decode_threads: int = Field(default=2, ge=1, le=64)
    torch_threads: int = Field(default=0, ge=0, le=256)  # 0: let the worker pick from its CPU share

    # Limits on what users may send; see README "Limits".
    max_file_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    max_request_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=limits.MAX_PIXELS, ge=1)
    max_jpeg_scans: int = Field(default=limits.MAX_JPEG_SCANS, ge=1)
    max_files_per_job: int = Field(default=50_000, ge=1)
    max_files_per_request: int = Field(default=2_000, ge=1)
    rate_limit_per_minute: int = Field(default=0, ge=0)  # upload requests per client; 0 disables
    # Long-polls (?wait=) each hold a web thread: at most this many per web process, and per client, at once.
    long_poll_slots: int = Field(default=4, ge=1, le=1000)
    long_poll_per_client: int = Field(default=2, ge=1, le=1000)

    # Access: when tokens are set, every API call needs one and sees only its own jobs.
    api_tokens: Annotated[tuple[str, ...], NoDecode] = ()

    # Queue behaviour.
    task_time_limit: int = Field(default=600, ge=10)
    visibility_timeout: int = Field(default=3600, ge=60)
    max_attempts: int = Field(default=3, ge=1, le=100)  # deliveries of an image before it is marked error
    stale_after: int = Field(default=900, ge=1)  # seconds before the sweeper re-enqueues an unfinished image
    sweep_interval: float = Field(default=10.0, gt=0)  # an indexed query; also how soon unsent images go out
    worker_max_memory_kb: int = Field(default=2_000_000, ge=100_000)

    # Webhooks (shared.webhooks): nothing is sent to an address outside the allow-list (comma-separated URL
    # prefixes: scheme, host and port must match, the path must be under the entry's). Empty: webhooks off.
    webhook_allowlist: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_secret: str | None = Field(default=None, min_length=16)  # HMAC-SHA256 key of the signatures
    webhook_max_attempts: int = Field(default=6, ge=1, le=30)
    webhook_backoff_s: float = Field(default=10.0, gt=0, le=3600)  # first retry delay; doubled each time
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)

    # Retention: jobs older than this many days are deleted, with their uploads (off when unset).
    retention_days: float | None = Field(default=None, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)  # how often the beat schedule looks

    # Prometheus multi-process files of the web and worker processes (shared.metrics); default data_dir/metrics.
    metrics_dir: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("api_tokens", "webhook_allowlist", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        return sqlalchemy_url(value) if value is not None else None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
            raise ValueError("must be a redis:// URL")
        return value

    @field_validator("webhook_allowlist")
    @classmethod
    def _url_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from urllib.parse import urlsplit

        for entry in value:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"{entry!r} is not an http(s)://host[:port][/path] prefix")
        return value

    @model_validator(mode="after")
    def _webhooks_signed(self) -> Settings:
        if self.webhook_allowlist and not self.webhook_secret:
            raise ValueError("PIXELPROOF_WEBHOOK_SECRET must be set (16+ characters) when "
                             "PIXELPROOF_WEBHOOK_ALLOWLIST is: every webhook is signed with it")
        return self

    @field_validator("data_dir", "storage_dir", "model_path", "metrics_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Made absolute once, against the directory the process starts in; `pixelproof up` hands the absolute
        paths to the processes it starts, so all of them open the same files wherever they run."""
        return value.expanduser().resolve() if value is not None else None

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pixelproof.db'}"

    @cached_property
    def upload_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "uploads"

    @cached_property
    def prometheus_dir(self) -> Path:
        return self.metrics_dir or self.data_dir / "metrics"

    def exposure_problem(self) -> str | None:
        """Why the web must not start as configured: reachable from other machines with no token asked."""
        if self.api_tokens or self.allow_open_access or _is_loopback(self.host):
            return None
        return (
            f"PIXELPROOF_HOST={self.host} makes every job and thumbnail readable from the network, and "
            "PIXELPROOF_API_TOKENS is empty. Set PIXELPROOF_API_TOKENS, or listen on 127.0.0.1 (the default), "
            "or set PIXELPROOF_ALLOW_OPEN_ACCESS=true if something in front of Pixelproof already controls access."
        )

    def broker_url(self) -> str:
        if not self.redis_url:
            raise SettingsError(
                "REDIS_URL is not set: point it at a Redis server (redis://host:6379/0), "
                "or start the embedded stack with `make up` / `pixelproof up`."
            )
        return self.redis_url


def sqlalchemy_url(url: str) -> str:
    """postgresql://... as SQLAlchemy must be told to reach it (through psycopg 3); other URLs unchanged."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def _env_name(field: str) -> str:
    """The variable a field is read from (DATABASE_URL, PORT, or PIXELPROOF_<NAME>)."""
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return "PIXELPROOF_" + field.upper()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, failing with one readable message per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _env_name(str(err["loc"][0])) if err["loc"] else "settings"
            got = f" (got {err.get('input')!r})" if err["loc"] else ""
            lines.append(f"  {name}: {err['msg']}{got}")
        raise SettingsError("Invalid Pixelproof settings:\n" + "\n".join(lines)) from None
