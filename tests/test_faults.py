"""Faults injected on real processes: killed workers, a restarted Redis, a database that drops out, load."""
from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time

import numpy as np
import psutil
import pytest
import requests
from PIL import Image
from sqlalchemy import create_engine, func, select

from pixelproof.embedded_redis import EmbeddedRedis, free_port
from shared.migrate import upgrade
from shared.models import ImageItem

from .conftest import service_env
from .helpers import all_results, mini_files, wait_done, wait_until
from .processes import start_worker

pytestmark = pytest.mark.slow


def slow_pngs(n: int, side: int = 1400) -> list[tuple[bytes, str]]:
    """Large lossless images: decoding them makes a batch take seconds, long enough to kill it midway."""
    out = []
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(n):
        arr = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.full((side, side), i * 7 % 255)], -1)
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8)).save(buf, "PNG", compress_level=1)
        out.append((buf.getvalue(), f"big/{i}.png"))
    return out


def post(client, files, job=None):
    data = {"files": [(io.BytesIO(b), name) for b, name in files]}
    url = f"/api/jobs/{job}/files" if job else "/api/jobs"
    resp = client.post(url, data=data, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()


def count_running(db_url: str) -> int:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        n = conn.scalar(select(func.count()).select_from(ImageItem).where(ImageItem.status == "running"))
    engine.dispose()
    return n



def assert_complete_and_counted_once(client, job_id: str, total: int) -> list[dict]:
    job = wait_done(client, job_id, timeout=240)
    items = all_results(client, job_id)
    assert job["total"] == total == len(items)
    assert job["done"] == total and sum(job["counts"].values()) + job["errors"] == total
    assert all(i["status"] in ("done", "error") for i in items)
    return items


def test_worker_child_killed_mid_batch_is_redelivered(make_app, db_url, redis_server, tmp_path):
    upgrade(db_url)
    env = service_env(db_url, redis_server.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="12")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        client = make_app(env).test_client()
        job = post(client, slow_pngs(24))
        wait_until(lambda: count_running(db_url) > 0, 60, "a batch to start")
        victims = [c.pid for c in psutil.Process(worker.popen.pid).children()]
        assert victims, "prefork worker has no child"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        items = assert_complete_and_counted_once(client, job["id"], 24)
    finally:
        worker.stop()
    assert all(i["status"] == "done" for i in items)
    assert "WorkerLostError" in worker.text() or "SIGKILL" in worker.text()


def test_whole_worker_killed_then_sweeper_recovers(make_app, sqlite_url, redis_server, tmp_path):
    upgrade(sqlite_url)
    env = service_env(sqlite_url, redis_server.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="12",
                      PIXELPROOF_STALE_AFTER="4", PIXELPROOF_SWEEP_INTERVAL="1")
    first = start_worker(env, tmp_path / "w1.log", name="w1")
    client = make_app(env).test_client()
    job = post(client, slow_pngs(24))
    wait_until(lambda: count_running(sqlite_url) > 0, 60, "a batch to start")
    first.kill(signal.SIGKILL)  # parent and child: the message stays unacknowledged in Redis
    second = start_worker(env, tmp_path / "w2.log", name="w2", beat=True)
    try:
        assert_complete_and_counted_once(client, job["id"], 24)
    finally:
        second.stop()
    assert "event=requeued_stale" in second.text()
    # Celery's routine lines for a sweep every second are dropped (worker/routine_logs.py), a batch's are not
    assert "pixelproof.sweep[" not in second.text() and "Sending due task sweep-stale-images" not in second.text()
    assert "pixelproof.classify[" in second.text() and "] received" in second.text()


def test_redis_restart_loses_nothing_and_web_says_503(make_app, sqlite_url, tmp_path, mini_dir):
    upgrade(sqlite_url)
    redis = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    env = service_env(sqlite_url, redis.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="10",
                      PIXELPROOF_STALE_AFTER="5", PIXELPROOF_SWEEP_INTERVAL="1")
    worker = start_worker(env, tmp_path / "worker.log", beat=True)
    try:
        client = make_app(env).test_client()
        files = [(p.read_bytes(), n) for p, n in mini_files(mini_dir)[:200]]
        job = post(client, files[:100])
        redis.stop()
        resp = client.post(f"/api/jobs/{job['id']}/files", content_type="multipart/form-data",
                           data={"files": [(io.BytesIO(b), n) for b, n in files[100:]]})
        assert resp.status_code == 503 and "Redis" in resp.get_json()["error"]
        assert client.get("/healthz").status_code == 503
        time.sleep(2)
        redis.start()
        wait_until(lambda: client.get("/healthz").status_code == 200, 30, "web to see Redis again")
        assert_complete_and_counted_once(client, job["id"], 200)
    finally:
        worker.stop()
        redis.stop()


class FlakyProxy:
    """A loopback TCP proxy to PostgreSQL that can cut every connection and refuse new ones for a while."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.up = True
        self.conns: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        self.up = False
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns.clear()

    def restore(self):
        self.up = True

    def close(self):
        self.stopped = True
        self.cut()
        self.server.close()


def test_database_outage_is_retried_with_backoff(make_app, pg_url, redis_server, tmp_path):
    upgrade(pg_url)
    proxy = FlakyProxy(int(pg_url.split("@", 1)[1].split("/")[0].split(":")[1]))
    worker_url = pg_url.replace(pg_url.split("@", 1)[1].split("/")[0], f"127.0.0.1:{proxy.port}")
    env = service_env(pg_url, redis_server.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="12")
    worker = start_worker({**env, "DATABASE_URL": worker_url}, tmp_path / "worker.log")
    try:
        client = make_app(env).test_client()
        proxy.cut()
        job = post(client, slow_pngs(24, side=600))  # the web talks to PostgreSQL directly: uploads work
        time.sleep(4)  # the worker's tasks hit the outage and go into retry
        proxy.restore()
        assert_complete_and_counted_once(client, job["id"], 24)
    finally:
        worker.stop()
        proxy.close()
    assert "retry: Retry in" in worker.text() and "OperationalError" in worker.text()


def test_concurrent_clients_get_no_5xx_and_every_image_finishes(live_stack, mini_dir):
    """20 clients submit small jobs for a bounded time against gunicorn + a worker, loopback only."""
    samples = [p.read_bytes() for p, _ in mini_files(mini_dir)[::50]] + [b"not an image"]
    statuses, job_ids, lock = [], [], threading.Lock()
    stop_at = time.monotonic() + 8

    def client(k: int):
        session = requests.Session()
        n = 0
        while time.monotonic() < stop_at and n < 30:
            files = [("files", (f"c{k}/{n}-{i}.jpg", samples[(k + n + i) % len(samples)])) for i in range(3)]
            r = session.post(f"{live_stack}/api/jobs", files=files, timeout=60)
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 202:
                    job_ids.append(r.json()["id"])
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses and all(s < 500 for s in statuses), sorted(set(statuses))
    assert statuses.count(202) == len(job_ids) == len(statuses)
    deadline = time.monotonic() + 240
    for job_id in job_ids:
        while (job := requests.get(f"{live_stack}/api/jobs/{job_id}?wait=10&done=-1", timeout=30).json())["status"] != "done":
            assert time.monotonic() < deadline, job
            requests.get(f"{live_stack}/api/jobs/{job_id}?wait=10&done={job['done']}", timeout=30)
        assert job["total"] == 3 and job["done"] == 3


def test_files_stored_while_redis_was_down_are_sent_within_seconds_of_its_return(make_app, sqlite_url, tmp_path, mini_dir):
    """With the default stale timeout (15 minutes): the web marks what it could not send, and the first sweep
    after Redis is back sends it."""
    upgrade(sqlite_url)
    redis = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    env = service_env(sqlite_url, redis.url, tmp_path / "data")
    worker = start_worker(env, tmp_path / "worker.log", beat=True)
    try:
        client = make_app(env).test_client()
        files = [(p.read_bytes(), n) for p, n in mini_files(mini_dir)[:20]]
        job = post(client, files[:10])
        wait_until(lambda: client.get(f"/api/jobs/{job['id']}").get_json()["done"] == 10, 60, "the first files")
        redis.stop()
        resp = client.post(f"/api/jobs/{job['id']}/files", content_type="multipart/form-data",
                           data={"files": [(io.BytesIO(b), n) for b, n in files[10:]]})
        assert resp.status_code == 503
        redis.start()
        back = time.monotonic()
        wait_until(lambda: client.get(f"/api/jobs/{job['id']}").get_json()["status"] == "done", 90,
                   "the unsent files to be classified")
        print(f"\nunsent files classified {time.monotonic() - back:.1f} s after Redis came back")
        assert_complete_and_counted_once(client, job["id"], 20)
    finally:
        worker.stop()
        redis.stop()
