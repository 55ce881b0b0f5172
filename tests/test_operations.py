"""Integrations and operations on real parts (Redis, SQLite/PostgreSQL, Celery workers, gunicorn, an HTTP
receiver on loopback): webhooks, idempotent submits, cancel, delete, retention, metrics, reviews, filters."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from urllib3 import encode_multipart_formdata
from sqlalchemy import create_engine, func, select, text, update

from shared import webhooks
from shared.db import Database
from shared.migrate import upgrade
from shared.models import ImageItem, Job, Prediction, utcnow
from shared.settings import DEFAULT_CHECKPOINT, REPO_ROOT
from shared.storage import LocalStorage

from .conftest import service_env
from .helpers import all_results, jpeg_bytes, post_files, wait_done, wait_until
from .processes import start_web, start_worker

pytestmark = pytest.mark.slow
SECRET = "a-webhook-secret-for-tests"


class Receiver:
    """An HTTP server on loopback that answers the first `failures` POSTs with 500, then 200 (or `then`)."""

    def __init__(self, failures: int = 0, then: int = 200, location: str | None = None):
        self.hits: list[tuple[float, dict, bytes, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.hits.append((time.monotonic(), dict(self.headers), body, self.path))
                self.send_response(500 if len(outer.hits) <= failures else then)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def webhook_env(env: dict, allow: str, **extra: str) -> dict:
    return {**env, "PIXELPROOF_WEBHOOK_ALLOWLIST": allow, "PIXELPROOF_WEBHOOK_SECRET": SECRET, **extra}


def as_described(headers, body) -> None:
    """A delivered webhook is what the OpenAPI description's jobFinished callback says: its body (the Job
    schema, every field as in the API's own answers) and its headers."""
    import jsonschema_rs

    from web.openapi import OPENAPI

    hook = OPENAPI["paths"]["/api/jobs"]["post"]["callbacks"]["jobFinished"]["{$request.query.callback_url}"]["post"]
    schema = {**hook["requestBody"]["content"]["application/json"]["schema"], "components": OPENAPI["components"]}
    jsonschema_rs.validate(schema, body)
    for param in hook["parameters"]:
        jsonschema_rs.validate(param["schema"], headers[param["name"]])


def test_webhook_refused_then_accepted_is_signed_retried_with_backoff_and_recorded(make_app, stack_env, mini_dir,
                                                                                    tmp_path, receiver):
    rx = receiver(failures=2)
    env = webhook_env(stack_env, rx.url + "/hooks", PIXELPROOF_WEBHOOK_BACKOFF_S="0.5")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        client = make_app(env).test_client()
        for bad in (rx.url + "/elsewhere", "http://127.0.0.1:1/hooks", rx.url.replace("http:", "https:") + "/hooks",
                    rx.url + "/hooks/../admin", "http://user:pw@" + rx.url[7:] + "/hooks"):
            resp = post_files(client, f"/api/jobs?callback_url={quote(bad)}", jpeg_bytes(mini_dir, 1))
            assert resp.status_code == 400, (bad, resp.get_json())
        assert client.get("/api/jobs/x").status_code == 404
        target = rx.url + "/hooks/pixelproof?team=news"
        job = post_files(client, f"/api/jobs?callback_url={quote(target)}", jpeg_bytes(mini_dir, 3)).get_json()
        assert job["callback"] == {"url": target, "status": "waiting", "attempts": []}
        wait_done(client, job["id"])
        wait_until(lambda: client.get(f"/api/jobs/{job['id']}").get_json()["callback"]["status"] == "delivered",
                   60, "the webhook delivered")
        time.sleep(1.5)  # nothing more is sent once it is delivered
    finally:
        worker.stop()
    assert len(rx.hits) == 3
    times = [h[0] for h in rx.hits]
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95, gaps  # 0.5 s, then doubled
    for n, (_, headers, body, path) in enumerate(rx.hits, 1):
        assert path == "/hooks/pixelproof?team=news"
        assert headers["Pixelproof-Attempt"] == str(n) and headers["Pixelproof-Event"] == "job.finished"
        signature = headers["Pixelproof-Signature"]
        assert webhooks.verify(SECRET, body, signature)
        assert not webhooks.verify("another-secret-entirely", body, signature)
        assert not webhooks.verify(SECRET, body.replace(b'"done"', b'"dune"'), signature)
        assert not webhooks.verify(SECRET, body, signature, now=time.time() + 3600)  # a replay an hour later
    sent = json.loads(rx.hits[-1][2])
    assert sent["event"] == "job.finished" and sent["job"]["id"] == job["id"] and sent["job"]["status"] == "done"
    as_described(rx.hits[-1][1], sent)
    assert sent["job"]["total"] == 3 and sum(sent["job"]["counts"].values()) == 3
    callback = client.get(f"/api/jobs/{job['id']}").get_json()["callback"]
    assert [(a["round"], a["attempt"], a["status_code"]) for a in callback["attempts"]] == [(1, 1, 500), (1, 2, 500),
                                                                                             (1, 3, 200)]
    assert callback["attempts"][0]["error"] == "the receiver answered HTTP 500" and callback["attempts"][2]["error"] is None
    assert f"event=webhook_attempt job_id={job['id']} attempt=3 status=200 outcome=delivered" in worker.text()


