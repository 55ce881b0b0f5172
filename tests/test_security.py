"""Safe by default: what is exposed, what exports can do in a spreadsheet, what a response allows a browser."""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import requests
from PIL import Image
from redis import Redis
from sqlalchemy import create_engine, update

from pixelproof.embedded_redis import free_port
from shared.events import CHANNEL
from shared.migrate import upgrade
from shared.models import ImageItem
from shared.settings import REPO_ROOT
from shared.storage import LocalStorage
from shared.thumbnails import THUMBNAIL_SIZES
from web.watch import RECHECK_S

from .conftest import service_env
from .helpers import jpeg_bytes, post_files, wait_until

FORMULAS = ["=HYPERLINK(CONCAT(A1;B1);A2)", "+cmd|' calc'!A0", "-2+3", "@SUM(A1:A2)", "=1+2"]


@pytest.fixture
def client(make_app, stack_env):
    return make_app(stack_env).test_client()


def test_csv_export_never_carries_a_live_formula(client, mini_dir):
    """Control characters never reach a stored name (web.names), so = + - @ are what is left to neutralise."""
    image = jpeg_bytes(mini_dir, 1)[0][0]
    names = [f"{f}.jpg" for f in FORMULAS] + ["plain-name.jpg"]
    job = post_files(client, "/api/jobs", [(image, n) for n in names]).get_json()

    body = client.get(f"/api/jobs/{job['id']}/results?format=json").get_json()
    sent = names
    assert [i["filename"] for i in body["items"]] == sent  # the JSON keeps the true names

    for url in (f"/api/jobs/{job['id']}/results?format=csv", f"/api/jobs/{job['id']}/results?format=csv&download=1"):
        rows = list(csv.DictReader(io.StringIO(client.get(url).get_data(as_text=True))))
        cells = [rows[i]["filename"] for i in range(len(names))]
        for cell, name in zip(cells[:-1], sent):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
            assert cell == "'" + name
        assert cells[-1] == "plain-name.jpg"  # nothing else is touched


def test_csv_cells_neutralise_every_formula_start():
    from shared.models import csv_cell

    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_cell(start + "x") == "'" + start + "x"
    assert csv_cell(-0.5) == -0.5 and csv_cell("a=b") == "a=b" and csv_cell(None) is None


def test_every_response_carries_the_security_headers(client):
    for url in ("/", "/api/openapi.json", "/api/jobs/nope", "/static/app.js", "/healthz"):
        resp = client.get(url)
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp, url
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"


# --- against real processes -------------------------------------------------------------------------------

def listening_addresses(pid: int) -> set[str]:
    """The addresses a process tree listens on."""
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    found = set()
    for proc in procs:
        try:
            found |= {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return found


def run_web(env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixelproof.cli", "web", "--workers", "1"], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(base: str, proc: subprocess.Popen, log_path) -> None:
    def up():
        assert proc.poll() is None, log_path.read_text()[-2000:]
        try:
            return requests.get(base + "/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting behind the bound port
            return False

    wait_until(up, 60, "the web to answer")


@pytest.mark.slow
def test_web_listens_on_loopback_and_refuses_to_open_up_without_tokens(sqlite_url, redis_server, tmp_path):
    upgrade(sqlite_url)
    port = free_port()
    base_env = service_env(sqlite_url, redis_server.url, tmp_path / "data", PORT=str(port))

    with open(tmp_path / "web.log", "wb") as log:  # the default: loopback only
        proc = run_web(base_env, log)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, tmp_path / "web.log")
            assert listening_addresses(proc.pid) == {"127.0.0.1"}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    exposed = {**base_env, "PIXELPROOF_HOST": "0.0.0.0"}  # every interface, no token: refused before listening
    done = subprocess.run([sys.executable, "-m", "pixelproof.cli", "web"], cwd=REPO_ROOT, env=exposed,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "PIXELPROOF_API_TOKENS" in done.stderr and "PIXELPROOF_ALLOW_OPEN_ACCESS" in done.stderr
    up = subprocess.run([sys.executable, "-m", "pixelproof.cli", "up"], cwd=REPO_ROOT, env=exposed,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode != 0 and "PIXELPROOF_API_TOKENS" in up.stderr and "is ready" not in up.stdout

    with open(tmp_path / "web2.log", "wb") as log:  # with tokens it may listen everywhere
        proc = run_web({**exposed, "PIXELPROOF_API_TOKENS": "t0ken"}, log)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, tmp_path / "web2.log")
            assert listening_addresses(proc.pid) == {"0.0.0.0"}
            assert requests.get(f"http://127.0.0.1:{port}/api/jobs/x").status_code == 401
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def web_cpu_seconds(base: str) -> float:
    port = int(base.rsplit(":", 1)[1])
    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid}
    procs = {p for pid in pids for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]}
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


@pytest.mark.slow
def test_thumbnails_of_a_40_megapixel_upload_are_served_from_what_the_worker_stored(live_stack, tmp_path):
    ramp = np.linspace(0, 255, 8000, dtype=np.float32)
    arr = np.broadcast_to(ramp[None, :, None], (5000, 8000, 3)).astype(np.uint8)  # 40,000,000 pixels
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=80)
    job = requests.post(live_stack + "/api/jobs", files=[("files", ("huge.jpg", buf.getvalue()))]).json()
    wait_until(lambda: requests.get(f"{live_stack}/api/jobs/{job['id']}").json()["status"] == "done", 180,
               "the 40-megapixel upload to be classified")
    item = requests.get(f"{live_stack}/api/jobs/{job['id']}/results").json()["items"][0]
    assert item["status"] == "done", item
    url = f"{live_stack}/api/jobs/{job['id']}/images/{item['id']}/thumbnail"

    before = web_cpu_seconds(live_stack)
    for size in (96, 512) * 20:
        resp = requests.get(f"{url}?size={size}")
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/jpeg"
    used = web_cpu_seconds(live_stack) - before
    print(f"\nweb CPU time for 40 thumbnail requests of a 40-megapixel upload: {used:.3f} s")

    storage = LocalStorage(tmp_path / "data" / "uploads")
    for size, stored in ((96, 128), (512, 512)):
        path = storage.thumbnail_path(item["sha256"], stored)
        body = requests.get(f"{url}?size={size}").content
        assert body == path.read_bytes()  # the very file the worker wrote
        # the 512 rendition of a large image is one box average: 435-512 px (shared.imaging.REDUCED_ENOUGH)
        assert stored * 0.85 <= max(Image.open(io.BytesIO(body)).size) <= stored
    for size in THUMBNAIL_SIZES:  # a thumbnail an earlier version stored as PNG is still served, as PNG
        jpeg = storage.thumbnail_path(item["sha256"], size)
        legacy = storage.thumbnail_path(item["sha256"], size, ".png")
        Image.open(jpeg).save(legacy, "PNG")
        jpeg.unlink()
    resp = requests.get(url)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
    assert resp.content == storage.thumbnail_path(item["sha256"], 128, ".png").read_bytes()
    for size in THUMBNAIL_SIZES:  # without the stored files the web has nothing to serve: it never decodes
        storage.thumbnail_path(item["sha256"], size, ".png").unlink()
    resp = requests.get(url)
    assert resp.status_code == 404 and "missing" in resp.json()["error"]


