"""`pixelproof submit DIR --wait` against the real stack, as a user runs it from the shell."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

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
    assert f"encodings: JPEG quality 70-79 x{len(files)}\n" in proc.stdout  # one encoding: no warning
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(files) and all(r["status"] == "done" for r in rows)
    assert any(r["filename"].startswith("batch/nested/") for r in rows)
    # three requests, the last two in flight at once: one job, and the CSV in the folder's order
    assert [r["filename"] for r in rows] == [name for _, name in submit.collect(folder)]

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


def test_uploads_after_the_first_go_two_at_a_time_into_its_job():
    """The first request makes the job; the others are added to it with two in flight (a barrier of two
    only opens when two uploads wait at once: one at a time would time out)."""
    import threading

    barrier, calls, lock = threading.Barrier(2, timeout=10), [], threading.Lock()

    class Recorder:
        def upload(self, chunk, job_id, callback_url=None, title=None):
            with lock:
                calls.append((chunk[0][1], job_id, callback_url, title))
            if job_id is None:
                return {"id": "job-1", "total": len(chunk)}
            barrier.wait()
            return {"id": job_id}

    chunks = [[(Path(f"{i}.jpg"), f"{i}.jpg")] for i in range(5)]
    seen: list[int] = []
    job = submit.upload_all(Recorder, chunks, "https://hooks.example/x", parallel=2, progress=seen.append, title="t")
    assert job["id"] == "job-1" and seen == [1] * 5
    assert calls[0] == ("0.jpg", None, "https://hooks.example/x", "t")  # only the first makes the job
    assert sorted(c[0] for c in calls[1:]) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert all(c[1] == "job-1" and c[2] is None and c[3] is None for c in calls[1:])


def test_the_streamed_body_is_the_one_urllib3_would_build_in_memory(tmp_path):
    from urllib3 import encode_multipart_formdata

    files = []
    for i, name in enumerate(["a.jpg", 'dir/\u00fc "q".png', "x\r\ny.txt", "no-extension"]):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes(range(256)) * (4097 * (i % 2)) + b"z" * i)  # over a read of 1 MiB, and empty
        files.append((path, name))
    body = submit.MultipartFiles(files, boundary="b0undary")
    sent = b"".join(body)
    expected, content_type = encode_multipart_formdata([("files", (n, p.read_bytes())) for p, n in files],
                                                       boundary="b0undary")
    assert sent == expected and len(body) == len(sent) and body.content_type == content_type


def test_a_file_that_changes_size_while_it_is_sent_is_named(tmp_path):
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"x" * 10)
    body = submit.MultipartFiles([(path, "growing.jpg")])
    path.write_bytes(b"x" * 11)
    with pytest.raises(submit.SubmitError, match="growing.jpg changed size"):
        b"".join(body)


def test_a_file_that_cannot_be_read_while_it_is_sent_is_named(tmp_path):
    path = tmp_path / "gone.jpg"
    path.write_bytes(b"x" * 10)
    body = submit.MultipartFiles([(path, "gone.jpg")])
    path.unlink()
    path.mkdir()  # opening a folder fails (IsADirectoryError) even for root
    with pytest.raises(submit.SubmitError, match="cannot read .*gone.jpg"):
        b"".join(body)


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


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelproof.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def folder(tmp_path, mini_dir):
    out = tmp_path / "pics"
    out.mkdir()
    for p in sorted((mini_dir / "real").iterdir())[:2]:
        shutil.copy(p, out / p.name)
    return out


def test_a_bad_out_is_reported_before_anything_is_sent(folder, tmp_path):
    # the server is unreachable on purpose: the --out problem must be found first
    proc = run_cli("submit", str(folder), "--server", "http://127.0.0.1:1", "--wait", "--out",
                   str(tmp_path / "missing" / "r.csv"))
    assert proc.returncode == 2 and "folder" in proc.stderr and "does not exist" in proc.stderr
    assert "reach" not in proc.stderr and not (tmp_path / "missing").exists()  # nor created silently
    proc = run_cli("submit", str(folder), "--server", "http://127.0.0.1:1", "--out", str(tmp_path / "r.csv"))
    assert proc.returncode == 2 and "--out needs --wait" in proc.stderr


def test_a_server_that_is_down_gets_one_clear_line(folder):
    proc = run_cli("submit", str(folder), "--server", "http://127.0.0.1:1")
    assert proc.returncode == 2
    assert "cannot reach the Pixelproof server at http://127.0.0.1:1 (connection refused)" in proc.stderr
    assert "make up" in proc.stderr and "Traceback" not in proc.stderr and "HTTPConnectionPool" not in proc.stderr
    assert proc.stderr.count("upload") <= 1  # the progress line is not drawn twice around the error


@pytest.mark.parametrize("server, message", [("127.0.0.1:8000", "must be an http:// or https:// address"),
                                             ("localhost", "must be an http:// or https:// address")])
def test_a_server_without_a_scheme_is_named(folder, server, message):
    proc = run_cli("submit", str(folder), "--server", server)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_server_address_with_a_wrong_path_is_named(folder, live_stack):
    proc = run_cli("submit", str(folder), "--server", live_stack + "/static")
    assert proc.returncode == 2 and "did not answer as a Pixelproof server" in proc.stderr
    assert "<html" not in proc.stderr.lower() and "Traceback" not in proc.stderr


@pytest.mark.parametrize("live_stack_env", [{"PIXELPROOF_MAX_FILE_BYTES": "30000"}])
def test_an_oversized_file_is_skipped_and_the_rest_classified(folder, live_stack, tmp_path):
    (folder / "huge.jpg").write_bytes(b"\xff\xd8" + b"x" * 40000)
    out = tmp_path / "r.csv"
    proc = run_cli("submit", str(folder), "--server", live_stack, "--wait", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 file over the 0.0286102 MiB limit" in proc.stderr and "pics/huge.jpg" in proc.stderr
    assert "done: 2 images" in proc.stdout and len(list(csv.DictReader(out.open()))) == 2


def test_help_documents_every_argument_default_and_environment_variable():
    import argparse

    from pixelproof.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    undocumented = [(name, a.dest) for name, sub in commands.items() for a in sub._actions
                    if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not undocumented
    top = run_cli("--help").stdout
    assert "composition root" not in top and "pixelproof up" in top and "PIXELPROOF_API_TOKENS" in top
    submit_help = run_cli("submit", "--help").stdout
    assert "PIXELPROOF_SERVER" in submit_help and "PIXELPROOF_TOKEN" in submit_help and "(default:" in submit_help
    up_help = run_cli("up", "--help").stdout
    assert "PORT" in up_help and "DATABASE_URL" in up_help and "PIXELPROOF_HOST" in up_help
    web_help = " ".join(run_cli("web", "--help").stdout.split())
    assert "--threads THREADS threads per process" in web_help and "(default: 8)" in web_help
    # a default is said once, and "None" is never shown as one (required options have none)
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        assert "(default: None)" not in text, name
        assert not re.search(r"default[^()]*\) \(default:", text), name
    assert "(default: 200, fewer when they are large)" in " ".join(submit_help.split())


def test_jobs_lists_the_tokens_jobs_newest_first(start_web_only, sqlite_url, folder, tmp_path):
    """`pixelproof jobs` against a real web (no worker: the jobs stay queued), tokens on and off. Each job is
    titled by its folder's name unless --title says otherwise ("" for none), and the list shows it."""
    base = start_web_only(sqlite_url, PIXELPROOF_API_TOKENS="alpha,beta")
    made = []
    for token, files, title in (("alpha", 1, []), ("beta", 1, ["--title", ""]), ("alpha", 2, [])):  # the folder holds two
        picked = tmp_path / f"{token} photos, {files}"
        picked.mkdir()
        for p in sorted(folder.iterdir())[:files]:
            shutil.copy(p, picked / p.name)
        proc = run_cli("submit", str(picked), "--server", base, "--token", token, *title)
        assert proc.returncode == 0, proc.stderr
        made.append(proc.stdout.strip())
    proc = run_cli("jobs", "--server", base, "--token", "alpha")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.rsplit("?job=", 1)[1] for line in lines] == [made[2], made[0]], lines  # newest first, alpha's only
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d  queued     alpha photos, 2: 0/2 files, real 0, AI-generated 0, "
                        rf"uncertain 0  {re.escape(base)}/\?job={made[2]}", lines[0]), lines[0]
    again = requests.post(f"{base}/api/jobs/{made[0]}/rerun", headers={"Authorization": "Bearer alpha"}, timeout=30)
    proc = run_cli("jobs", "--server", base, "--token", "alpha", "--limit", "1")
    assert proc.returncode == 0 and "  queued     alpha photos, 1: 0/1 files" in proc.stdout, proc.stdout
    assert proc.stdout.strip().endswith(f", again of {made[0]}  {base}/?job={again.json()['id']}"), proc.stdout
    proc = run_cli("jobs", "--server", base, "--token", "alpha", "--title", "PHOTOS, 2")
    assert proc.returncode == 0 and proc.stdout.strip().endswith(f"?job={made[2]}") and len(proc.stdout.splitlines()) == 1
    proc = run_cli("jobs", "--server", base, "--token", "alpha", "--title", "nothing like it")
    assert proc.returncode == 0 and proc.stdout.strip() == "no jobs titled with 'nothing like it'", proc.stdout
    proc = run_cli("jobs", "--server", base, "--token", "beta", "--limit", "1")
    assert proc.returncode == 0 and proc.stdout.strip().endswith(f"?job={made[1]}"), proc.stdout + proc.stderr
    assert "  queued     0/1 files" in proc.stdout, proc.stdout  # --title "": untitled
    proc = run_cli("jobs", "--server", base)
    assert proc.returncode == 2 and "an API token is required" in proc.stderr and "Traceback" not in proc.stderr
    open_server = start_web_only(sqlite_url)
    proc = run_cli("jobs", "--server", open_server)
    assert proc.returncode == 2 and "listing jobs needs API tokens" in proc.stderr, proc.stderr


