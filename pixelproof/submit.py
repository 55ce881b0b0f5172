"""`pixelproof submit DIR --wait`: the REST API from the shell, for folders of any size.

Files go up in several requests (bounded by count and bytes), so 10,000 files never make one giant request.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import requests
from tqdm import tqdm

MAX_FILES_PER_REQUEST = 200
MAX_BYTES_PER_REQUEST = 64 * 1024 * 1024


class SubmitError(RuntimeError):
    pass


def collect(root: Path) -> list[tuple[Path, str]]:
    """Every regular file under root (hidden ones skipped), named by its path relative to root's parent."""
    root = root.resolve()
    if root.is_file():
        return [(root, root.name)]
    if not root.is_dir():
        raise SubmitError(f"{root} is neither a file nor a folder")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return [(p, str(p.relative_to(root.parent))) for p in files]


def batches(files: list[tuple[Path, str]], max_files: int | None = None) -> Iterator[list[tuple[Path, str]]]:
    max_files = max_files or MAX_FILES_PER_REQUEST
    batch, size = [], 0
    for path, name in files:
        n = path.stat().st_size
        if batch and (len(batch) >= max_files or size + n > MAX_BYTES_PER_REQUEST):
            yield batch
            batch, size = [], 0
        batch.append((path, name))
        size += n
    if batch:
        yield batch


def _json(resp: requests.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(resp: requests.Response, default: float = 5.0) -> float:
    try:
        return min(60.0, max(0.5, float(resp.headers.get("Retry-After", default))))
    except ValueError:
        return default


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = 120.0):
        self.server = server.rstrip("/")
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _check(self, resp: requests.Response) -> dict:
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text[:300]
            raise SubmitError(f"HTTP {resp.status_code}: {message}")
        return resp.json()

    def upload(self, batch: list[tuple[Path, str]], job_id: str | None) -> dict:
        url = f"{self.server}/api/jobs" + (f"/{job_id}/files" if job_id else "")
        with ExitStack() as stack:
            parts = [("files", (name, stack.enter_context(open(path, "rb")))) for path, name in batch]
            resp = self.http.post(url, files=parts, timeout=self.timeout)
        if resp.status_code == 503 and (job := _json(resp).get("job")):
            # The queue is down but the files are stored in the job; the server queues them when it is back.
            print(f"warning: {_json(resp).get('error')}", file=sys.stderr)
            return self.job(job)
        return self._check(resp)

    def job(self, job_id: str, wait: float = 0, done: int | None = None) -> dict:
        params = {"wait": wait, "done": done} if wait else {}
        while True:
            resp = self.http.get(f"{self.server}/api/jobs/{job_id}", params=params, timeout=self.timeout + wait)
            # 429: too many long-polls already wait on the server; 503: a dependency is briefly down. Wait and ask again.
            if resp.status_code in (429, 503) and wait:
                time.sleep(_retry_after(resp))
                continue
            return self._check(resp)

    def results(self, job_id: str) -> list[dict]:
        items, cursor = [], "0"
        while cursor is not None:
            page = self._check(self.http.get(f"{self.server}/api/jobs/{job_id}/results",
                                             params={"limit": 1000, "cursor": cursor}, timeout=self.timeout))
            items += page["items"]
            cursor = page["next_cursor"]
        return items


def submit(directory: Path, server: str, token: str | None, wait: bool, out: Path | None, fmt: str,
           files_per_request: int | None = None) -> int:
    files = collect(directory)
    if not files:
        raise SubmitError(f"no files under {directory}")
    client = Client(server, token)
    job = None
    with tqdm(total=len(files), unit="file", desc="upload") as bar:
        for batch in batches(files, files_per_request):
            job = client.upload(batch, job["id"] if job else None)
            bar.update(len(batch))
    print(f"job {job['id']}: {server.rstrip('/')}/?job={job['id']}", file=sys.stderr)
    if not wait:
        print(job["id"])
        return 0
    with tqdm(total=job["total"], unit="image", desc="classify") as bar:
        while job["status"] != "done":
            job = client.job(job["id"], wait=20, done=job["done"])
            bar.update(job["done"] - bar.n)
    items = client.results(job["id"])
    model = job["model"]["version"] if job.get("model") else "?"
    print(f"done: {job['total']} images, real {job['counts']['real']}, AI-generated {job['counts']['fake']}, "
          f"uncertain {job['counts'].get('uncertain', 0)}, errors {job['errors']} (model {model})")
    if out:
        write_results(items, out, fmt)
        print(f"results written to {out}")
    return 0


def write_results(items: list[dict], out: Path, fmt: str) -> None:
    import csv

    from shared.models import RESULT_FIELDS, csv_cells

    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        out.write_text(json.dumps(items, indent=1))
        return
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_cells(i) for i in items)
