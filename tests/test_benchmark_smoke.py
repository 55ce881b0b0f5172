"""The benchmark harness runs end to end on a handful of images, so it cannot rot. Timings are not asserted."""
from __future__ import annotations

import subprocess
import sys

import pytest

from shared.settings import REPO_ROOT

from .conftest import DATASETS, unavailable

pytestmark = pytest.mark.slow


def test_benchmark_harness_smoke(tmp_path):
    if not (DATASETS / "cifake").is_dir():
        unavailable("CIFAKE parquet not found")
    from benchmarks.report import KEPT_SECTION

    out = tmp_path / "RESULTS.md"
    kept = f"{KEPT_SECTION}\n## GPU, measured by hand\n\nkept rows\n"
    out.write_text(f"# Benchmark results\n\nan earlier run's rows\n\n{kept}")
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--smoke", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "an earlier run's rows" not in text and text.endswith(kept)  # its own rows replaced, the hand-written kept
    for row in ("1. ceiling", "2. end to end, 1 worker", "3. synchronous", "4. one-image job latency",
                "5. end to end, 2 workers", "peak RSS, web", "peak RSS, worker", "7. CPU per image"):
        assert row in text
    assert "Machine:" in text and "images/s" in proc.stdout


def test_photo_benchmark_smoke(tmp_path):
    if not (DATASETS / "cifake").is_dir():
        unavailable("CIFAKE parquet not found")
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\nearlier rows\n")
    proc = subprocess.run([sys.executable, "benchmarks/photos.py", "--smoke", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Benchmark results\n\nearlier rows")  # the other script's rows are kept
    assert "| 800x600 photos |" in text and "| CIFAKE 32x32 |" in text and "x ceiling" in text


def run_smoke(script: str, out) -> str:
    """Run a benchmark script with --smoke, writing its report to out; the report's text."""
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out.read_text()


def test_hostile_benchmark_smoke(tmp_path):
    text = run_smoke("hostile.py", tmp_path / "HOSTILE.md")
    assert "| heavy/deep16.png |" in text and "peak resident memory: worker processes" in text
    assert "| heavy/scans.jpg | " in text and "too long to decode" in text


def test_evidence_cost_benchmark_smoke(tmp_path):
    text = run_smoke("evidence_cost.py", tmp_path / "EVIDENCE.md")
    assert "| photos with signed Content Credentials |" in text and "share of the pixel model's cost" in text


def test_the_report_notes_follow_the_figures():
    """The notes are derived from what was measured, so another machine's figures give other sentences."""
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.report import Figures, notes

    base = dict(cores=2, ceil_one=100.0, ceil_setup="torch 2 threads", ceil_procs=150.0, sync=20.0, e2e_1=60.0,
                e2e_2=90.0, p50_ms=120.0, p95_ms=200.0, web_mb=80.0, worker_mb=900.0, web_ms=2.0, workers_ms=14.0,
                db_ms=4.0, db_kind="PostgreSQL", gpu=False)
    text = notes(Figures(**base))
    assert "2 single-threaded processes, 1.50x one process" in text and "2 workers did best: 60% of the ceiling" in text
    assert "the workers took 70%, the web 10% and the database server 20%" in text and "No GPU" in text
    assert "Over target" not in text
    other = notes(Figures(**{**base, "ceil_one": 300.0, "e2e_1": 200.0, "p50_ms": 400.0, "gpu": True}))
    assert "one process (torch 2 threads), 2.00x 2 single-threaded processes" in other
    assert "1 worker did best: 67% of the ceiling" in other and "Over target: p50 latency 400 against 250" in other
    assert "No GPU" not in other
