"""The API answers as its OpenAPI description says, for any request the description allows or forbids.

Schemathesis draws requests from /api/openapi.json and sends them to the real app (real database and Redis,
in process): no answer may be a 5xx, every status code, content type, header and body must be one the
description lists, and a request that breaks the description must be refused (a query parameter the API
does not know is ignored, not refused). Requests the description allows but the server may still refuse
for reasons no schema states (a webhook on a server without an allowlist, an opaque cursor, an
Idempotency-Key reused for another request) are the one check left out.
"""
from __future__ import annotations

import json
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from web.openapi import OPENAPI

from .helpers import jpeg_bytes, post_files

schema = schemathesis.openapi.from_dict(OPENAPI)  # what /api/openapi.json serves
# A parameter the API does not know is ignored, as HTTP APIs do, so adding one is not a request to refuse.
schema.config.generation.update(allow_extra_parameters=False)


@pytest.fixture
def served(make_app, stack_env, mini_dir):
    """The app, and a job that exists in it, so that a job's paths are reached beyond a 404."""
    app = make_app(stack_env)
    client = app.test_client()
    assert client.get("/api/openapi.json").get_json() == json.loads(json.dumps(OPENAPI))
    job = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 3)).get_json()
    images = [item["id"] for item in client.get(f"/api/jobs/{job['id']}/results").get_json()["items"]]
    return app, job["id"], images


@schema.parametrize()
# The same requests on every run (derandomize), so that CI is never red by chance; a new seed explores more:
# pytest tests/test_api_contract.py --hypothesis-seed=N with derandomize switched off. No example database.
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_the_api_answers_as_described(case, served):
    app, job_id, images = served
    if "job_id" in (case.path_parameters or {}) and case.method != "DELETE" and zlib.crc32(str(case.query).encode()) % 4:
        case.path_parameters["job_id"] = job_id  # most of them on the real job and its images, some on none
        if "image_id" in case.path_parameters:
            case.path_parameters["image_id"] = images[zlib.crc32(str(case.body).encode()) % len(images)]
    try:
        wait = float((case.query or {}).get("wait"))
    except (TypeError, ValueError):
        wait = None
    if wait is not None and 0.2 < wait <= 1e9:
        case.query["wait"] = "0.2"  # a valid long poll, held briefly: holding it is the long-poll tests' job
    case.call_and_validate(app=app, excluded_checks=[positive_data_acceptance])
