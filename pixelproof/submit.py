"""`pixelproof submit DIR --wait`: the REST API from the shell, for folders of any size.

Files go up in several requests (bounded by count and bytes), so 10,000 files never make one giant request,
two at a time (--parallel), so the server classifies one request's images while it receives the next.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests
from urllib3.fields import RequestField
from tqdm import tqdm

from shared.folders import visible_files
from shared.limits import MAX_TITLE
from shared.names import clean_filename as stored_name

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
    return [(p, str(p.relative_to(root.parent))) for p in visible_files(root)]


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


class MultipartFiles:
    """A multipart/form-data body of files, read from disk as it is sent, 1 MiB at a time.

    requests' ``files=`` builds the whole body in memory first: 64 MiB a request, copied three times and in
    freshly allocated memory, which cost the client 6-10 ms of CPU a 12-megapixel photo on the cores it
    shares with a local server. The bytes are those urllib3 writes (the same part headers, the same layout),
    and the length is known beforehand, so the request is not chunked."""

    CHUNK = 1024 * 1024

    def __init__(self, files: list[tuple[Path, str]], boundary: str | None = None):
        self.boundary = boundary or uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.parts = []
        for path, name in files:
            head = RequestField.from_tuples("files", (name, b""))
            self.parts.append((path, path.stat().st_size,
                               f"--{self.boundary}\r\n".encode() + head.render_headers().encode()))
        self.tail = f"--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        return sum(len(head) + size + 2 for _, size, head in self.parts) + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        for path, size, head in self.parts:
            yield head
            left = size
            try:
                with open(path, "rb") as f:
                    while left and (chunk := f.read(min(self.CHUNK, left))):
                        left -= len(chunk)
                        yield chunk
                    grew = bool(f.read(1))
            except OSError as exc:  # raised inside the HTTP client it would read as "no answer" and be retried
                raise SubmitError(f"cannot read {path}: {exc.strerror or exc}") from None
            if left or grew:
                raise SubmitError(f"{path} changed size while it was being uploaded; send it again")
            yield b"\r\n"
        yield self.tail


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = 120.0):
        self.server = server.rstrip("/")
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _check(self, resp: requests.Response) -> dict:
        body = _json(resp)
        if "json" not in resp.headers.get("Content-Type", "") or not body:
            kind = resp.headers.get("Content-Type", "no content type").split(";")[0]
            raise SubmitError(f"{self.server} did not answer as a Pixelproof server (HTTP {resp.status_code}, {kind} "
                              f"from {urlsplit(resp.url).path}): check --server, which is the address of the page, "
                              "e.g. http://127.0.0.1:8000")
        if resp.status_code >= 400:
            raise SubmitError(f"the server refused: {body.get('error', resp.reason)} (HTTP {resp.status_code})")
        return body

    def config(self) -> dict:
        """The server's limits and model; asked first, so a wrong address is found before anything is sent."""
        resp = self.http.get(f"{self.server}/api/config", timeout=self.timeout)
        if resp.status_code != 200:
            raise SubmitError(f"{self.server} did not answer as a Pixelproof server (HTTP {resp.status_code} from "
                              f"{urlsplit(resp.url).path}): check --server, which is the address of the page, "
                              "e.g. http://127.0.0.1:8000")
        return self._check(resp)

    def upload(self, batch: list[tuple[Path, str]], job_id: str | None, callback_url: str | None = None,
               tries: int = 3, title: str | None = None) -> dict:
        """One upload request (a new job, or files added to one); no file is ever added twice (_post_job)."""
        url = f"{self.server}/api/jobs" + (f"/{job_id}/files" if job_id else "")
        params = _job_params(callback_url, title) if not job_id else {}
        return self._post_job(url, params, "an upload", tries, lambda: MultipartFiles(batch))

    def rerun(self, job_id: str, callback_url: str | None = None, tries: int = 3, title: str | None = None) -> dict:
        """A new job of an earlier job's stored files, for the model served now; a timeout never makes two."""
        return self._post_job(f"{self.server}/api/jobs/{job_id}/rerun", _job_params(callback_url, title), "the rerun",
                              tries)

    def _post_job(self, url: str, params: dict, what: str, tries: int,
                  body: Callable[[], MultipartFiles] | None = None) -> dict:
        """A request that makes or changes a job, sent again with the same Idempotency-Key when no answer came
        back: the server then answers with the job the first one made, and nothing is done twice. `body` makes
        the request's body again for each try (a stream is read once)."""
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(1, tries + 1):
            try:
                data = body() if body else None
                resp = self.http.post(url, data=data, params=params, timeout=self.timeout,
                                      headers={**headers, "Content-Type": data.content_type} if data is not None else headers)
                break
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt == tries or (isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower()):
                    raise
                print(f"warning: no answer to {what} ({type(exc).__name__}); sending it again", file=sys.stderr)
        if resp.status_code == 503 and (job := _json(resp).get("job")):
            # The queue is down but the job is stored; the server queues its images when it is back.
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

    def jobs(self, limit: int, title: str = "") -> list[dict]:
        """This token's jobs, newest first, at most limit of them (the server lists them only with tokens on);
        with `title`, those whose title contains it."""
        items, cursor = [], ""
        while cursor is not None and len(items) < limit:
            params = {"limit": min(1000, limit - len(items)), "cursor": cursor, **({"title": title} if title else {})}
            page = self._check(self.http.get(f"{self.server}/api/jobs", timeout=self.timeout, params=params))
            items += page["items"]
            cursor = page["next_cursor"]
        return items

    def results(self, job_id: str) -> list[dict]:
        items, cursor = [], "0"
        while cursor is not None:
            page = self._check(self.http.get(f"{self.server}/api/jobs/{job_id}/results",
                                             params={"limit": 1000, "cursor": cursor}, timeout=self.timeout))
            items += page["items"]
            cursor = page["next_cursor"]
        return items


