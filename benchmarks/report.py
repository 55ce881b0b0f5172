"""The benchmark's table and notes, from the figures measured: each sentence of the notes states something the
numbers show on the machine that ran it, not what they showed on an earlier one."""
from __future__ import annotations

from dataclasses import dataclass

# benchmarks/photos.py owns the section of RESULTS.md from this marker on; run.py keeps it as it is.
PHOTOS_SECTION = "<!-- photos: written by benchmarks/photos.py -->"
# Measurements written by hand (runs on a lent GPU, earlier hosts): run.py rewrites what comes before this, no more.
KEPT_SECTION = "<!-- kept: written by hand; benchmarks/run.py rewrites only what is above this line -->"


@dataclass
class Figures:
    cores: int
    ceil_one: float  # images/s, one process in its best thread setup
    ceil_setup: str
    ceil_procs: float  # images/s, one single-threaded process per core
    sync: float  # the one-image-per-request server
    e2e_1: float
    e2e_2: float
    p50_ms: float
    p95_ms: float
    web_mb: float
    worker_mb: float
    web_ms: float  # CPU per image with 2 workers
    workers_ms: float
    db_ms: float
    db_kind: str
    gpu: bool

    @property
    def ceiling(self) -> float:
        return max(self.ceil_one, self.ceil_procs)


def rows(f: Figures) -> list[tuple[str, str, str]]:
    ceil, best = f.ceiling, max(f.e2e_1, f.e2e_2)
    return [
        (f"1. ceiling: one process, decode + preprocess + classify in batches ({f.ceil_setup})", f"{f.ceil_one:.0f} images/s", f"{f.ceil_one / ceil:.2f} x ceiling"),
        (f"1. ceiling: the same work in {f.cores} single-threaded processes, no queue", f"{f.ceil_procs:.0f} images/s", f"{f.ceil_procs / ceil:.2f} x ceiling"),
        (f"2. end to end, 1 worker (gunicorn, Redis, {f.db_kind}, Celery)", f"{f.e2e_1:.0f} images/s", f"{f.e2e_1 / ceil:.2f} x ceiling, {f.e2e_1 / f.sync:.1f} x synchronous"),
        ("5. end to end, 2 workers", f"{f.e2e_2:.0f} images/s", f"{f.e2e_2 / ceil:.2f} x ceiling, {f.e2e_2 / f.e2e_1:.2f} x 1 worker"),
        ("3. synchronous endpoint, one image per request (4 clients)", f"{f.sync:.0f} images/s", f"best end to end = {best / f.sync:.1f} x this"),
        ("4. one-image job latency, upload to result seen by a long-polling client", f"p50 {f.p50_ms:.0f} ms, p95 {f.p95_ms:.0f} ms", "target p50 <= 250 ms"),
        ("6. peak RSS, web (largest gunicorn process)", f"{f.web_mb:.0f} MB", "target <= 150 MB"),
        ("6. peak RSS, worker (largest Celery process)", f"{f.worker_mb:.0f} MB", "target <= 1500 MB"),
        ("7. CPU per image, end to end with 2 workers: workers / web / database server",
         f"{f.workers_ms:.2f} / {f.web_ms:.2f} / {f.db_ms:.2f} ms", f"ceiling: {f.cores * 1000 / ceil:.2f} ms"),
    ]


def notes(f: Figures) -> str:
    """What these figures show, in sentences derived from them."""
    out = []
    if f.ceil_procs > f.ceil_one:
        out.append(f"The ceiling is the faster of the two no-queue layouts: {f.cores} single-threaded processes, "
                   f"{f.ceil_procs / f.ceil_one:.2f}x one process in its best thread setup ({f.ceil_setup}), which its "
                   "own threads hold back; so the workers run one single-threaded process per core, the layout "
                   "`pixelproof up` starts.")
    else:
        out.append(f"The ceiling is the faster of the two no-queue layouts: one process ({f.ceil_setup}), "
                   f"{f.ceil_one / f.ceil_procs:.2f}x {f.cores} single-threaded processes.")
    faster = "2 workers" if f.e2e_2 >= f.e2e_1 else "1 worker"
    out.append(f"End to end, {faster} did best: {max(f.e2e_1, f.e2e_2) / f.ceiling:.0%} of the ceiling, "
               f"{max(f.e2e_1, f.e2e_2) / f.sync:.1f}x the one-image-per-request server.")
    total = f.workers_ms + f.web_ms + f.db_ms
    if total > 0:
        out.append(f"Of the CPU time spent per image with 2 workers, the workers took {f.workers_ms / total:.0%}, the "
                   f"web {f.web_ms / total:.0%} and the database server {f.db_ms / total:.0%}"
                   + (" (SQLite runs inside the processes)" if f.db_kind == "SQLite" else "")
                   + f"; the ceiling needs {f.cores * 1000 / f.ceiling:.2f} ms of CPU per image, with nothing else on "
                   "the cores.")
    out.append("Each end-to-end run starts on an empty database, so no prediction is reused from an earlier run.")
    for what, value, target in (("p50 latency", f.p50_ms, 250), ("web RSS", f.web_mb, 150),
                                ("worker RSS", f.worker_mb, 1500)):
        if value > target:
            out.append(f"Over target: {what} {value:.0f} against {target}.")
    text = " ".join(out)
    if not f.gpu:
        text += ("\n\nNo GPU on this machine: the GPU-worker figures (ceiling and end to end with one GPU worker, "
                 "GPU utilisation) are not measured here. On a CUDA host the same command runs the workers on the "
                 "GPU (`PIXELPROOF_DEVICE=auto`).")
    return text


def table(f: Figures) -> str:
    return "| measurement | figure | ratio |\n| --- | --- | --- |\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows(f))