def test_webhook_gives_up_never_follows_a_redirect_and_rechecks_the_allow_list(sqlite_url, tmp_path, receiver):
    """The service functions the delivery task calls, without Celery."""
    upgrade(sqlite_url)
    db = Database(sqlite_url)
    target = receiver()  # where the redirect points: never contacted
    rx = receiver(failures=0, then=302, location=target.url + "/hooks")
    with db.session() as s:
        for job_id, url in (("redirected", rx.url + "/hooks"), ("no-longer-allowed", rx.url + "/old/x")):
            s.add(Job(id=job_id, callback_url=url))
            s.add(ImageItem(job_id=job_id, filename="a.jpg", sha256="0" * 64, size_bytes=1, status="done"))
        s.commit()
        assert webhooks.claim_finished(s, ["redirected", "no-longer-allowed"]) == ["no-longer-allowed", "redirected"]
        assert webhooks.claim_finished(s, ["redirected"]) == []  # claimed once, whoever asks again
    policy = webhooks.Policy(SECRET, (rx.url + "/hooks",), max_attempts=2, backoff_s=0.1, timeout_s=5)
    with db.session() as s:
        first = webhooks.deliver(s, "redirected", policy)
        assert first.status_code == 302 and "redirects are not followed" in first.error and first.retry_in == 0.1
        second = webhooks.deliver(s, "redirected", policy)
        assert second.number == 2 and second.retry_in is None  # the last of max_attempts
        assert webhooks.deliver(s, "redirected", policy) is None  # given up: nothing more is sent
        refused = webhooks.deliver(s, "no-longer-allowed", policy)  # the operator narrowed the list meanwhile
        assert refused.status_code is None and "not under any address" in refused.error and refused.retry_in is None
        assert s.get(Job, "redirected").webhook_status == "failed"
    assert len(rx.hits) == 2 and target.hits == []


@pytest.mark.parametrize("url,allowed", [
    ("https://hooks.example.com/pixelproof", True),
    ("https://hooks.example.com/pixelproof/team/1?x=1", True),
    ("https://hooks.example.com:443/pixelproof", True),
    ("https://hooks.example.com/pixelproofs", False),
    ("https://hooks.example.com/other", False),
    ("https://hooks.example.com/pixelproof/../admin", False),
    ("https://hooks.example.com/pixelproof/%2e%2e/admin", False),
    ("http://hooks.example.com/pixelproof", False),
    ("https://hooks.example.com:8443/pixelproof", False),
    ("https://evil.example.com/pixelproof", False),
    ("https://hooks.example.com.evil.net/pixelproof", False),
    ("https://me@hooks.example.com/pixelproof", False),
    ("ftp://hooks.example.com/pixelproof", False),
    ("https://hooks.example.com:99999/pixelproof", False),
    ("http://10.0.0.5:9000/anything", True),
])
def test_the_allow_list_matches_scheme_host_port_and_path(url, allowed):
    allow = ("https://hooks.example.com/pixelproof/", "http://10.0.0.5:9000")
    assert (webhooks.url_problem(url, allow) is None) is allowed
    assert webhooks.url_problem(url, ()) is not None  # no list: webhooks off


def test_a_retried_submit_with_the_same_key_makes_one_job(start_web_only, db_url, mini_dir):
    """Six copies of one request at once (a client retrying after timeouts), then once more later."""
    base = start_web_only(db_url)
    files = jpeg_bytes(mini_dir, 3)
    key = str(uuid.uuid4())

    def send(url, key=key, batch=files):
        return requests.post(url, files=[("files", (n, b)) for b, n in batch], headers={"Idempotency-Key": key},
                             timeout=60)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: send(base + "/api/jobs"), range(6)))
    assert [r.status_code for r in answers] == [202] * 6, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 5
    job_id = answers[0].json()["id"]
    later = send(base + "/api/jobs")
    assert later.json()["id"] == job_id and later.json()["total"] == 3 and later.headers["Idempotent-Replayed"] == "true"
    more = jpeg_bytes(mini_dir, 5)[3:]
    add_key = str(uuid.uuid4())
    for _ in range(3):
        added = send(f"{base}/api/jobs/{job_id}/files", key=add_key, batch=more)
        assert added.status_code == 202 and added.json()["total"] == 5
    wrong = send(f"{base}/api/jobs/{job_id}/files", key=key, batch=more)  # the create key, for another request
    assert wrong.status_code == 422 and "another request" in wrong.json()["error"]
    other = send(f"{base}/api/jobs/{job_id}/files", key=add_key, batch=jpeg_bytes(mini_dir, 6)[5:])  # other files
    assert other.status_code == 422 and "another upload" in other.json()["error"]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM images")).scalar() == 5
    engine.dispose()
    storage = LocalStorage(Path(start_web_only.data_dir) / "uploads")
    assert all(storage.exists(r["sha256"]) for r in requests.get(f"{base}/api/jobs/{job_id}/results").json()["items"])
    without = send(base + "/api/jobs", key="\x7f")
    assert without.status_code == 400

    # A client whose retry draws a boundary of another length sends a body of another length: the same files
    # are still the same request, other files still another one.
    def send_raw(batch, boundary, key=str(uuid.uuid4())):  # one key for the three sends
        body, content_type = encode_multipart_formdata([("files", (n, b)) for b, n in batch], boundary=boundary)
        return requests.post(f"{base}/api/jobs/{job_id}/files", data=body, timeout=60,
                             headers={"Content-Type": content_type, "Idempotency-Key": key})

    sixth = jpeg_bytes(mini_dir, 7)[5:6]
    assert send_raw(sixth, "a" * 32).json()["total"] == 6
    again = send_raw(sixth, "b" * 50)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true" and again.json()["total"] == 6
    (data, name), = sixth
    changed = send_raw([(data[:-1], name)], "b" * 50)  # another file: 1 byte short of a multiple of 18 more
    assert changed.status_code == 422 and "another upload" in changed.json()["error"]


