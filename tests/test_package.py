"""The package as a user installs it: a wheel in a fresh virtualenv, run from a directory of its own."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import requests

from pixelproof.embedded_redis import free_port
from shared.settings import DEFAULT_CHECKPOINT, REPO_ROOT

from .helpers import wait_until

pytestmark = pytest.mark.slow


def test_the_wheel_migrates_starts_and_classifies_from_another_directory(tmp_path, mini_dir):
    dist, venv, run = tmp_path / "dist", tmp_path / "venv", tmp_path / "somewhere"
    run.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO_ROOT)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("pixelproof-*.whl")
    base_python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.14.1", "torchvision==0.29.1"], check=True, capture_output=True, timeout=900)
    subprocess.run(pip + [str(wheel)], check=True, capture_output=True, timeout=900)

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIXELPROOF_") and k not in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"

    def cli(*args, **kw):
        return subprocess.run([str(venv / "bin" / "pixelproof"), *args], cwd=run, env={**env, **kw},
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import shared; print(shared.__file__)"], cwd=run,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed copy, not this checkout

    # migrations travel in the package: a relative data folder is resolved against where the command runs
    migrated = cli("migrate")
    assert migrated.returncode == 0 and "database at head" in migrated.stdout, migrated.stderr
    assert (run / "var" / "pixelproof.db").is_file()

    # the checkpoint is a setting: without it, a worker says which one
    no_model = cli("worker", REDIS_URL="redis://127.0.0.1:1/0")
    assert no_model.returncode != 0 and "PIXELPROOF_MODEL_PATH" in no_model.stderr

    port = free_port()
    log = run / "up.log"
    up = subprocess.Popen([str(venv / "bin" / "pixelproof"), "up"], cwd=run, stdout=open(log, "wb"),
                          stderr=subprocess.STDOUT, env={**env, "PORT": str(port),
                                                         "PIXELPROOF_MODEL_PATH": str(DEFAULT_CHECKPOINT)})
    try:
        wait_until(lambda: "Pixelproof is ready" in log.read_text(), 180, "the installed stack to be ready")
        folder = tmp_path / "pics"
        folder.mkdir()
        shutil.copy(sorted((mini_dir / "fake").iterdir())[0], folder / "one.jpg")
        done = cli("submit", str(folder), "--server", f"http://127.0.0.1:{port}", "--wait")
        assert done.returncode == 0 and "done: 1 images" in done.stdout, done.stderr
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # templates and static
        assert requests.get(f"http://127.0.0.1:{port}/static/app.js", timeout=10).status_code == 200
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    # every process opened the one database, in the directory the command was run from
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("pixelproof.db")] == [run.relative_to(tmp_path) / "var" / "pixelproof.db"]