@pytest.fixture
def web_without_worker(start_web_only, sqlite_url):
    return start_web_only(sqlite_url, PIXELPROOF_API_TOKENS="alice,bob,carol")


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def new_job(base: str, token: str, mini_dir) -> dict:
    image = sorted((mini_dir / "real").iterdir())[0]
    resp = requests.post(base + "/api/jobs", files=[("files", (image.name, image.read_bytes()))], headers=auth(token))
    assert resp.status_code == 202
    return resp.json()


def long_poll(base: str, job_id: str, token: str, wait_s: float, out: list) -> None:
    """One long-poll; its status, Retry-After and error message are appended to out."""
    resp = requests.get(f"{base}/api/jobs/{job_id}?wait={wait_s}&done=0", headers=auth(token), timeout=60)
    out.append((resp.status_code, resp.headers.get("Retry-After"), resp.json().get("error", "")))


def refused(out: list) -> int:
    return sum(status == 429 for status, _, _ in out)


def hold_every_place(base: str, job_id: str, token: str, wait_s: float, out: list) -> list[threading.Thread]:
    """Start one long-poll at a time until one is refused: only then are all of the client's places shown to be
    held (for wait_s), since the server takes threaded requests in no fixed order. Call with nobody else waiting,
    so the refusal can only be the client's own bound."""
    threads = []
    for _ in range(20):
        threads.append(threading.Thread(target=long_poll, args=(base, job_id, token, wait_s, out)))
        threads[-1].start()
        time.sleep(0.2)
        if refused(out):
            break
    assert refused(out) and all("this client" in error for status, _, error in out if status == 429), out
    return threads


@pytest.mark.slow
def test_fifty_long_polls_are_bounded_and_others_still_get_answers(web_without_worker, mini_dir):
    base = web_without_worker
    jobs = {t: new_job(base, t, mini_dir)["id"] for t in ("alice", "bob", "carol")}
    wait_s = 12  # every place taken below is held this long, far longer than the steps that rely on it

    bob = []
    threads = hold_every_place(base, jobs["bob"], "bob", wait_s, bob)
    # Alice sends fifty at once: 48 refusals mean her two places are held too
    alice = []
    alice_threads = [threading.Thread(target=long_poll, args=(base, jobs["alice"], "alice", wait_s, alice))
                     for _ in range(50)]
    for t in alice_threads:
        t.start()
    threads += alice_threads
    wait_until(lambda: refused(alice) == 48, 10, "alice's long-polls past her two places to be refused")
    # alice holds 2 waiting places, bob 2: the server's 4 are taken, so carol may not wait either...
    carol = []
    long_poll(base, jobs["carol"], "carol", wait_s, carol)
    assert carol[0][0] == 429 and "the server" in carol[0][2], carol
    # ...but anyone asking without waiting is answered while all of that is going on
    started = time.monotonic()
    plain = requests.get(f"{base}/api/jobs/{jobs['carol']}", headers=auth("carol"), timeout=30)
    assert plain.status_code == 200 and plain.json()["total"] == 1
    assert requests.get(base + "/healthz", timeout=30).status_code == 200
    assert time.monotonic() - started < 5, "a plain request waited behind the long-polls"
    for t in threads:
        t.join(60)
    for out in (alice, bob):  # each held exactly two places to the end of its wait; every other was refused
        assert sorted(status for status, _, _ in out) == [200, 200] + [429] * (len(out) - 2), out
        assert all(retry == "5" for status, retry, _ in out if status == 429), out