def test_cancel_mid_job_stops_classifying_and_keeps_counts_true(make_app, sqlite_url, redis_server, mini_dir, tmp_path):
    upgrade(sqlite_url)
    env = service_env(sqlite_url, redis_server.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="4")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        client = make_app(env).test_client()
        files = [(p.read_bytes(), p.name) for p in sorted((mini_dir / "real").iterdir())[:200]]
        job = post_files(client, "/api/jobs", files).get_json()
        job_id = job["id"]
        wait_until(lambda: client.get(f"/api/jobs/{job_id}").get_json()["done"] >= 8, 120, "some images classified")
        cancelled = client.post(f"/api/jobs/{job_id}/cancel").get_json()
        assert cancelled["status"] == "cancelled" and cancelled["cancelled"] > 0
        time.sleep(3)  # a batch in flight at the cancel finishes meanwhile
        job = client.get(f"/api/jobs/{job_id}").get_json()
        assert client.post(f"/api/jobs/{job_id}/files", data={"files": [(io.BytesIO(files[0][0]), "x.jpg")]},
                           content_type="multipart/form-data").status_code == 409
        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200  # cancelling again changes nothing
    finally:
        worker.stop()
    assert job == {**job, "status": "cancelled", "total": 200, "done": 200, "queued": 0, "running": 0}
    classified = sum(job["counts"].values())
    assert classified + job["errors"] + job["cancelled"] == 200
    # Nothing was classified after the cancel: the job as it is now is the job as the cancel answered it.
    assert job["cancelled"] == cancelled["cancelled"] and job["counts"] == cancelled["counts"], (job, cancelled)
    items = all_results(client, job_id)
    assert sum(i["status"] == "cancelled" for i in items) == job["cancelled"]
    assert all(i["p_fake"] is None for i in items if i["status"] == "cancelled")


def test_a_read_that_loaded_the_job_before_a_cancel_and_its_images_after_says_cancelled(make_app, stack_env, mini_dir):
    """A request that loads the job row, then a cancel commits, then the request counts the images: every image
    is cancelled while its copy of the job is not. It had answered `done` (a page long-polling the job then
    stopped, showing `done` with every image cancelled)."""
    from shared import jobs

    client = make_app(stack_env).test_client()
    job_id = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 3)).get_json()["id"]
    db = Database(stack_env["DATABASE_URL"])
    try:
        with db.session() as reader:
            job = reader.get(Job, job_id)
            assert job.cancelled_at is None
            assert client.post(f"/api/jobs/{job_id}/cancel").get_json()["status"] == "cancelled"
            status = jobs.job_status(reader, job)  # the job row as loaded, the images as they are now
            assert job.cancelled_at is None and status["cancelled"] == 3  # the race, as it happens
            assert status["status"] == "cancelled" and status["done"] == status["total"] == 3
    finally:
        db.engine.dispose()


