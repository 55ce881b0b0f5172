"""Start and stop the real processes of the stack (Celery workers, gunicorn) for integration tests."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from pixelproof.stack import web_command, worker_command
from shared.settings import REPO_ROOT


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.args = args
        self._fh = open(log, "ab")
        self.popen = subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited with {self.popen.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"no {needle!r} within {timeout}s:\n{self.text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        self.popen.wait(30)

    def stop(self) -> None:
        """TERM to the main process only, as `pixelproof up` and Docker stop it: Celery then ends its pool
        children itself. TERM to the whole group reached a prefork child first now and then, and its parent
        logged a WorkerLostError for a task that had finished. Whatever is left after 30 s is killed."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # orphans of a main process that died
        except ProcessLookupError:
            pass
        self.popen.wait(30)
        self._fh.close()


def start_worker(env: dict[str, str], log: Path, name: str = "w1", concurrency: int = 1, beat: bool = False) -> Proc:
    schedule = log.parent / f"{name}-beat-schedule" if beat else None
    args = worker_command(concurrency=concurrency, beat_schedule=schedule, hostname=f"{name}@%h")
    proc = Proc(args, env, log)
    proc.wait_for_log(" ready.")
    proc.wait_for_log("event=model_loaded")
    return proc


def start_web(env: dict[str, str], log: Path, port: int) -> Proc:
    args = web_command(port, workers=1, host="127.0.0.1")
    proc = Proc(args, env, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting behind the bound port
            pass
        if proc.popen.poll() is not None:
            raise RuntimeError(proc.text()[-3000:])
        time.sleep(0.2)
    raise TimeoutError(proc.text()[-3000:])
