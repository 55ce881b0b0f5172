"""Helpers the test modules share: files from the mini set, requests through the test client, waiting."""
from __future__ import annotations

import io
import time


def jpeg_bytes(mini_dir, n=1):
    files = sorted((mini_dir / "real").iterdir())[:n]
    return [(f.read_bytes(), f.name) for f in files]


def mini_files(mini_dir):
    return [(p, f"{p.parent.name}/{p.name}") for p in sorted(mini_dir.rglob("*.jpg"))]


def post_files(client, url, files, headers=None):
    data = {"files": [(io.BytesIO(b), name) for b, name in files]}
    return client.post(url, data=data, content_type="multipart/form-data", headers=headers or {})


def upload_all(client, files, per_request=200):
    job = None
    for start in range(0, len(files), per_request):
        data = {"files": [(io.BytesIO(p.read_bytes()), name) for p, name in files[start:start + per_request]]}
        url = f"/api/jobs/{job['id']}/files" if job else "/api/jobs"
        resp = client.post(url, data=data, content_type="multipart/form-data")
        assert resp.status_code == 202, resp.get_json()
        job = resp.get_json()
    return job


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_done(client, job_id, timeout=240):
    deadline = time.monotonic() + timeout
    job = client.get(f"/api/jobs/{job_id}").get_json()
    while job["status"] != "done":
        assert time.monotonic() < deadline, f"job not done in {timeout}s: {job}"
        job = client.get(f"/api/jobs/{job_id}?wait=5&done={job['done']}").get_json()
    return job


def all_results(client, job_id):
    items, cursor = [], "0"
    while cursor is not None:
        page = client.get(f"/api/jobs/{job_id}/results?limit=1000&cursor={cursor}").get_json()
        items += page["items"]
        cursor = page["next_cursor"]
    return items
