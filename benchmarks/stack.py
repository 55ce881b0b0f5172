"""The processes a benchmark runs and watches: the stack as a deployment runs it (gunicorn, Redis, Celery
workers, one database), and their memory and CPU."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import os  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import psutil  # noqa: E402
import requests  # noqa: E402

from pixelproof.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from pixelproof.stack import web_command, worker_command  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT, sqlalchemy_url  # noqa: E402


def rss_peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its children (none if it has gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class MemoryWatch:
    """Samples VmHWM of process trees until stopped (children come and go; the peak is kept)."""

    def __init__(self):
        self.roots: dict[str, list[int]] = {}
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        self.roots.setdefault(name, []).append(pid)

    def _run(self):
        while not self._stop.wait(0.25):
            for name, pids in list(self.roots.items()):
                for pid in pids:
                    for p in process_tree(pid):
                        self.peak[name] = max(self.peak.get(name, 0.0), rss_peak_mb(p.pid))

    def stop(self):
        self._stop.set()
        self._thread.join()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children so far."""
    total = 0.0
    for pid in pids:
        for p in process_tree(pid):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def database_cpu_seconds() -> float:
    """CPU of a PostgreSQL server on this machine (0 where the database is SQLite, inside the processes)."""
    pids = [p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]
    return cpu_seconds(pids)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


class Stack:
    """gunicorn + Redis + N Celery workers against one database, as a deployment would run them."""

    def __init__(self, tmp: Path, db_url: str, workers: int, torch_threads: int, batch_size: int, mem: MemoryWatch):
        self.tmp, self.db_url, self.workers, self.mem = tmp, db_url, workers, mem
        self.torch_threads, self.batch_size = torch_threads, batch_size
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        self.redis = EmbeddedRedis(self.tmp / "redis", persist=False).start()
        upgrade(self.db_url)
        env = {**os.environ, "DATABASE_URL": self.db_url, "REDIS_URL": self.redis.url,
               "PIXELPROOF_DATA_DIR": str(self.tmp / "data"), "PIXELPROOF_MODEL_PATH": str(DEFAULT_CHECKPOINT),
               "PIXELPROOF_TORCH_THREADS": str(self.torch_threads), "PIXELPROOF_BATCH_SIZE": str(self.batch_size),
               "PIXELPROOF_LOG_LEVEL": "WARNING"}
        self.port = free_port()
        logs = open(self.tmp / "stack.log", "ab")
        web = subprocess.Popen(web_command(self.port, host="127.0.0.1"), cwd=ROOT, env=env, stdout=logs, stderr=logs)
        self.procs.append(web)
        self.mem.watch("web", web.pid)
        for i in range(self.workers):
            w = subprocess.Popen(worker_command(hostname=f"bench{i}@%h"), cwd=ROOT, env=env, stdout=logs, stderr=logs)
            self.procs.append(w)
            self.mem.watch("worker", w.pid)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/healthz")
        deadline = time.monotonic() + 120
        while (self.tmp / "stack.log").read_text(errors="ignore").count("event=model_loaded") < self.workers:
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not load the model")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.redis.stop()


def database_url(tmp: Path) -> tuple[str, callable]:
    """A fresh PostgreSQL database where one is reachable (as in production), else SQLite."""
    from sqlalchemy import create_engine, text

    admin = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("TEST_POSTGRES_URL") or "postgresql://root@127.0.0.1:5432/postgres"
    admin = sqlalchemy_url(admin)
    name = f"pixelproof_bench_{secrets.token_hex(4)}"
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception:  # noqa: BLE001 - fall back to the embedded default
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None

    def drop():
        with engine.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.rsplit("/", 1)[0] + "/" + name, drop


def machine() -> str:
    """The host, with what makes two hosts of the same name differ by 2x: clock and vector extensions."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere the line names less
    info = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []

    def field(name: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith(name)), "")

    cpu = field("model name") or platform.processor()
    flags = set(field("flags").split())
    isa = next((label for flag, label in (("avx512_bf16", "AVX-512 with BF16"), ("avx512f", "AVX-512"),
                                          ("avx2", "AVX2, no AVX-512")) if flag in flags), "no AVX2")
    mhz = field("cpu MHz")
    clock = f", {float(mhz) / 1000:.2f} GHz" if mhz else ""
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{os.cpu_count()} cores ({cpu}{clock}, {isa}), {mem:.0f} GiB RAM, GPU: {gpu}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")
