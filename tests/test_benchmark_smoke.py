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
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--smoke", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
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