def _job_params(callback_url: str | None, title: str | None) -> dict:
    """A new job's query: its webhook, and its title ("" asks for none; None leaves the server's default)."""
    params = {"callback_url": callback_url} if callback_url else {}
    return params if title is None else {**params, "title": title}


def folder_title(directory: Path) -> str:
    """A job's default title: the name of the folder (or file) sent, as the page names a dropped folder's job; a
    name longer than a title may be is cut, since nobody typed it as one."""
    return unicodedata.normalize("NFC", directory.resolve().name)[:MAX_TITLE]


def check_server(server: str) -> str:
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SubmitError(f"--server must be an http:// or https:// address, e.g. http://127.0.0.1:8000 (got {server!r})")
    return server.rstrip("/")


def check_out(out: Path | None, wait: bool) -> None:
    """Fail before uploading anything when the results could not be written at the end."""
    if out is None:
        return
    if not wait:
        raise SubmitError("--out needs --wait: results can only be written once the job is done")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise SubmitError(f"cannot write results to {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise SubmitError(f"cannot write results to {out}: permission denied")


def skip_refused(files: list[tuple[Path, str]], limits: dict) -> list[tuple[Path, str]]:
    """Leave out, and report, files the server would refuse whole requests for; the rest is classified."""
    limit = limits.get("max_file_bytes")
    if not limit:
        return files
    big = [(p, n) for p, n in files if p.stat().st_size > limit]
    if big:
        print(f"skipped {len(big)} file{'s' if len(big) > 1 else ''} over the {limit / 2**20:g} MiB limit per file:",
              file=sys.stderr)
        for p, n in big:
            print(f"  {n} ({p.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
    return [f for f in files if f not in big]


PARALLEL_UPLOADS = 2


def upload_all(new_client: Callable[[], Client], chunks: list[list[tuple[Path, str]]], callback_url: str | None = None,
               parallel: int = PARALLEL_UPLOADS, progress: Callable[[int], object] = lambda n: None,
               title: str | None = None, job: dict | None = None) -> dict:
    """Every chunk into one job: the first request makes it, then ``parallel`` requests at a time add the rest.

    One request at a time left the server's cores idle twice a request, while the client read the next files
    and while the web stored and committed them; with two in flight the workers always have a request's
    images queued (200 twelve-megapixel photos on 2 cores: 16.1 -> 18.8 photos/s, benchmarks/RESULTS.md).
    Each thread has its own client (a requests Session is not shared between threads). Given a `job`, every
    chunk goes into it. Returns the job as the last request to finish left it; an error after the job was made
    names the job it stopped in (job_id)."""
    if job is None:
        job = new_client().upload(chunks[0], None, callback_url, title=title)
        progress(len(chunks[0]))
        chunks = chunks[1:]
    local = threading.local()

    def add(chunk: list[tuple[Path, str]]) -> dict:
        if not hasattr(local, "client"):
            local.client = new_client()
        return local.client.upload(chunk, job["id"])

    try:
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            for chunk, answer in zip(chunks, pool.map(add, chunks)):
                job = answer
                progress(len(chunk))
    except Exception as exc:
        exc.job_id = job["id"]  # the job holds what was sent before: submit says how to send the rest
        raise
    return job


def submit(directory: Path, server: str, token: str | None, wait: bool, out: Path | None, fmt: str,
           files_per_request: int | None = None, callback_url: str | None = None,
           parallel: int = PARALLEL_UPLOADS, title: str | None = None, into: str | None = None) -> int:
    """Upload a folder as a new job, or (`into`, a job's id or page address) the files of it that job does not
    hold yet, named as the folder names them: an upload cut off part way is finished without sending twice."""
    server = check_server(server)
    check_out(out, wait)
    if into is not None and (title is not None or callback_url):
        raise SubmitError("--title and --callback-url are for a new job; --job adds files to one that has its own")
    files = collect(directory)
    if not files:
        raise SubmitError(f"no files under {directory}")
    client = Client(server, token)
    files = skip_refused(files, client.config()["limits"])
    if not files:
        raise SubmitError("nothing to upload: every file is over the limit")
    order = {stored_name(name): i for i, (_, name) in enumerate(files)}  # the folder's order, whichever came first
    job, sending = None, files
    if into is not None:
        job = client.job(job_id_of(into))
        if job.get("cancelled_at"):
            raise SubmitError(f"job {job['id']} was cancelled, and takes no more files: send the folder as a new job")
        held = {item["filename"] for item in client.results(job["id"])}
        sending = [(path, name) for path, name in files if stored_name(name) not in held]
        print(f"job {job['id']}{_titled(job)} holds {len(files) - len(sending)} of these {len(files)} files; "
              f"sending the other {len(sending)}", file=sys.stderr)
    if sending:
        # leave=False: a failure prints its message once, not after a second rendering of the bar
        with tqdm(total=len(sending), unit="file", desc="upload", leave=False) as bar:
            try:
                job = upload_all(lambda: Client(server, token), list(batches(sending, files_per_request)),
                                 callback_url, parallel, bar.update, folder_title(directory) if title is None else title,
                                 job)
            except Exception as exc:
                if stopped_in := getattr(exc, "job_id", None):
                    exc.add_note(f"job {stopped_in} holds the files sent before this; `pixelproof submit "
                                 f"{shlex.quote(str(directory))} --job {stopped_in}` sends the ones it does not hold yet")
                raise
    print(f"uploaded {len(sending)} files to job {job['id']}{_titled(job)}: {server}/?job={job['id']}", file=sys.stderr)
    return finish(client, job, wait, out, fmt, order)


def rerun(job_id: str, server: str, token: str | None, wait: bool, out: Path | None, fmt: str,
          callback_url: str | None = None, title: str | None = None) -> int:
    """An earlier job's files through the model served now, as a new job; then as submit goes on."""
    server = check_server(server)
    check_out(out, wait)
    job_id = job_id_of(job_id)
    client = Client(server, token)
    served = client.config().get("model") or {}
    job = client.rerun(job_id, callback_url, title=title)
    print(f"job {job_id} is classified again as job {job['id']}{_titled(job)}, by {served.get('version', 'the model served now')}: "
          f"{server}/?job={job['id']}", file=sys.stderr)
    return finish(client, job, wait, out, fmt)


def _titled(job: dict) -> str:
    return f" ({job['title']})" if job.get("title") else ""


def job_id_of(text: str) -> str:
    """A job's id, or the id in its page's address (?job=...), as a user may paste either."""
    from urllib.parse import parse_qs

    job_id = parse_qs(urlsplit(text).query).get("job", [text])[0] if "job=" in text else text
    if not job_id or not all(c.isalnum() or c in "-_" for c in job_id):
        raise SubmitError(f"{text!r} is not a job's id (the letters after ?job= in its page's address)")
    return job_id


def finish(client: Client, job: dict, wait: bool, out: Path | None, fmt: str, order: dict[str, int] | None = None) -> int:
    """Without --wait, the job's id; with it, the job followed to its end, a summary, and --out written (in
    `order` of file names, else in upload order)."""
    if not wait:
        print(job["id"])
        return 0
    with tqdm(total=job["total"], unit="image", desc="classify", leave=False) as bar:
        while job["status"] not in ("done", "cancelled"):
            job = client.job(job["id"], wait=20, done=job["done"])
            bar.update(job["done"] - bar.n)
    items = client.results(job["id"])
    if order is not None:
        items.sort(key=lambda item: order.get(item["filename"], len(order)))
    model = job["model"]["version"] if job.get("model") else "?"
    if job["status"] == "cancelled":
        print(f"the job was cancelled: {job['cancelled']} of {job['total']} images were not classified")
    print(f"done: {job['total']} images, real {job['counts']['real']}, AI-generated {job['counts']['fake']}, "
          f"uncertain {job['counts'].get('uncertain', 0)}, errors {job['errors']} (model {model})")
    from shared.encoding import summary as encoding_summary

    if line := encoding_summary(job.get("encodings") or {}):
        print(line)
    if out:
        write_results(items, out, fmt)
        print(f"results written to {out}")
    return 0


def list_jobs(server: str, token: str | None, limit: int, title: str = "") -> int:
    """One line a job, newest first: when it was made (local time), its state and counts, and its page."""
    from datetime import datetime

    server = check_server(server)
    items = Client(server, token).jobs(limit, title)
    if not items:
        print(f"no jobs titled with {title!r}" if title else "no jobs")
    for job in items:
        made = datetime.fromisoformat(job["created_at"]).astimezone().strftime("%Y-%m-%d %H:%M")
        counts, errors = job["counts"], job["errors"]
        print(f"{made}  {job['status']:<9}  " + (f"{job['title']}: " if job.get("title") else "")
              + f"{job['done']}/{job['total']} files, real {counts['real']}, "
              f"AI-generated {counts['fake']}, uncertain {counts['uncertain']}"
              + (f", {errors} error{'s' if errors != 1 else ''}" if errors else "")
              + (f", again of {job['rerun_of']}" if job.get("rerun_of") else "") + f"  {server}/?job={job['id']}")
    return 0


def write_results(items: list[dict], out: Path, fmt: str) -> None:
    import csv

    from shared.models import RESULT_FIELDS, csv_cells

    if fmt == "json":
        out.write_text(json.dumps(items, indent=1))
        return
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_cells(i) for i in items)
