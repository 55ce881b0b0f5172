#!/usr/bin/env python
"""Throughput and latency of the queue against its ceiling and against one-image-per-request serving.

One command (`make bench`, or `python benchmarks/run.py`) runs every measurement on the same images, prints
a table and writes it to benchmarks/RESULTS.md. `--smoke` runs the same code on a handful of images (the
test suite does, so the harness cannot rot); its figures mean nothing.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pixelproof.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from pixelproof.stack import web_command, worker_command  # noqa: E402
from pixelproof.submit import Client  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.modeling.checkpoint import read_meta  # noqa: E402
from shared.modeling.device import compute_dtype, precision_name  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT, load_settings, sqlalchemy_url  # noqa: E402

CIFAKE_TEST = ROOT.parent / "shared" / "datasets" / "cifake" / "test-00000-of-00001.parquet"
# benchmarks/photos.py owns the section of RESULTS.md from this marker on; this script keeps it as it is.
PHOTOS_SECTION = "<!-- photos: written by benchmarks/photos.py -->"


# ---------------------------------------------------------------- data
def prepare_images(folder: Path, n_small: int, n_large: int, seed: int = 0) -> list[Path]:
    """n_small CIFAKE test JPEGs as they are, plus n_large photos made by upscaling to 1536 px (real decode cost)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(CIFAKE_TEST, columns=["image"]).slice(0, max(n_small, n_large))
    blobs = [row["bytes"] for row in table.column("image").to_pylist()]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_small):
        p = folder / f"small/{i:05d}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(blobs[i])
        paths.append(p)
    for i in range(n_large):
        img = Image.open(io.BytesIO(blobs[i])).convert("RGB").resize((1536, 1536), Image.BICUBIC)
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (1536, 1536, 3)), 0, 255).astype(np.uint8)
        p = folder / f"large/{i:04d}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


# ---------------------------------------------------------------- processes
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


# ---------------------------------------------------------------- measurements
def ceiling(files: list[Path], batch_size: int, cores: int) -> tuple[float, str]:
    """One process doing only the work (read, decode, preprocess, forward, in batches), in its best thread setup."""
    import torch

    from worker.inference import Classifier

    best = (0.0, "")
    for torch_threads, decode_threads in {(cores, 1), (cores, 2), (1, 1), (1, 2)}:
        torch.set_num_threads(torch_threads)
        clf = Classifier(DEFAULT_CHECKPOINT, "cpu", batch_size=batch_size, decode_threads=decode_threads,
                         precision=load_settings().precision)
        clf.classify([p.read_bytes for p in files[:batch_size]])  # warm-up
        t0 = time.perf_counter()
        for start in range(0, len(files), batch_size):
            clf.classify([p.read_bytes for p in files[start:start + batch_size]])
        rate = len(files) / (time.perf_counter() - t0)
        best = max(best, (rate, f"{torch_threads} torch thread(s), {decode_threads} decode thread(s)"))
    return best


