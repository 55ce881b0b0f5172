"""What the benchmark measures, each a function of the images it is given: the no-queue ceilings, the stack
end to end, one image's latency, and the report's one-image-per-request server."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import io  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.stack import Stack, wait_http  # noqa: E402
from pixelproof.embedded_redis import free_port  # noqa: E402
from pixelproof.submit import Client, upload_all  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT, load_settings  # noqa: E402

CIFAKE_TEST = ROOT.parent / "shared" / "datasets" / "cifake" / "test-00000-of-00001.parquet"


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
    # as `pixelproof submit` sends them: the first request, then two at a time
    job = upload_all(lambda: Client(stack.url), [names[i:i + per_request] for i in range(0, len(names), per_request)])
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
