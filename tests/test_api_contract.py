"""The API answers as its OpenAPI description says, for any request the description allows or forbids.

Schemathesis draws requests from /api/openapi.json and sends them to the real app (real database and Redis,
in process): no answer may be a 5xx, every status code, content type, header and body must be one the
description lists, and a request that breaks the description must be refused (a query parameter the API
does not know is ignored, not refused). Requests the description allows but the server may still refuse
for reasons no schema states (a webhook on a server without an allowlist, an opaque cursor, an
Idempotency-Key reused for another request) are the one check left out.

The requests land on two jobs: one still queued, and one the worker's service function has classified (real
model, no Celery), whose results carry what only a finished job has: scores, labels, regions, encodings,
evidence, per-file errors, a review and thumbnails.
"""
from __future__ import annotations

import itertools
import json
import re
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from sqlalchemy import select

from shared.db import Database
from shared.jobs import set_review
from shared.models import ImageItem
from shared.settings import DEFAULT_CHECKPOINT, load_settings
from shared.storage import LocalStorage
from web.openapi import OPENAPI
from worker.inference import Classifier
from worker.service import classify_images, register_model

from .corpus import corpus
from .helpers import jpeg_bytes, post_files
from .provenance import camera_jpeg, signed_jpeg

schema = schemathesis.openapi.from_dict(OPENAPI)  # what /api/openapi.json serves
# A parameter the API does not know is ignored, as HTTP APIs do, so adding one is not a request to refuse.
schema.config.generation.update(allow_extra_parameters=False)


@pytest.fixture(scope="module")
def classifier():
    return Classifier(DEFAULT_CHECKPOINT, "cpu", batch_size=4, decode_threads=1)


def _finish(job_id: str, classifier: Classifier, review: bool = True) -> list[int]:
    """Classify a job as a worker would, through the service function, and review one of its images."""
    settings = load_settings()  # the app's own environment (make_app set it)
    db = Database(settings.db_url)
    try:
        meta = classifier.meta
        register_model(db, meta.name, classifier.version, classifier.thresholds,
                       {**meta.notes, "max_false_fake": meta.false_fake_share})
        with db.session() as s:
            ids = list(s.scalars(select(ImageItem.id).where(ImageItem.job_id == job_id).order_by(ImageItem.id)))
        classify_images(db, LocalStorage(settings.upload_dir), classifier, ids)
        if not review:
            return ids
        with db.session() as s:
            set_review(s, ids[0], "real", "checked with the photographer")
            s.commit()
        return ids
    finally:
        db.engine.dispose()


@pytest.fixture
def served(make_app, stack_env, mini_dir, classifier):
    """The app, a queued job and a finished one, so that a job's paths are reached beyond a 404."""
    app = make_app(stack_env)
    client = app.test_client()
    assert client.get("/api/openapi.json").get_json() == json.loads(json.dumps(OPENAPI))
    queued = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 3)).get_json()["id"]
    bad = [(data, name) for name, data, expected in corpus()[:4] if expected != "ok"]  # per-file errors
    files = jpeg_bytes(mini_dir, 2) + [(signed_jpeg(), "signed.jpg"), (camera_jpeg(), "camera.jpg")] + bad
    finished = post_files(client, "/api/jobs", files).get_json()["id"]
    _finish(finished, classifier)
    job = client.get(f"/api/jobs/{finished}").get_json()
    assert job["status"] == "done" and job["errors"] == len(bad), job
    images = {}
    for job_id in (queued, finished):
        images[job_id] = [item["id"] for item in client.get(f"/api/jobs/{job_id}/results").get_json()["items"]]
    return app, [queued, finished], images


def _hold_long_polls_briefly(case) -> None:
    """A valid long poll is held 0.2 s at most (holding it is the long-poll tests' job); an invalid wait stays."""
    try:
        wait = float((case.query or {}).get("wait"))
    except (TypeError, ValueError):
        return
    if 0.2 < wait <= 1e9:
        case.query["wait"] = "0.2"


@schema.parametrize()
# The same requests on every run (derandomize), so that CI is never red by chance; a new seed explores more:
# pytest tests/test_api_contract.py --hypothesis-seed=N with derandomize switched off. No example database.
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_the_api_answers_as_described(case, served):
    app, jobs, images = served
    params = case.path_parameters or {}
    if "job_id" in params and case.method != "DELETE" and zlib.crc32(str(case.query).encode()) % 4:
        job_id = jobs[zlib.crc32(str(case.headers).encode()) % 2]  # most of them on a real job, some on none
        params["job_id"] = job_id
        if "image_id" in params:
            params["image_id"] = images[job_id][zlib.crc32(str(case.body).encode()) % len(images[job_id])]
    _hold_long_polls_briefly(case)
    case.call_and_validate(app=app, excluded_checks=[positive_data_acceptance])


def test_workflows_along_the_links_keep_their_promises(served, classifier):
    """Sequences of requests along the description's links (a job made, then its files, results, reviews,
    thumbnails, cancel, delete): each answer as described, and, where a sequence meets them, the stateful
    checks (what was just made is found; what was deleted stays gone). Every upload is classified at once by
    the worker's service function, so that the steps after it meet a finished job."""
    app, _, _ = served
    scenarios = itertools.count()

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"app": app}

        def setup(self):
            self.scenario = next(scenarios)

        def before_call(self, case):
            _hold_long_polls_briefly(case)
            # Each scenario has Idempotency-Keys of its own, as clients do: a key drawn again in a later scenario
            # would get that scenario's job, or a 422, and the same steps would not give the same answers.
            key = (case.headers or {}).get("Idempotency-Key")
            if isinstance(key, str) and re.fullmatch(r"[\x20-\x7e]{1,200}", key):
                case.headers["Idempotency-Key"] = f"{key} #{self.scenario}"

        def after_call(self, response, case):
            super().after_call(response, case)
            if response.status_code == 202:
                _finish(response.json()["id"], classifier, review=False)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, additional_checks=additional_checks, transport_kwargs=kwargs or None,
                                   excluded_checks=[positive_data_acceptance], recorder=self.recorder)

    Workflow.run(settings=settings(max_examples=50, stateful_step_count=6, deadline=None, derandomize=True,
                                   database=None, suppress_health_check=list(HealthCheck)))