def ceiling_processes(files: list[Path], batch_size: int, processes: int) -> float:
    """The same work split over several single-threaded processes, the layout the workers run in."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parts = [files[i::processes] for i in range(processes)]
    start, done = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [ctx.Process(target=_ceiling_part, args=(part, batch_size, start, done)) for part in parts]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for _ in procs:
        done.get()
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return len(files) / elapsed


def _ceiling_part(files, batch_size, start, done) -> None:
    import torch

    from worker.inference import Classifier

    torch.set_num_threads(1)
    clf = Classifier(DEFAULT_CHECKPOINT, "cpu", batch_size=batch_size, decode_threads=1, precision=load_settings().precision)
    clf.classify([p.read_bytes for p in files[:batch_size]])  # warm-up
    start.wait()
    for i in range(0, len(files), batch_size):
        clf.classify([p.read_bytes for p in files[i:i + batch_size]])
    done.put(True)


def end_to_end(stack: Stack, files: list[Path], folder: Path, per_request: int = 200) -> float:
    """First upload request to last result committed, through the API as a client would use it."""
    from datetime import datetime

    from sqlalchemy import func, select

    from shared.db import Database
    from shared.models import Prediction

    db = Database(stack.db_url)
    with db.session() as s:
        cached = s.scalar(select(func.count()).select_from(Prediction))
    db.engine.dispose()
    # Workers reuse a stored prediction for the same bytes and model: with any in the database, this would
    # time cache lookups instead of classification.
    assert cached == 0, f"{cached} predictions already stored: end to end needs a fresh database"
    client = Client(stack.url)
    names = [(p, str(p.relative_to(folder))) for p in files]
    t0 = time.time()
    job = None
    for start in range(0, len(names), per_request):
        job = client.upload(names[start:start + per_request], job["id"] if job else None)
    while job["status"] != "done":
        job = client.job(job["id"], wait=20, done=job["done"])
    finished = datetime.fromisoformat(job["finished_at"]).timestamp()
    assert job["done"] == len(files), job
    return len(files) / (finished - t0)


def one_image_latency(stack: Stack, image: Path, reps: int) -> tuple[float, float]:
    client = Client(stack.url)
    times = []
    for i in range(reps):
        data = image.read_bytes() + i.to_bytes(4, "big")  # new content each time: no cache hit
        t0 = time.perf_counter()
        resp = client.http.post(stack.url + "/api/jobs", files=[("files", ("one.jpg", data))], timeout=30).json()
        job = resp
        while job["status"] != "done":
            job = client.job(job["id"], wait=10, done=job["done"])
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1000, times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))] * 1000


def synchronous(tmp: Path, files: list[Path], torch_threads: int, clients: int = 4) -> float:
    """The report's design: one image per HTTP request, classified before the response."""
    port = free_port()
    env = {**os.environ, "PIXELPROOF_MODEL_PATH": str(DEFAULT_CHECKPOINT), "PIXELPROOF_TORCH_THREADS": str(torch_threads)}
    with open(tmp / "sync.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "benchmarks.sync_server:app", "--bind",
                                 f"127.0.0.1:{port}", "--workers", "2"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/classify"
        todo = list(files)
        lock = threading.Lock()

        def drive():
            session = requests.Session()
            while True:
                with lock:
                    if not todo:
                        return
                    p = todo.pop()
                session.post(url, files={"file": (p.name, p.read_bytes())}, timeout=60).raise_for_status()

        t0 = time.perf_counter()
        threads = [threading.Thread(target=drive) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(files) / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(30)


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
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, GPU: {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=10_000, help="CIFAKE test images")
    ap.add_argument("--large", type=int, default=200, help="upscaled 1536 px JPEG photos")
    ap.add_argument("--sync-images", type=int, default=2_000, help="images sent to the synchronous endpoint")
    ap.add_argument("--latency-reps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the harness runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.small, args.large, args.sync_images, args.latency_reps = 60, 4, 16, 3
    cores = os.cpu_count() or 1
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory(prefix="pixelproof-bench-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        folder = tmp / "images"
        files = prepare_images(folder, args.small, args.large)
        print(f"images: {args.small} CIFAKE 32x32 JPEG + {args.large} upscaled 1536x1536 JPEG", flush=True)

        ceil1, ceil_setup = ceiling(files, args.batch_size, cores)
        ceil2 = ceiling_processes(files, args.batch_size, cores)
        ceil = max(ceil1, ceil2)
        print(f"ceiling: one process {ceil1:.0f} images/s ({ceil_setup}), {cores} processes {ceil2:.0f} images/s", flush=True)
        sync = synchronous(tmp, files[: args.sync_images // 2] + files[-args.sync_images // 2:], 1)
        print(f"synchronous endpoint: {sync:.0f} images/s", flush=True)

        results = {}
        for workers in (1, 2):
            mem = MemoryWatch()
            sub = tmp / f"stack{workers}"
            sub.mkdir()
            # A database of its own for each run: the second would otherwise find every image's prediction
            # cached by the first (same bytes, same model) and measure cache hits, not classification.
            db_url, drop = database_url(sub)
            stack.callback(drop)
            with Stack(sub, db_url, workers, max(1, cores // workers), args.batch_size, mem) as s:
                web_pid, worker_pids = s.procs[0].pid, [p.pid for p in s.procs[1:]]
                before = (cpu_seconds([web_pid]), cpu_seconds(worker_pids), database_cpu_seconds())
                e2e = end_to_end(s, files, folder)
                after = (cpu_seconds([web_pid]), cpu_seconds(worker_pids), database_cpu_seconds())
                cpu_ms = [(b - a) * 1000 / len(files) for a, b in zip(before, after)]
                p50, p95 = one_image_latency(s, files[0], args.latency_reps) if workers == 1 else (None, None)
            mem.stop()
            results[workers] = (e2e, p50, p95, mem.peak.get("web", 0), mem.peak.get("worker", 0), cpu_ms)
            print(f"end to end, {workers} worker(s): {e2e:.0f} images/s", flush=True)

    e1, p50, p95, web_mb, worker_mb, _ = results[1]
    e2, _, _, web_mb2, worker_mb2, (web_ms, workers_ms, db_ms) = results[2]
    best = max(e1, e2)
    db_kind = "PostgreSQL" if db_url.startswith("postgresql") else "SQLite"
    rows = [
        (f"1. ceiling: one process, decode + preprocess + classify in batches ({ceil_setup})", f"{ceil1:.0f} images/s", f"{ceil1 / ceil:.2f} x ceiling"),
        (f"1. ceiling: the same work in {cores} single-threaded processes, no queue", f"{ceil2:.0f} images/s", f"{ceil2 / ceil:.2f} x ceiling"),
        (f"2. end to end, 1 worker (gunicorn, Redis, {db_kind}, Celery)", f"{e1:.0f} images/s", f"{e1 / ceil:.2f} x ceiling, {e1 / sync:.1f} x synchronous"),
        ("5. end to end, 2 workers", f"{e2:.0f} images/s", f"{e2 / ceil:.2f} x ceiling, {e2 / e1:.2f} x 1 worker"),
        ("3. synchronous endpoint, one image per request (4 clients)", f"{sync:.0f} images/s", f"best end to end = {best / sync:.1f} x this"),
        ("4. one-image job latency, upload to result seen by a long-polling client", f"p50 {p50:.0f} ms, p95 {p95:.0f} ms", "target p50 <= 250 ms"),
        ("6. peak RSS, web (largest gunicorn process)", f"{max(web_mb, web_mb2):.0f} MB", "target <= 150 MB"),
        ("6. peak RSS, worker (largest Celery process)", f"{max(worker_mb, worker_mb2):.0f} MB", "target <= 1500 MB"),
        ("7. CPU per image, end to end with 2 workers: workers / web / database server",
         f"{workers_ms:.2f} / {web_ms:.2f} / {db_ms:.2f} ms", f"ceiling: {cores * 1000 / ceil:.2f} ms"),
    ]
    notes = ("The ceiling is the faster of the two no-queue layouts. On this 2-core machine a single process is "
             "held back by its own threads (decode and OpenMP contend), so the workers run one single-threaded "
             "process per core, and the 2-worker row is the deployment `pixelproof up` starts. The 1-worker row "
             "is one process with 2 OpenMP threads beside the web, Redis and PostgreSQL on the same 2 cores. "
             "Each end-to-end run starts on an empty database, so no prediction is reused from an earlier run. "
             "Row 7 shows where the cores go: with the web and the database on the same cores, the workers get only "
             "part of them, and end to end runs at most at that share of the ceiling.")
    import torch

    if not torch.cuda.is_available():
        notes += ("\n\nNo GPU on this machine: the GPU-worker figures (ceiling and end to end with one GPU worker, "
                  "GPU utilisation) are not measured here. On a CUDA host the same command runs the workers on the "
                  "GPU (`PIXELPROOF_DEVICE=auto`).")
    table = "| measurement | figure | ratio |\n| --- | --- | --- |\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    precision = load_settings().precision  # the workers, the ceilings and the synchronous server all read this one
    report = (f"# Benchmark results\n\nMachine: {machine()}\n\nModel: `{read_meta(DEFAULT_CHECKPOINT).version}` "
              f"(the default checkpoint, which every worker serves), forward pass in "
              f"{precision_name(compute_dtype('cpu', precision))} (`PIXELPROOF_PRECISION={precision}` on this CPU)\n\nImages: {args.small} CIFAKE test JPEGs (32x32) + "
              f"{args.large} upscaled 1536x1536 JPEG photos; batch size {args.batch_size}; command: "
              f"`python benchmarks/run.py{' --smoke' if args.smoke else ''}`\n\n{table}\n\n{notes}\n")
    print("\n" + table)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    out.write_text(report + ("\n" + old[old.index(PHOTOS_SECTION):] if PHOTOS_SECTION in old else ""))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