def test_an_upload_that_stops_part_way_says_how_to_finish_it_and_job_sends_only_the_rest(start_web_only, sqlite_url,
                                                                                           mini_dir, tmp_path):
    """A refusal after the job was made names the job and the command that finishes it; `submit DIR --job ID`
    then sends only the files the job does not hold (by name, as the folder names them), and again nothing."""
    folder = tmp_path / "desk photos"
    (folder / "day 2").mkdir(parents=True)
    picks = sorted((mini_dir / "real").iterdir())[:5]
    for p in picks[:3]:
        shutil.copy(p, folder / p.name)
    for p in picks[3:]:
        shutil.copy(p, folder / "day 2" / p.name)
    full = start_web_only(sqlite_url, PIXELPROOF_MAX_FILES_PER_JOB="2")
    proc = run_cli("submit", str(folder), "--server", full, "--files-per-request", "1", "--parallel", "1")
    assert proc.returncode == 2 and "a job holds at most 2 files" in proc.stderr, proc.stderr
    job_id = re.search(r"job (\S+) holds the files sent before this", proc.stderr).group(1)
    assert f"`pixelproof submit '{folder}' --job {job_id}` sends the ones it does not hold yet" in proc.stderr
    assert "Traceback" not in proc.stderr

    base = start_web_only(sqlite_url)  # the same database, without the limit
    proc = run_cli("submit", str(folder), "--server", base, "--job", f"{base}/?job={job_id}", "--parallel", "1",
                   "--files-per-request", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"job {job_id} (desk photos) holds 2 of these 5 files; sending the other 3" in proc.stderr
    assert proc.stdout.strip() == job_id
    names = [r["filename"] for r in submit.Client(base).results(job_id)]
    assert sorted(names) == sorted(name for _, name in submit.collect(folder)) and len(names) == 5
    proc = run_cli("submit", str(folder), "--server", base, "--job", job_id)
    assert proc.returncode == 0 and "holds 5 of these 5 files; sending the other 0" in proc.stderr, proc.stderr
    assert len(submit.Client(base).results(job_id)) == 5
    for extra, said in ((["--title", "x"], "--title and --callback-url are for a new job"),
                        ([], "no job with id 'nosuchjob'")):
        proc = run_cli("submit", str(folder), "--server", base, "--job", "nosuchjob" if not extra else job_id, *extra)
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    requests.post(f"{base}/api/jobs/{job_id}/cancel", timeout=30)
    proc = run_cli("submit", str(folder), "--server", base, "--job", job_id)
    assert proc.returncode == 2 and "was cancelled, and takes no more files" in proc.stderr, proc.stderr


def test_rerun_classifies_a_jobs_files_again_and_writes_them(live_stack, folder, tmp_path):
    """`pixelproof rerun JOB --wait --out` against the real stack: a new job of the same files, followed to its end,
    its results in upload order; the earlier job is named, as an id or as its page's address."""
    proc = run_cli("submit", str(folder), "--server", live_stack, "--wait")
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.rsplit("?job=", 1)[1].split()[0]
    out = tmp_path / "again.csv"
    proc = run_cli("rerun", f"{live_stack}/?job={first}", "--server", live_stack, "--wait", "--out", str(out),
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    again = proc.stderr.rsplit("?job=", 1)[1].split()[0]
    assert again != first and f"job {first} is classified again as job {again} ({folder.name})" in proc.stderr
    assert "done: 2 images" in proc.stdout
    client = submit.Client(live_stack)
    assert client.job(again)["rerun_of"] == first and client.job(again)["title"] == folder.name
    rows = list(csv.DictReader(out.open()))
    assert [r["filename"] for r in rows] == [r["filename"] for r in client.results(first)]
    assert all(r["status"] == "done" for r in rows)
    proc = run_cli("rerun", first, "--server", live_stack, "--title", "new model")  # no --wait: the new job's id alone
    assert proc.returncode == 0 and client.job(proc.stdout.strip())["rerun_of"] == first, proc.stderr
    assert client.job(proc.stdout.strip())["title"] == "new model"
    proc = run_cli("rerun", "nosuchjob", "--server", live_stack)
    assert proc.returncode == 2 and "the server refused: no job with id 'nosuchjob' (HTTP 404)" in proc.stderr
    proc = run_cli("rerun", "../etc", "--server", live_stack)
    assert proc.returncode == 2 and "is not a job's id" in proc.stderr and "Traceback" not in proc.stderr
