"""Fixtures for tests on real parts: a real redis-server, real PostgreSQL and SQLite, real Celery workers."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pixelproof.embedded_redis import EmbeddedRedis
from shared.migrate import upgrade
from shared.settings import DEFAULT_CHECKPOINT, REPO_ROOT, load_settings, sqlalchemy_url

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
MINI = DATASETS / "cifake-mini"
REQUIRE_ALL = os.environ.get("PIXELPROOF_REQUIRE_ALL_TESTS") == "1"


def unavailable(reason: str) -> None:
    """Skip on a developer's machine without the thing; fail in CI, where everything must run."""
    if REQUIRE_ALL:
        pytest.fail(f"required for CI but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mini_dir() -> Path:
    if not MINI.is_dir():
        unavailable(f"{MINI} not found")
    return MINI


@pytest.fixture(scope="session")
def _redis_server(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_redis_server):
    """A real Redis, emptied before each test so no message from another test reaches its workers."""
    from redis import Redis

    if _redis_server.proc is None or _redis_server.proc.poll() is not None:
        _redis_server.start()
    Redis.from_url(_redis_server.url).flushall()
    return _redis_server


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres")
    url = sqlalchemy_url(url)
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any reason means "no server here"
        unavailable(f"PostgreSQL not reachable at {url}: {exc}")
    return url


@pytest.fixture
def pg_url(pg_admin_url):
    """A fresh database per test, dropped afterwards."""
    name = f"pixelproof_t_{secrets.token_hex(5)}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pixelproof.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'pixelproof.db'}"


def service_env(db_url: str, redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a web or worker process of the stack under test runs with."""
    # Each stack writes its metrics to its own data dir (never to a folder an in-process app named earlier).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELPROOF_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "PIXELPROOF_DATA_DIR": str(data_dir),
        "PIXELPROOF_MODEL_PATH": str(DEFAULT_CHECKPOINT), "PIXELPROOF_TORCH_THREADS": "1",
        "PIXELPROOF_DECODE_THREADS": "1", "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@pytest.fixture
def stack_env(db_url, redis_server, tmp_path):
    upgrade(db_url)
    return service_env(db_url, redis_server.url, tmp_path / "data")


@pytest.fixture
def make_app(monkeypatch, tmp_path):
    """Build the real Flask app from an environment, as gunicorn would."""
    from web.app import create_app

    def build(env: dict[str, str]):
        for key in [k for k in os.environ if k.startswith("PIXELPROOF_") or k in ("DATABASE_URL", "REDIS_URL")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "app-metrics"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = create_app(load_settings())
        app.testing = True
        return app

    return build


@pytest.fixture
def live_stack_env():
    """Extra environment for live_stack's processes (override in a module, e.g. to require tokens)."""
    return {}


@pytest.fixture
def live_stack(sqlite_url, redis_server, tmp_path, live_stack_env):
    """gunicorn serving the app and one Celery worker, on SQLite and a real Redis; yields the base URL."""
    from pixelproof.embedded_redis import free_port

    from .processes import start_web, start_worker

    upgrade(sqlite_url)
    env = service_env(sqlite_url, redis_server.url, tmp_path / "data", **live_stack_env)
    port = free_port()
    web = start_web(env, tmp_path / "web.log", port)
    worker = start_worker(env, tmp_path / "worker.log")
    yield f"http://127.0.0.1:{port}"
    worker.stop()
    web.stop()


@pytest.fixture
def start_web_only(redis_server, tmp_path):
    """Start gunicorn (one process, 8 threads) with nothing consuming the queue, so jobs stay unfinished;
    call with a database URL and extra settings; returns the base URL. Stopped after the test."""
    from pixelproof.embedded_redis import free_port

    from .processes import start_web

    started = []

    def start(db_url: str, **extra: str) -> str:
        upgrade(db_url)
        port = free_port()
        started.append(start_web(service_env(db_url, redis_server.url, tmp_path / "data", **extra),
                                 tmp_path / "web.log", port))
        return f"http://127.0.0.1:{port}"

    start.data_dir = tmp_path / "data"
    yield start
    for web in started:
        web.stop()


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (a disk that can be filled) where this machine allows it; call with a name and MiB."""
    import subprocess

    mounted = []

    def mount(name: str, size_mib: int) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            pytest.skip(f"this machine does not allow mounting a tmpfs: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(folder: Path) -> Path:
    """Write into folder until its filesystem has no room left; returns the filler to delete."""
    import errno

    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with open(folder / "filler-2", "wb", buffering=0) as f:  # and the last partial page
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler
