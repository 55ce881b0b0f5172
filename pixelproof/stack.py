"""`pixelproof up`: the whole service on one machine with embedded defaults, stopped cleanly by Ctrl-C.

Processes: an embedded Redis (unless REDIS_URL is set), the Flask app under gunicorn, one Celery worker with
the sweeper's beat schedule embedded. Migrations run first, so the database is always at head.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from shared.logs import kv, setup_logging
from shared.metrics import ENV as METRICS_ENV
from shared.metrics import clear_folder
from shared.migrate import upgrade
from shared.queue import QUEUE
from shared.settings import Settings, SettingsError, load_settings, make_folder
from shared.storage import LocalStorage

from .embedded_redis import EmbeddedRedis


def web_command(port: int, workers: int = 2, threads: int = 8, host: str = "127.0.0.1") -> list[str]:
    """How the web runs everywhere: `pixelproof up`, `pixelproof web`, the tests and the benchmark."""
    # gthread: long-polling requests wait in threads without holding a whole worker process. No control
    # socket: gunicorn's default is one path per user (~/.gunicorn/gunicorn.ctl), which a second instance on
    # the host takes over and either one's stop deletes; Pixelproof is run by its own commands and signals.
    return [sys.executable, "-m", "gunicorn", "web.wsgi:app", "--bind", f"{host}:{port}", "--workers", str(workers),
            "--worker-class", "gthread", "--threads", str(threads), "--timeout", "120", "--graceful-timeout", "20",
            "--no-control-socket",
            "--access-logfile", "-", "--access-logformat", 'event=http method=%(m)s path="%(U)s" status=%(s)s ms=%(M)s']


def worker_command(concurrency: int = 1, beat_schedule: Path | None = None, pool: str = "prefork",
                   hostname: str = "worker@%h") -> list[str]:
    """How a worker runs everywhere. beat_schedule: also run the sweeper's schedule (one process only)."""
    # No mingle or gossip: workers share nothing but the queue, and these only add start-up delay and chatter.
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
           "--pool", pool, "--concurrency", str(concurrency), "--hostname", hostname, "-Q", QUEUE,
           "--without-mingle", "--without-gossip"]
    if beat_schedule:
        cmd += ["--beat", "--schedule", str(beat_schedule)]
    return cmd


def beat_schedule_path(settings: Settings) -> Path:
    """Where the one beat process keeps its schedule state: beside the service's other data."""
    return settings.data_dir / "celerybeat-schedule"


def check_folders(settings: Settings) -> None:
    """The data and upload folders are made, or start-up stops in one line, before any process is started
    (gunicorn would boot and lose one worker after another on the same error)."""
    make_folder(settings.data_dir, f"PIXELPROOF_DATA_DIR {settings.data_dir}")
    LocalStorage(settings.upload_dir)  # makes it, or stops with a SettingsError that names it


def refuse_open_exposure(settings: Settings) -> None:
    """Stop before listening when the web would be open to the network with no token required."""
    problem = settings.exposure_problem()
    if problem:
        raise SettingsError(f"Pixelproof will not start: {problem}")


def url_of(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


def check_port_free(settings: Settings) -> None:
    """Fail before starting anything when the web's port is taken (gunicorn would die after "is up")."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            raise SettingsError(f"Pixelproof will not start: port {settings.port} on {settings.host} is in use "
                                f"({exc.strerror}); stop what holds it, or set PORT to another port.") from None


def wait_ready(settings: Settings, env: dict[str, str], procs: list[subprocess.Popen],
               stopped: Callable[[], bool], timeout: float = 180) -> bool:
    """True once the web answers /healthz and a worker answers a ping; False if a process exits first."""
    from celery import Celery

    base = url_of(settings) + "healthz"
    probe = Celery(broker=env["REDIS_URL"], set_as_current=False)
    deadline = time.monotonic() + timeout
    web_ok = worker_ok = False
    try:
        while time.monotonic() < deadline:
            if stopped() or any(p.poll() is not None for p in procs):
                return False
            if not web_ok:
                try:
                    with urllib.request.urlopen(base, timeout=2) as resp:
                        web_ok = resp.status == 200
                except OSError:
                    pass
            if web_ok and not worker_ok:
                try:
                    worker_ok = bool(probe.control.ping(timeout=1.0))
                except Exception:  # noqa: BLE001 - not up yet, whatever the reason
                    worker_ok = False
            if web_ok and worker_ok:
                return True
            time.sleep(0.5)
    finally:
        probe.close()
    return False


class Supervised:
    """A child of `pixelproof up`, restarted when it exits on its own; too many restarts stop the stack (for a
    supervisor above it to see), so a crash loop is not hidden."""

    MAX_RESTARTS_PER_MINUTE = 3

    def __init__(self, name: str, start: Callable[[], object], alive: Callable[[], bool]):
        self.name, self._start, self._alive = name, start, alive
        self.restarts: list[float] = []

    def check(self) -> bool:
        """Restart if it has exited; False once it keeps exiting."""
        if self._alive():
            return True
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        print(kv(event="process_exited", process=self.name, restarts_last_minute=len(self.restarts)),
              file=sys.stderr, flush=True)
        if len(self.restarts) > self.MAX_RESTARTS_PER_MINUTE:
            print(kv(event="stack_failed", reason=f"{self.name} keeps exiting"), file=sys.stderr, flush=True)
            return False
        try:
            self._start()
            print(kv(event="process_restarted", process=self.name), file=sys.stderr, flush=True)
        except (OSError, RuntimeError) as exc:
            print(kv(event="restart_failed", process=self.name, reason=str(exc)), file=sys.stderr, flush=True)
        return True


def up() -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    refuse_open_exposure(settings)
    check_port_free(settings)
    check_folders(settings)
    # The paths as this process resolved them (absolute), so every child opens the same database and files.
    env = {**os.environ, "PIXELPROOF_DATA_DIR": str(settings.data_dir), "PIXELPROOF_MODEL_PATH": str(settings.model_path),
           "PIXELPROOF_STORAGE_DIR": str(settings.upload_dir), "DATABASE_URL": settings.db_url,
           METRICS_ENV: os.environ.get(METRICS_ENV, str(settings.prometheus_dir))}
    clear_folder(Path(env[METRICS_ENV]))  # the files of processes from an earlier run would be added in
    redis = None
    if not settings.redis_url:
        redis = EmbeddedRedis(settings.data_dir / "redis").start()
        env["REDIS_URL"] = redis.url
    upgrade(settings.db_url)
    commands = {
        "web": web_command(settings.port, host=settings.host),
        # One single-threaded model process per core beats one multi-threaded process on a shared host.
        "worker": worker_command(concurrency=os.cpu_count() or 1, beat_schedule=beat_schedule_path(settings)),
    }
    procs = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}

    def starter(name: str) -> Callable[[], object]:
        def start() -> None:
            procs[name] = subprocess.Popen(commands[name], env=env)
        return start

    supervised = [Supervised(name, starter(name), lambda n=name: procs[n].poll() is None) for name in commands]
    if redis:
        # The queue comes back on the same port with its append-only file, so queued work and the processes'
        # connections resume without anyone restarting it by hand.
        supervised.append(Supervised("redis", redis.start, lambda: redis.proc is not None and redis.proc.poll() is None))
    print("Pixelproof is starting (web, worker, model)...", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        if wait_ready(settings, env, list(procs.values()), lambda: stopping):
            print(f"\nPixelproof is ready: {url_of(settings)}   (Ctrl-C stops everything)\n", flush=True)
            print(kv(event="stack_up", url=url_of(settings), host=settings.host,
                     database=settings.db_url.split("://")[0], broker="embedded" if redis else "external"),
                  file=sys.stderr, flush=True)
        elif not stopping:
            print(kv(event="stack_failed", reason="a process exited or did not become ready"), file=sys.stderr, flush=True)
            stopping, code = True, 1
        while not stopping:
            if not all(s.check() for s in supervised):
                stopping, code = True, 1
            time.sleep(0.3)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # gunicorn and celery both finish in-flight work on TERM
        deadline = time.monotonic() + 30
        for p in procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        if redis:
            redis.stop()
        print("Pixelproof stopped.", flush=True)
    return code