@pytest.mark.slow
def test_a_long_poll_wakes_on_a_notice_not_by_polling_the_database(web_without_worker, sqlite_url, redis_server, mini_dir):
    base = web_without_worker
    job = new_job(base, "alice", mini_dir)
    answer = []
    started = time.monotonic()
    t = threading.Thread(target=lambda: answer.append(requests.get(
        f"{base}/api/jobs/{job['id']}?wait=20&done=0", headers=auth("alice"), timeout=30).json()))
    t.start()
    time.sleep(0.5)
    engine = create_engine(sqlite_url)  # finish the image behind the web's back, with no notice
    with engine.begin() as conn:
        conn.execute(update(ImageItem).where(ImageItem.job_id == job["id"]).values(status="done", label="real", p_fake=0.1))
    engine.dispose()
    time.sleep(1.5)
    assert not answer, "the long-poll saw the change without a notice: it is polling the database"
    Redis.from_url(redis_server.url).publish(CHANNEL, job["id"])
    t.join(30)
    assert answer and answer[0]["done"] == 1 and answer[0]["status"] == "done"
    assert time.monotonic() - started < RECHECK_S, "woken by its periodic re-check, not by the notice"


@pytest.mark.slow
def test_the_cli_takes_its_turn_when_the_server_has_too_many_waiting(web_without_worker, mini_dir):
    from pixelproof.submit import Client

    base = web_without_worker
    job = new_job(base, "alice", mini_dir)
    holders = hold_every_place(base, job["id"], "alice", 4, [])  # both of alice's places, for 4 s
    started = time.monotonic()
    body = Client(base, "alice").job(job["id"], wait=1, done=0)  # refused first, then answered after Retry-After
    assert body["id"] == job["id"] and body["total"] == 1
    assert time.monotonic() - started >= 4, "the CLI was not refused, or did not wait the Retry-After of 5 s"
    for t in holders:
        t.join(30)


@pytest.mark.parametrize("headers, status", [
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),  # sandboxed frames and file: pages
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Origin": "http://localhost"}, 202),  # the page itself (the test client's host)
    ({"Sec-Fetch-Site": "same-origin"}, 202),
    ({}, 202),  # the CLI, scripts
])
def test_cross_site_writes_are_refused(client, mini_dir, headers, status):
    resp = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 1), headers=headers)
    assert resp.status_code == status, resp.get_json()
    if status == 403:
        assert "cross-site" in resp.get_json()["error"]


@pytest.mark.parametrize("tokens", ["", "t0ken"])
def test_rate_limit_counts_the_client_not_the_spelling_of_its_header(make_app, stack_env, mini_dir, tokens):
    client = make_app({**stack_env, "PIXELPROOF_RATE_LIMIT_PER_MINUTE": "5", "PIXELPROOF_API_TOKENS": tokens}).test_client()
    if tokens:  # one token, spelt many ways that all authenticate
        spellings = [f"{b} {' ' * i}t0ken{' ' * (i % 3)}" for i in range(16) for b in ("Bearer", "bearer", "BEARER", "bEaReR")]
    else:  # tokens off: any header at all
        spellings = [f"Bearer random-{i}" for i in range(64)]
    statuses = [post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 1), headers={"Authorization": h}).status_code
                for h in spellings]
    # 5 per minute: at most 10 get through even if the test straddles a minute boundary
    assert statuses[:5] == [202] * 5 and statuses.count(202) <= 10 and set(statuses) == {202, 429}, statuses


def test_compose_publishes_on_loopback_with_no_fixed_secret_and_runs_unprivileged():
    """Docker is not on the test machines: the files are checked as compose and Docker would read them."""
    import re

    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    ports = compose["services"]["web"]["ports"]
    assert ports == ["${PIXELPROOF_PUBLISH:-127.0.0.1:8000}:8000"]  # the host's loopback unless told otherwise
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if "PASSWORD" in key or key == "DATABASE_URL":
                assert "${POSTGRES_PASSWORD:?" in str(value), (name, key)  # from the environment, required
    users = re.findall(r"^USER\s+(\S+)", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert users and users[-1] not in ("root", "0")