def test_delete_removes_rows_and_files_no_other_job_holds(make_app, stack_env, mini_dir, tmp_path):
    worker = start_worker(stack_env, tmp_path / "worker.log")
    try:
        client = make_app(stack_env).test_client()
        a, b, c = jpeg_bytes(mini_dir, 3)
        first = post_files(client, "/api/jobs", [a, b]).get_json()
        second = post_files(client, "/api/jobs", [b, c]).get_json()
        wait_done(client, first["id"])
        wait_done(client, second["id"])
        client.post(f"/api/jobs/{first['id']}/images/{all_results(client, first['id'])[0]['id']}/review",
                    json={"verdict": "fake"})
    finally:
        worker.stop()
    storage = LocalStorage(Path(stack_env["PIXELPROOF_DATA_DIR"]) / "uploads")
    sha = {name: r["sha256"] for name, r in zip(("a", "b"), all_results(client, first["id"]))}
    sha["c"] = all_results(client, second["id"])[1]["sha256"]
    assert all(storage.exists(s) and storage.has_thumbnails(s, (128, 512)) for s in sha.values())
    legacy = storage.thumbnail_path(sha["a"], 128, ".png")  # as an earlier version stored thumbnails
    legacy.write_bytes(storage.thumbnail_path(sha["a"], 128).read_bytes())
    gone = client.delete(f"/api/jobs/{first['id']}").get_json()
    assert gone == {"deleted": first["id"], "images": 2, "files_removed": 1, "files_kept": 1}
    assert client.get(f"/api/jobs/{first['id']}").status_code == 404
    assert not storage.exists(sha["a"]) and not storage.thumbnail_path(sha["a"], 128).exists()
    assert not legacy.exists()
    assert storage.exists(sha["b"]) and storage.has_thumbnails(sha["b"], (128, 512))  # the second job holds it
    db = Database(stack_env["DATABASE_URL"])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Prediction).where(Prediction.sha256 == sha["a"])) == 0
        assert s.scalar(select(func.count()).select_from(Prediction).where(Prediction.sha256 == sha["b"])) == 1
        assert s.scalar(text("SELECT count(*) FROM reviews")) == 0
    assert client.get(f"/api/jobs/{second['id']}").get_json()["done"] == 2
    assert client.delete(f"/api/jobs/{second['id']}").get_json()["files_removed"] == 2
    assert not any(storage.exists(s) for s in sha.values())
    assert client.delete(f"/api/jobs/{second['id']}").status_code == 404
    db.engine.dispose()


def jobs_holding(db: Database, sha: str) -> list[str]:
    with db.session() as s:
        return sorted(set(s.scalars(select(ImageItem.job_id).where(ImageItem.sha256 == sha))))


def test_an_upload_of_the_same_bytes_keeps_its_file_when_a_delete_races_it(make_app, stack_env, mini_dir,
                                                                           monkeypatch):
    """The stored file of a job being deleted is the file a concurrent upload of the same bytes found: whichever
    commits first, the upload's job must still have its file afterwards (the worker reads it later)."""
    from shared import jobs
    from shared.deletion import delete_jobs

    client = make_app(stack_env).test_client()
    storage = LocalStorage(Path(stack_env["PIXELPROOF_DATA_DIR"]) / "uploads")
    db = Database(stack_env["DATABASE_URL"])
    (a, _), (b, _) = jpeg_bytes(mini_dir, 2)

    # 1. The delete runs after the upload stored its bytes and before it commits its rows.
    first = post_files(client, "/api/jobs", [(a, "a.jpg")]).get_json()
    sha = all_results(client, first["id"])[0]["sha256"]
    add_images = jobs.add_images

    def deleted_meanwhile(session, job, uploads):
        monkeypatch.setattr(jobs, "add_images", add_images)
        assert delete_jobs(db, storage, [first["id"]]).files_removed == 1
        assert not storage.exists(sha)
        return add_images(session, job, uploads)

    monkeypatch.setattr(jobs, "add_images", deleted_meanwhile)
    second = post_files(client, "/api/jobs", [(a, "again.jpg")])
    assert second.status_code == 202, second.get_json()
    assert storage.read(sha) == a
    assert not list(storage.tmp.iterdir())  # the request's spare copy became the file, nothing left over

    # 2. The upload commits after the delete's first look at the rows and before it removes the file.
    third = post_files(client, "/api/jobs", [(b, "b.jpg")]).get_json()
    sha_b = all_results(client, third["id"])[0]["sha256"]
    retire = storage.retire

    def committed_meanwhile(digest):
        trash = retire(digest)
        with db.session() as s:
            job = Job()
            s.add(job)
            jobs.add_images(s, job, [jobs.Upload("b-again.jpg", digest, len(b))])
            s.commit()
        return trash

    monkeypatch.setattr(storage, "retire", committed_meanwhile)
    storage.put_thumbnail(sha_b, 512, b"b's thumbnail")
    gone = delete_jobs(db, storage, [third["id"]])
    assert (gone.files_removed, gone.files_kept) == (0, 1)
    assert storage.read(sha_b) == b and not list(storage.tmp.iterdir())
    assert storage.find_thumbnail(sha_b, 512)[0] == b"b's thumbnail"  # put back with the file
    monkeypatch.setattr(storage, "retire", retire)

    # 3. The upload commits after the delete's second look and puts its own copy in place (settle) before the
    #    delete has finished: the delete must not remove that copy.
    fourth = post_files(client, "/api/jobs", [(b, "b-third.jpg")]).get_json()
    delete_jobs(db, storage, [j for j in jobs_holding(db, sha_b) if j != fourth["id"]])
    writer = storage.writer(10**8)
    writer.write(b)
    assert writer.finish(keep_spare=True)[2] is False  # the bytes were stored: the upload keeps a spare
    from shared import deletion
    looks, unreferenced = [], deletion._unreferenced

    def settled_after_the_second_look(database, digests):
        found = unreferenced(database, digests)
        looks.append(found)
        if len(looks) == 2:  # the delete has decided: sha_b is nobody's; now the upload commits and settles,
            with db.session() as s:  # and a worker classifies it and stores its thumbnails
                job = Job()
                s.add(job)
                jobs.add_images(s, job, [jobs.Upload("b-fourth.jpg", sha_b, len(b))])
                s.commit()
            storage.settle(sha_b, writer.spare)
            storage.put_thumbnail(sha_b, 512, b"the new upload's thumbnail")
        return found

    storage.put_thumbnail(sha_b, 512, b"the deleted job's thumbnail")
    monkeypatch.setattr(deletion, "_unreferenced", settled_after_the_second_look)
    assert delete_jobs(db, storage, [fourth["id"]]).files_removed == 1 and looks == [[sha_b], [sha_b]]
    assert storage.read(sha_b) == b and not list(storage.tmp.iterdir())  # the upload's settled copy stays
    assert storage.find_thumbnail(sha_b, 512)[0] == b"the new upload's thumbnail"  # and so do its thumbnails
    monkeypatch.setattr(deletion, "_unreferenced", unreferenced)
    delete_jobs(db, storage, jobs_holding(db, sha_b))

    # and with nothing racing it, a delete still removes what nobody holds, thumbnails included
    storage.put_thumbnail(sha, 512, b"thumbnail")
    assert client.delete(f"/api/jobs/{second.get_json()['id']}").get_json()["files_removed"] == 1
    assert not storage.exists(sha) and not list(storage.tmp.iterdir())
    with pytest.raises(FileNotFoundError):
        storage.find_thumbnail(sha, 512)
    db.engine.dispose()


