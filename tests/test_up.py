"""`pixelproof up` (what `make up` runs): the whole service on embedded defaults, stopped cleanly by Ctrl-C."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from pixelproof.embedded_redis import free_port
from shared.settings import REPO_ROOT

from .helpers import wait_until

pytestmark = pytest.mark.slow


def healthy(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_up_serves_classifies_and_stops_on_ctrl_c(tmp_path, mini_dir):
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {**_up_env(tmp_path, port), "HOME": str(home)}
    env.pop("XDG_RUNTIME_DIR", None)
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pixelproof.cli", "up"], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(base), 90, "the stack to answer /healthz")
        wait_until(lambda: "Pixelproof is ready" in (tmp_path / "up.log").read_text(), 120,
                   "the stack to say it is ready (web answering, a worker answering a ping)")
        assert f"ready: http://127.0.0.1:{port}/" in (tmp_path / "up.log").read_text()
        image = sorted((mini_dir / "fake").iterdir())[0]
        job = requests.post(base + "/api/jobs", files=[("files", ("x/" + image.name, image.read_bytes()))]).json()
        deadline = time.monotonic() + 90
        while job["status"] != "done":
            assert time.monotonic() < deadline, job
            job = requests.get(f"{base}/api/jobs/{job['id']}?wait=10&done={job['done']}", timeout=30).json()
        assert job["done"] == 1 and job["errors"] == 0
        assert (tmp_path / "var" / "pixelproof.db").exists()  # SQLite, the embedded default
        kids = psutil.Process(proc.pid).children()
        assert len(kids) >= 3  # redis-server, gunicorn, celery
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert "Pixelproof stopped." in (tmp_path / "up.log").read_text()
    assert not list(home.iterdir())  # everything it keeps is under PIXELPROOF_DATA_DIR (no ~/.gunicorn/gunicorn.ctl)
    for kid in kids:  # nothing left running
        assert not kid.is_running() or kid.status() == psutil.STATUS_ZOMBIE, kid


def _up_env(tmp_path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELPROOF_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"PORT": str(port), "PIXELPROOF_DATA_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"})
    return env


def test_up_on_a_busy_port_says_so_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "pixelproof.cli", "up"], cwd=REPO_ROOT, env=_up_env(tmp_path, port),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and "PORT" in done.stderr
    assert "ready" not in done.stdout and "starting" not in done.stdout
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started


@pytest.mark.parametrize("command", ["up", "web", "worker"])
def test_a_data_folder_that_cannot_be_made_stops_start_up_in_one_line(tmp_path, command):
    """Before any process starts: gunicorn had booted and lost one worker after another on the same traceback."""
    (tmp_path / "a-file").write_text("where the uploads should go")
    env = {**_up_env(tmp_path, free_port()), "PIXELPROOF_STORAGE_DIR": str(tmp_path / "a-file" / "uploads")}
    if command != "up":
        env.update(REDIS_URL="redis://127.0.0.1:1/0", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    done = subprocess.run([sys.executable, "-m", "pixelproof.cli", command], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (f"Pixelproof will not start: the upload folder {tmp_path / 'a-file' / 'uploads'} "
                                   f"cannot be made: Not a directory ({tmp_path / 'a-file' / 'uploads' / 'tmp'}); "
                                   "set PIXELPROOF_STORAGE_DIR or PIXELPROOF_DATA_DIR"), done.stderr
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started


def test_up_restarts_its_redis_and_keeps_serving(tmp_path, mini_dir):
    port = free_port()
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pixelproof.cli", "up"], cwd=REPO_ROOT, env=_up_env(tmp_path, port),
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "Pixelproof is ready" in (tmp_path / "up.log").read_text(), 180, "the stack to be ready")
        redis = [k for k in psutil.Process(proc.pid).children() if "redis" in k.name()]
        assert len(redis) == 1
        redis[0].kill()
        wait_until(lambda: "event=process_restarted process=redis" in (tmp_path / "up.log").read_text(), 30, "Redis to be restarted")

        wait_until(lambda: healthy(base), 30, "the stack to be healthy again")
        image = sorted((mini_dir / "fake").iterdir())[0]
        job = requests.post(base + "/api/jobs", files=[("files", (image.name, image.read_bytes()))]).json()
        deadline = time.monotonic() + 120
        while job["status"] != "done":  # the worker reconnected to the restarted Redis on its own
            assert time.monotonic() < deadline, job
            job = requests.get(f"{base}/api/jobs/{job['id']}?wait=10&done={job['done']}", timeout=30).json()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
