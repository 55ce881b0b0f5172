#!/usr/bin/env python
"""Peak memory and time of the real stack on hostile uploads: the test suite's corpus plus the heavy cases
(40-megapixel 16-bit PNG, float TIFF, RGBA PNG and JPEG, and a progressive-JPEG scan bomb).

One job through gunicorn, Redis, SQLite and one Celery worker (prefork, one child, as `pixelproof up` runs per
core). Prints each file's outcome and the peak resident memory (VmHWM) of the web's and the worker's processes,
and writes benchmarks/HOSTILE_RESULTS.md. The worker's target is 1.5 GB. `--smoke` uses small heavy files so
the harness cannot rot.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stack import MemoryWatch, Stack, machine  # noqa: E402
from pixelproof.submit import Client  # noqa: E402
from tests.corpus import corpus, heavy_files  # noqa: E402

WORKER_TARGET_MB = 1536


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "HOSTILE_RESULTS.md"))
    args = ap.parse_args(argv)
    w, h, scans = (800, 600, 300) if args.smoke else (8000, 5000, 2000)
    files = heavy_files(w, h, scans) + [(name, data) for name, data, _ in corpus()]
    mem = MemoryWatch()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for name, data in files:
            (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "in" / name).write_bytes(data)
        with Stack(tmp_path, f"sqlite:///{tmp_path / 'bench.db'}", workers=1, torch_threads=1, batch_size=128,
                   mem=mem) as stack:
            client = Client(stack.url)
            t0 = time.monotonic()
            job = client.upload([(tmp_path / "in" / n, n) for n, _ in files], None)
            while job["status"] != "done":
                job = client.job(job["id"], wait=20, done=job["done"])
            seconds = time.monotonic() - t0
            items = client.results(job["id"])
            time.sleep(0.6)  # one more memory sample after the last batch
    mem.stop()
    sizes = {n: len(d) for n, d in files}
    rows = [f"| {i['filename']} | {sizes[i['filename']] / 1024:,.0f} | {i['status']} | "
            f"{(i['error'] or i['label'] or '')[:120]} |" for i in items if i["filename"] in dict(heavy_files(1, 1, 0))]
    worker, web = mem.peak.get("worker", 0.0), mem.peak.get("web", 0.0)
    report = "\n".join([
        "# Hostile uploads: peak memory and time",
        "",
        f"Written by `benchmarks/hostile.py`{' --smoke' if args.smoke else ''} on {machine()}: one job of "
        f"{len(files)} files ({len(files) - 5} from the test corpus, and the heavy ones below at {w}x{h}), "
        "through gunicorn, Redis, SQLite and one Celery worker (one prefork child).",
        "",
        "| file | KiB | status | label or error |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"- all {len(items)} files finished in {seconds:.1f} s; {job['errors']} are per-file errors",
        f"- peak resident memory: worker processes {worker:,.0f} MB (target {WORKER_TARGET_MB:,} MB: "
        f"{'met' if worker <= WORKER_TARGET_MB else 'NOT met'}), web processes {web:,.0f} MB",
        "",
    ])
    print(report)
    Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
