"""The whole path on real parts: app -> real Redis -> real Celery worker processes -> SQLite/PostgreSQL."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from shared.modeling.checkpoint import read_meta
from shared.settings import CIFAKE_CHECKPOINT, DEFAULT_CHECKPOINT

from .conftest import service_env
from .helpers import all_results, mini_files, upload_all, wait_done
from .processes import start_worker

pytestmark = pytest.mark.slow






def test_every_mini_image_gets_a_result(make_app, stack_env, mini_dir, tmp_path, db_url):
    """The default, crop-based model through the whole stack: three labels by its thresholds, crop regions."""
    worker = start_worker(stack_env, tmp_path / "worker.log")
    try:
        client = make_app(stack_env).test_client()
        files = mini_files(mini_dir)
        assert len(files) == 500
        job = upload_all(client, files)
        job = wait_done(client, job["id"])
        csv_text = client.get(f"/api/jobs/{job['id']}/results?format=csv&download=1").get_data(as_text=True)
    finally:
        worker.stop()
    meta = read_meta(DEFAULT_CHECKPOINT)
    version, rule = meta.version, meta.label_rule
    assert job["total"] == 500 and job["done"] == 500 and job["errors"] == 0
    assert sum(job["counts"].values()) == 500 and set(job["counts"]) == {"real", "fake", "uncertain"}
    assert job["model"] == {"name": meta.name, "version": version, "thresholds": rule.to_dict(),
                            "scope": meta.notes["scope"], "limits": meta.notes["limits"], "card": meta.notes["card"],
                            "max_false_fake": 0.01}  # what its calibration recorded
    assert "better than chance" in job["model"]["scope"]  # what the checkpoint says it can be trusted on
    items = all_results(client, job["id"])
    assert sorted(i["filename"] for i in items) == sorted(name for _, name in files)
    for item in items:
        assert item["status"] == "done" and item["error"] is None
        assert item["label"] == rule.label(item["p_fake"]) and 0.0 <= item["p_fake"] <= 1.0
        assert (item["real_below"], item["fake_from"]) == (rule.real_below, rule.fake_from)
        assert item["model_version"] == version and len(item["sha256"]) == 64
        # a 32x32 image is smaller than a crop: one region, the whole image, padded for the model
        assert (item["image_width"], item["image_height"]) == (32, 32)
        [region] = item["regions"]
        assert (region["x"], region["y"], region["w"], region["h"]) == (0, 0, 32, 32) and 0 <= region["p_fake"] <= 1
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == 500 and rows[0]["label"] in ("real", "fake", "uncertain")
    assert json.loads(rows[0]["regions"])[0]["w"] == 32 and float(rows[0]["fake_from"]) == rule.fake_from
    # the job id travels in every worker log line about it
    assert f"job_id={job['id']}" in worker.text()


def test_the_cifake_model_still_serves_and_separates_its_own_images(make_app, stack_env, mini_dir, tmp_path):
    """The earlier default stays servable by PIXELPROOF_MODEL_PATH, and on CIFAKE images it is right."""
    env = {**stack_env, "PIXELPROOF_MODEL_PATH": str(CIFAKE_CHECKPOINT)}
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        client = make_app(env).test_client()
        job = wait_done(client, upload_all(client, mini_files(mini_dir))["id"])
    finally:
        worker.stop()
    version = read_meta(CIFAKE_CHECKPOINT).version
    assert job["done"] == 500 and job["model"]["version"] == version and job["counts"]["uncertain"] == 0
    items = all_results(client, job["id"])
    correct = sum((i["label"] == "fake") == i["filename"].startswith("fake/") for i in items)
    assert correct / len(items) > 0.85  # it separates the classes, not calls everything one label


def test_two_workers_share_one_job(make_app, pg_url, redis_server, mini_dir, tmp_path):
    from shared.migrate import upgrade

    upgrade(pg_url)
    env = service_env(pg_url, redis_server.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="10")
    workers = [start_worker(env, tmp_path / f"w{i}.log", name=f"w{i}") for i in (1, 2)]
    try:
        client = make_app(env).test_client()
        job = upload_all(client, mini_files(mini_dir))
        job = wait_done(client, job["id"])
    finally:
        for w in workers:
            w.stop()
    assert job["done"] == 500 and job["errors"] == 0
    for w in workers:  # both took part
        assert f"event=classified job_id={job['id']}" in w.text(), w.text()[-2000:]


def test_same_content_is_computed_once(make_app, stack_env, mini_dir, tmp_path):
    worker = start_worker(stack_env, tmp_path / "worker.log")
    try:
        client = make_app(stack_env).test_client()
        p = sorted((mini_dir / "fake").iterdir())[0]
        first = wait_done(client, upload_all(client, [(p, "a.jpg"), (p, "copy/a.jpg")])["id"])
        second = wait_done(client, upload_all(client, [(p, "again.jpg")])["id"])
    finally:
        worker.stop()
    a, b = all_results(client, first["id"]), all_results(client, second["id"])
    assert a[0]["p_fake"] == a[1]["p_fake"] == b[0]["p_fake"]
    log = worker.text()
    assert "computed=1" in log and "cached=1" in log and "computed=2" not in log


@pytest.mark.parametrize("content, reason", [(None, "not found"), (b"garbage" * 100, "not a readable safetensors")])
def test_worker_refuses_missing_or_corrupt_checkpoint(stack_env, tmp_path, content, reason):
    """A missing one is named with the setting that chooses it; a corrupt one is the file's fault, not the setting's."""
    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    env = {**stack_env, "PIXELPROOF_MODEL_PATH": str(path)}
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot start" in proc.stderr and reason in proc.stderr
    assert ("set PIXELPROOF_MODEL_PATH" in proc.stderr) == (content is None)


def test_hostile_corpus_every_file_ends_with_result_or_clear_error(make_app, stack_env, tmp_path):
    from .corpus import corpus

    cases = corpus()
    worker = start_worker(stack_env, tmp_path / "worker.log")
    try:
        client = make_app(stack_env).test_client()
        data = {"files": [(io.BytesIO(content), name) for name, content, _ in cases]}
        job = client.post("/api/jobs", data=data, content_type="multipart/form-data").get_json()
        job = wait_done(client, job["id"])
        assert worker.popen.poll() is None, "the worker died on hostile input"
    finally:
        worker.stop()
    log = worker.text()
    assert "level=ERROR" not in log and "event=decode_failed" not in log, log[-3000:]
    items = {i["filename"]: i for i in all_results(client, job["id"])}
    assert job["total"] == len(cases) == len(items)
    for name, _, expected in cases:
        item = items[name]
        if expected == "ok":
            assert item["status"] == "done" and item["label"] in ("real", "fake", "uncertain"), item
        else:
            assert item["status"] == "error" and expected.lower() in item["error"].lower(), item
    assert job["errors"] == sum(1 for *_, e in cases if e != "ok")


def test_ten_thousand_tiny_files_in_one_job(make_app, sqlite_url, redis_server, tmp_path):
    from PIL import Image

    from shared.migrate import upgrade

    upgrade(sqlite_url)
    env = service_env(sqlite_url, redis_server.url, tmp_path / "data", PIXELPROOF_BATCH_SIZE="256")
    files = []
    for i in range(10_000):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, 7)).save(buf, "PNG")  # the smallest scored
        files.append((buf.getvalue(), f"tiny/{i:05d}.png"))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        client = make_app(env).test_client()
        job = None
        for start in range(0, len(files), 2000):
            data = {"files": [(io.BytesIO(b), n) for b, n in files[start:start + 2000]]}
            url = f"/api/jobs/{job['id']}/files" if job else "/api/jobs"
            resp = client.post(url, data=data, content_type="multipart/form-data")
            assert resp.status_code == 202, resp.get_json()
            job = resp.get_json()
        job = wait_done(client, job["id"], timeout=600)
    finally:
        worker.stop()
    assert job["total"] == job["done"] == 10_000 and job["errors"] == 0


def test_a_job_is_classified_again_by_the_model_served_now(make_app, stack_env, mini_dir, tmp_path):
    """After a model upgrade, a job's stored files go through the new model as a new job (nothing is sent again):
    the earlier job keeps its results, and deleting it keeps the files the new job holds."""
    broken = tmp_path / "notes.jpg"
    broken.write_bytes(b"not an image")
    files = [(p, f"shoot/{p.parent.name}-{p.name}") for d in ("fake", "real")
             for p in sorted((mini_dir / d).iterdir())[:3]] + [(broken, "shoot/notes.jpg")]
    client = make_app(stack_env).test_client()
    worker = start_worker({**stack_env, "PIXELPROOF_MODEL_PATH": str(CIFAKE_CHECKPOINT)}, tmp_path / "old.log", name="old")
    try:
        first = wait_done(client, upload_all(client, files)["id"])
    finally:
        worker.stop()
    before = all_results(client, first["id"])
    worker = start_worker(stack_env, tmp_path / "new.log", name="new")
    try:
        resp = client.post(f"/api/jobs/{first['id']}/rerun", headers={"Idempotency-Key": "again-1"})
        again = resp.get_json()
        assert resp.status_code == 202 and resp.headers["Location"] == f"/api/jobs/{again['id']}", again
        assert again["rerun_of"] == first["id"] and again["id"] != first["id"] and again["total"] == 7
        replay = client.post(f"/api/jobs/{first['id']}/rerun", headers={"Idempotency-Key": "again-1"})
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json()["id"] == again["id"]
        again = wait_done(client, again["id"])
    finally:
        worker.stop()
    after = all_results(client, again["id"])
    old, new = read_meta(CIFAKE_CHECKPOINT).version, read_meta(DEFAULT_CHECKPOINT).version
    assert [(r["filename"], r["sha256"]) for r in after] == [(r["filename"], r["sha256"]) for r in before]
    assert {r["model_version"] for r in before if r["status"] == "done"} == {old} and first["model"]["version"] == old
    assert {r["model_version"] for r in after if r["status"] == "done"} == {new} and again["model"]["version"] == new
    assert again["errors"] == 1 and sum(again["counts"].values()) == 6  # the broken file fails again, alone
    assert all_results(client, first["id"]) == before  # the earlier job keeps its verdicts
    # each result of the rerun carries the same file's earlier result; ?changed=1 keeps the changed labels
    by_name = {r["filename"]: r for r in before}
    for r in after:
        was = by_name[r["filename"]]
        assert r["earlier"] == {k: was[k] for k in ("status", "label", "p_fake", "model_version")}, r
    assert all(r["earlier"] is None for r in before)
    changed = [r["filename"] for r in after if r["status"] == "done" and r["earlier"]["status"] == "done"
               and r["earlier"]["label"] != r["label"]]
    listed = client.get(f"/api/jobs/{again['id']}/results?changed=1").get_json()["items"]
    assert [r["filename"] for r in listed] == changed and changed, after  # the two models disagree somewhere
    csv_rows = list(csv.DictReader(io.StringIO(client.get(
        f"/api/jobs/{again['id']}/results?changed=true&format=csv&download=1").get_data(as_text=True))))
    assert [r["filename"] for r in csv_rows] == changed and json.loads(csv_rows[0]["earlier"])["model_version"] == old
    refused = client.get(f"/api/jobs/{first['id']}/results?changed=1")
    assert refused.status_code == 400 and "is no rerun" in refused.get_json()["error"]
    assert client.get(f"/api/jobs/{first['id']}").get_json()["rerun_of"] is None
    gone = client.delete(f"/api/jobs/{first['id']}").get_json()
    assert gone["files_kept"] == 7 and gone["files_removed"] == 0, gone
    assert client.get(f"/api/jobs/{again['id']}/images/{after[0]['id']}/thumbnail").status_code == 200
    assert client.get(f"/api/jobs/{again['id']}").get_json()["rerun_of"] == first["id"]  # still named, though gone
    assert all(r["earlier"] is None for r in all_results(client, again["id"]))  # nothing left to compare with
    assert client.get(f"/api/jobs/{again['id']}/results?changed=1").get_json()["items"] == []
    assert client.post(f"/api/jobs/{first['id']}/rerun").status_code == 404