def test_retention_deletes_old_jobs_from_the_beat_schedule(make_app, sqlite_url, redis_server, mini_dir, tmp_path):
    upgrade(sqlite_url)
    env = service_env(sqlite_url, redis_server.url, tmp_path / "data", PIXELPROOF_RETENTION_DAYS="30",
                      PIXELPROOF_RETENTION_INTERVAL_S="1")
    client = make_app(env).test_client()
    a, b = jpeg_bytes(mini_dir, 2)
    old = post_files(client, "/api/jobs", [a, b]).get_json()
    new = post_files(client, "/api/jobs", [b]).get_json()
    db = Database(sqlite_url)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == old["id"]).values(created_at=utcnow() - timedelta(days=31)))
        s.commit()
    storage = LocalStorage(tmp_path / "data" / "uploads")
    sha_a, sha_b = (r["sha256"] for r in all_results(client, old["id"]))
    worker = start_worker(env, tmp_path / "worker.log", beat=True)
    try:
        wait_until(lambda: client.get(f"/api/jobs/{old['id']}").status_code == 404, 60, "the old job deleted")
        wait_done(client, new["id"])
    finally:
        worker.stop()
    assert not storage.exists(sha_a) and storage.exists(sha_b)
    assert client.get(f"/api/jobs/{new['id']}").get_json()["total"] == 1
    assert "event=retention days=30.0 jobs=1 images=2 files_removed=1 files_kept=1" in worker.text()
    db.engine.dispose()


def test_metrics_add_up_web_and_worker_processes(sqlite_url, redis_server, mini_dir, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from pixelproof.embedded_redis import free_port
    from shared.modeling.checkpoint import read_meta

    upgrade(sqlite_url)
    env = service_env(sqlite_url, redis_server.url, tmp_path / "data")
    port = free_port()
    web = start_web(env, tmp_path / "web.log", port)
    worker = start_worker(env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        files = [("files", (n, b)) for b, n in jpeg_bytes(mini_dir, 5)] + [("files", ("notes.jpg", b"not an image"))]
        job = requests.post(base + "/api/jobs", files=files, timeout=60).json()
        while job["status"] != "done":
            job = requests.get(f"{base}/api/jobs/{job['id']}?wait=10&done={job['done']}", timeout=30).json()
        body = requests.get(base + "/metrics", timeout=30).text
    finally:
        worker.stop()
        web.stop()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    def total(name, **labels):
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))
    assert total("pixelproof_images_submitted_total") == 6  # counted by the web process
    assert total("pixelproof_images_classified_total") == 5  # counted by the worker's child process
    assert total("pixelproof_images_classified_total") == sum(job["counts"].values())
    assert total("pixelproof_images_failed_total", reason="not_an_image") == 1
    assert total("pixelproof_image_latency_seconds_count") == 6
    assert total("pixelproof_task_seconds_count", task="classify") >= 1
    assert total("pixelproof_queue_depth") == 0
    assert total("pixelproof_workers_alive") == 1
    assert total("pixelproof_images", status="done") == 5 and total("pixelproof_images", status="error") == 1
    version = read_meta(DEFAULT_CHECKPOINT).version
    assert total("pixelproof_model_info", version=version) == 1


def test_a_review_round_trip_exports_a_folder_that_training_reads(start_web_only, sqlite_url, mini_dir, tmp_path):
    base = start_web_only(sqlite_url)
    picks = [(p.read_bytes(), f"{p.parent.name}/{p.name}") for d in ("real", "fake")
             for p in sorted((mini_dir / d).iterdir())[:6]]
    picks.append((b"=HYPERLINK(1)", "=cmd.jpg"))
    job = requests.post(base + "/api/jobs", files=[("files", (n, b)) for b, n in picks], timeout=60).json()
    items = requests.get(f"{base}/api/jobs/{job['id']}/results", timeout=30).json()["items"]
    for item in items:
        verdict = "unsure" if item["filename"] == "=cmd.jpg" else item["filename"].split("/")[0]
        resp = requests.post(f"{base}/api/jobs/{job['id']}/images/{item['id']}/review",
                             json={"verdict": verdict, "note": f"=checked {item['filename']}"}, timeout=30)
        assert resp.status_code == 200 and resp.json()["review"] == verdict, resp.text
    again = requests.post(f"{base}/api/jobs/{job['id']}/images/{items[0]['id']}/review",
                          json={"verdict": "fake", "note": "on second thought"}, timeout=30).json()
    assert (again["review"], again["review_note"]) == ("fake", "on second thought")
    for bad in ({"verdict": "maybe"}, {"verdict": "real", "note": "x" * 2001}, [1]):
        assert requests.post(f"{base}/api/jobs/{job['id']}/images/{items[1]['id']}/review", json=bad,
                             timeout=30).status_code == 400
    assert requests.post(f"{base}/api/jobs/{job['id']}/images/999999/review", json={"verdict": "real"},
                         timeout=30).status_code == 404
    rows = list(csv.DictReader(io.StringIO(requests.get(f"{base}/api/jobs/{job['id']}/results?format=csv",
                                                        timeout=30).text)))
    assert rows[0]["review"] == "fake" and rows[0]["review_note"] == "on second thought"
    assert rows[1]["review"] == "real" and rows[1]["review_note"].startswith("'=checked")  # no live formula
    out = tmp_path / "reviewed"
    env = service_env(sqlite_url, "redis://127.0.0.1:1/0", start_web_only.data_dir)
    done = subprocess.run([sys.executable, "-m", "pixelproof.cli", "export-reviews", str(out), "--job", job["id"]],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "exported 5 real and 7 fake images" in done.stdout and "1 unsure" in done.stdout
    assert len(list((out / "real").iterdir())) == 5 and len(list((out / "fake").iterdir())) == 7
    assert all(p.name.startswith("review__") for p in (out / "fake").iterdir())
    manifest = list(csv.DictReader((out / "reviews.csv").read_text().splitlines()))
    assert len(manifest) == 12 and manifest[0]["note"] == "on second thought"
    # a mistyped job id is not a job without reviews, and a file where the folder should be is named
    (tmp_path / "a-file").write_text("not a folder")
    for args, says in (([str(tmp_path / "typo"), "--job", job["id"][:-1]], f"no job {job['id'][:-1]} in this database"),
                       ([str(tmp_path / "a-file")], f"OUT {tmp_path / 'a-file'} is a file; name a folder to write into")):
        refused = subprocess.run([sys.executable, "-m", "pixelproof.cli", "export-reviews", *args], env=env,
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 2 and refused.stderr.strip() == f"error: {says}" + (
            "; nothing was written" if "no job" in says else ""), refused.stderr
    assert not (tmp_path / "typo").exists()
    train = subprocess.run([sys.executable, "-m", "pixelproof.cli", "train", "--data", str(out), "--out",
                            str(tmp_path / "run"), "--init-from", str(DEFAULT_CHECKPOINT), "--epochs", "1",
                            "--threads", "1", "--batch-size", "4"],
                           env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "checkpoint" in train.stdout
    from shared.modeling.checkpoint import read_meta

    path = Path(train.stdout.split("checkpoint ", 1)[1].split(" version")[0])
    meta = read_meta(path)
    assert meta.training["init_from_version"] == read_meta(DEFAULT_CHECKPOINT).version
    assert meta.training["n_train"] + meta.training["n_val"] == 12  # every exported image, none of the unsure


def every_result(base: str, job_id: str, limit: int, **params) -> list[dict]:
    """A job's results through the API, page by page at `limit` a page, each page answered 200."""
    got, cursor = [], "0"
    while cursor is not None:
        page = requests.get(f"{base}/api/jobs/{job_id}/results", params={**params, "limit": limit, "cursor": cursor},
                            timeout=30)
        assert page.status_code == 200, page.text
        got += page.json()["items"]
        cursor = page.json()["next_cursor"]
    return got


def test_results_filter_and_sort_page_by_page(start_web_only, db_url, mini_dir):
    base = start_web_only(db_url)
    files = jpeg_bytes(mini_dir, 12)
    job = requests.post(base + "/api/jobs", files=[("files", (f"{i:02d}-{n}", b)) for i, (b, n) in
                                                   enumerate(files)], timeout=60).json()
    engine = create_engine(db_url)
    ps = [0.9, 0.1, 0.5, None, 0.95, 0.02, 0.5, 0.7, None, 0.3, 0.99, 0.6]
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM images ORDER BY id"))]
        for image_id, p in zip(ids, ps):
            label = None if p is None else "fake" if p >= 0.7 else "real" if p < 0.3 else "uncertain"
            status = "error" if p is None else "done"
            conn.execute(text("UPDATE images SET status=:s, label=:l, p_fake=:p WHERE id=:i"),
                         {"s": status, "l": label, "p": p, "i": image_id})
    engine.dispose()

    def listing(**params):
        return every_result(base, job["id"], 3, **params)

    by_id = {i: p for i, p in zip(ids, ps)}
    fakes = listing(label="fake", sort="-p_fake")
    assert [r["p_fake"] for r in fakes] == [0.99, 0.95, 0.9, 0.7]
    both = listing(label="fake,uncertain", p_min=0.5, p_max=0.9, sort="p_fake")
    assert [r["p_fake"] for r in both] == [0.5, 0.5, 0.6, 0.7, 0.9]
    assert [r["id"] for r in both][:2] == sorted(i for i, p in by_id.items() if p == 0.5)  # ties by id
    errors = listing(status="error")
    assert [r["id"] for r in errors] == [i for i, p in by_id.items() if p is None]
    everything = listing(sort="-p_fake")
    assert [r["p_fake"] for r in everything] == sorted([p for p in ps if p is not None], reverse=True) + [None, None]
    names = listing(sort="-filename")
    assert [r["filename"] for r in names] == sorted((r["filename"] for r in names), reverse=True) and len(names) == 12
    csv_text = requests.get(f"{base}/api/jobs/{job['id']}/results",
                            params={"format": "csv", "download": 1, "label": "real", "sort": "p_fake"}, timeout=30).text
    assert [float(r["p_fake"]) for r in csv.DictReader(io.StringIO(csv_text))] == [0.02, 0.1]
    for bad in ({"label": "maybe"}, {"status": "lost"}, {"p_min": "2"}, {"sort": "size"},
                {"sort": "p_fake", "cursor": "not-a-cursor"}, {"sort": "p_fake", "cursor": "WyJhIiwyXQ"}):
        resp = requests.get(f"{base}/api/jobs/{job['id']}/results", params=bad, timeout=30)
        assert resp.status_code == 400, (bad, resp.text)


def test_results_are_found_by_a_persons_verdict_or_the_lack_of_one(start_web_only, db_url, mini_dir):
    """?review= lists what a moderation desk still has to look at (none) or what it decided (real, fake, unsure),
    beside the other filters and in any order; a verdict changed later moves its result, and CSV follows."""
    base = start_web_only(db_url)
    files = jpeg_bytes(mini_dir, 7)
    job = requests.post(base + "/api/jobs", files=[("files", (f"{i}.jpg", b)) for i, (b, _) in enumerate(files)],
                        timeout=60).json()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM images ORDER BY id"))]
        for n, image_id in enumerate(ids):
            conn.execute(text("UPDATE images SET status='done', label=:l, p_fake=:p WHERE id=:i"),
                         {"l": "fake" if n % 2 else "uncertain", "p": 0.3 + n / 10, "i": image_id})
    engine.dispose()

    def review(n: int, verdict: str) -> None:
        resp = requests.post(f"{base}/api/jobs/{job['id']}/images/{ids[n]}/review", json={"verdict": verdict}, timeout=30)
        assert resp.status_code == 200, resp.text

    def found(**params):
        return [r["filename"] for r in every_result(base, job["id"], 2, **params)]

    assert found(review="none") == [f"{n}.jpg" for n in range(7)]
    for n, verdict in ((0, "real"), (1, "fake"), (2, "unsure"), (3, "fake")):
        review(n, verdict)
    assert found(review="none") == ["4.jpg", "5.jpg", "6.jpg"]
    assert found(review="fake") == ["1.jpg", "3.jpg"]
    assert found(review="real,unsure") == ["0.jpg", "2.jpg"] == found(review=["real", "unsure"])
    assert found(review="none,fake", label="fake", sort="-p_fake") == ["5.jpg", "3.jpg", "1.jpg"]
    assert found(review="real,fake,unsure,none") == found() and len(found()) == 7
    given = requests.get(f"{base}/api/jobs/{job['id']}", timeout=30).json()["reviews"]
    assert given == {"real": 1, "fake": 2, "unsure": 1}  # the job counts them, as far as they got
    review(3, "real")  # a person changes their mind
    assert found(review="fake") == ["1.jpg"] and found(review="real") == ["0.jpg", "3.jpg"]
    assert requests.get(f"{base}/api/jobs/{job['id']}", timeout=30).json()["reviews"] == {"real": 2, "fake": 1, "unsure": 1}
    csv_text = requests.get(f"{base}/api/jobs/{job['id']}/results",
                            params={"format": "csv", "download": 1, "review": "none"}, timeout=30).text
    assert [r["filename"] for r in csv.DictReader(io.StringIO(csv_text))] == ["4.jpg", "5.jpg", "6.jpg"]
    resp = requests.get(f"{base}/api/jobs/{job['id']}/results", params={"review": "maybe"}, timeout=30)
    assert resp.status_code == 400 and "review must be one or more of real, fake, unsure, none" in resp.text


def test_results_are_found_by_part_of_their_name_in_any_case(start_web_only, db_url, mini_dir):
    """?name= finds a file among thousands by part of its name or folder: letters in any case, typed as a Mac or
    Windows writes them, and % and _ are the characters themselves, not wildcards. The text is written as stored
    names are (clean_filename), so what matches is what the upload's name became."""
    base = start_web_only(db_url)
    names = ["Trip/Café/IMG_0001.JPG", "trip/img_0002.jpg", "trip/imgX0003.jpg", "100%_sure.png", "1000 sure.png",
             "other/cafe.jpg"]
    files = [b for b, _ in jpeg_bytes(mini_dir, len(names))]
    job = requests.post(base + "/api/jobs", files=[("files", (n, b)) for n, b in zip(names, files)], timeout=60).json()
    assert [r["filename"] for r in requests.get(f"{base}/api/jobs/{job['id']}/results", timeout=30).json()["items"]] == names
    engine = create_engine(db_url)
    with engine.begin() as conn:  # the first two classified fake, the rest real
        ids = [r[0] for r in conn.execute(text("SELECT id FROM images ORDER BY id"))]
        for n, image_id in enumerate(ids):
            conn.execute(text("UPDATE images SET status='done', label=:l, p_fake=:p WHERE id=:i"),
                         {"l": "fake" if n < 2 else "real", "p": 0.9 - n / 10, "i": image_id})
    engine.dispose()

    def found(**params):
        return [r["filename"] for r in every_result(base, job["id"], 1, **params)]

    assert found(name="img_0") == names[:2]  # any case; _ is not "any character" (imgX0003)
    assert found(name="100%") == ["100%_sure.png"]  # nor is % "anything" (1000 sure.png)
    assert found(name="cafe\u0301") == ["Trip/Café/IMG_0001.JPG"]  # a decomposed é, as a Mac types it
    assert found(name="TRIP\\") == names[:3]  # a Windows separator
    assert found(name="CAFÉ", sort="-filename") == ["Trip/Café/IMG_0001.JPG"]  # É as é, on SQLite too
    assert found(name="trip", label="real") == ["trip/imgX0003.jpg"]
    assert found(name="nowhere") == [] and found(name="") == names
    csv_text = requests.get(f"{base}/api/jobs/{job['id']}/results",
                            params={"format": "csv", "download": 1, "name": "SURE", "sort": "p_fake"}, timeout=30).text
    assert [r["filename"] for r in csv.DictReader(io.StringIO(csv_text))] == ["1000 sure.png", "100%_sure.png"]
    assert found(name="100\x00%\t") == ["100%_sure.png"]  # what a stored name cannot hold is left out, as it was there
    for long in ("x" * 1025, "\r" * 1025):  # as sent, before what a stored name cannot hold is left out
        resp = requests.get(f"{base}/api/jobs/{job['id']}/results", params={"name": long}, timeout=30)
        assert resp.status_code == 400 and "at most 1024" in resp.json()["error"], resp.text


def test_the_sweeper_finds_webhooks_never_claimed_or_whose_task_was_lost(sqlite_url):
    from worker.service import due_webhooks

    upgrade(sqlite_url)
    db = Database(sqlite_url)
    with db.session() as s:
        for job_id, status in (("finished", "done"), ("unfinished", "queued"), ("lost", "done")):
            s.add(Job(id=job_id, callback_url="http://127.0.0.1:9/x"))
            s.add(ImageItem(job_id=job_id, filename="a.jpg", sha256="0" * 64, size_bytes=1, status=status))
        s.add(Job(id="no-hook"))
        s.add(ImageItem(job_id="no-hook", filename="a.jpg", sha256="0" * 64, size_bytes=1, status="done"))
        s.commit()
    assert due_webhooks(db, {"lost"}) == ["lost"]  # claimed after its last image, then its task is lost
    assert due_webhooks(db, None, stale_after=60) == ["finished"]  # never claimed (a worker died after its commit)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == "lost").values(webhook_at=utcnow() - timedelta(minutes=5)))
        s.commit()
    assert due_webhooks(db, None, stale_after=60) == ["lost"]
    assert due_webhooks(db, None, stale_after=60) == []  # touched: not sent again at once
    db.engine.dispose()


def test_a_notice_sent_the_moment_a_long_poll_starts_waiting_still_wakes_it(redis_server):
    """The web's listener starts with the first waiter: watching() must return only once its subscription is
    in place, or a job that finishes in the first milliseconds (a one-image job) is only seen RECHECK_S later.
    Each round starts a fresh listener and publishes the moment watching() returns."""
    from redis import Redis

    from shared.events import publish_changes
    from web.watch import RECHECK_S, JobWatcher

    redis = Redis.from_url(redis_server.url)
    for i in range(5):
        watcher = JobWatcher(redis_server.url, max_waiting=4, max_waiting_per_client=4)
        with watcher.watching(f"job-{i}") as changed:
            publish_changes(redis, [f"job-{i}"])
            assert changed.wait(RECHECK_S / 2), f"round {i}: the notice was lost"
