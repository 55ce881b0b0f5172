"""`pixelproof submit DIR --wait` against the real stack, as a user runs it from the shell."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from pixelproof import submit

pytestmark = pytest.mark.slow


def test_submit_waits_and_writes_csv_and_json(live_stack, mini_dir, tmp_path):
    folder = tmp_path / "batch"
    (folder / "nested").mkdir(parents=True)
    files = sorted(mini_dir.rglob("*.jpg"))[::25]
    for i, p in enumerate(files):
        shutil.copy(p, (folder / "nested" if i % 2 else folder) / f"{i}-{p.name}")
    out = tmp_path / "results.csv"
    proc = subprocess.run([sys.executable, "-m", "pixelproof.cli", "submit", str(folder), "--server", live_stack,
                           "--wait", "--out", str(out), "--files-per-request", "7"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"done: {len(files)} images" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(files) and all(r["status"] == "done" for r in rows)
    assert any(r["filename"].startswith("batch/nested/") for r in rows)

    out_json = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pixelproof.cli", "submit", str(folder / "nested"), "--server",
                           live_stack, "--wait", "--out", str(out_json), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(out_json.read_text())) == len(files) // 2


def test_submit_batches_by_count_and_bytes(tmp_path, monkeypatch):
    for i in range(5):
        (tmp_path / f"{i}.jpg").write_bytes(b"x" * 100)
    monkeypatch.setattr(submit, "MAX_FILES_PER_REQUEST", 2)
    assert [len(b) for b in submit.batches(submit.collect(tmp_path))] == [2, 2, 1]
    monkeypatch.setattr(submit, "MAX_FILES_PER_REQUEST", 10)
    monkeypatch.setattr(submit, "MAX_BYTES_PER_REQUEST", 250)
    assert [len(b) for b in submit.batches(submit.collect(tmp_path))] == [2, 2, 1]


def test_submit_unreachable_server_says_so(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "pixelproof.cli", "submit", str(tmp_path), "--server",
                           "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot reach" in proc.stderr


def test_submit_while_redis_is_down_keeps_the_job_and_says_why(live_stack, redis_server, mini_dir, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    for p in sorted(mini_dir.rglob("*.jpg"))[:6]:
        shutil.copy(p, folder / p.name)
    redis_server.stop()
    try:
        proc = subprocess.run([sys.executable, "-m", "pixelproof.cli", "submit", str(folder), "--server", live_stack,
                               "--files-per-request", "3"], capture_output=True, text=True, timeout=300)
    finally:
        redis_server.start()
    assert proc.returncode == 0, proc.stderr  # both requests' files are stored in one job
    assert proc.stderr.count("warning:") == 2 and "Redis" in proc.stderr
    job_id = proc.stdout.strip().splitlines()[-1]
    job = submit.Client(live_stack).job(job_id)
    assert job["total"] == 6
