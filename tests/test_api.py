"""The REST contract, on the real app with a real database and a real Redis (no worker: nothing consumes)."""
from __future__ import annotations

import csv
import io

import pytest
from redis import Redis

from shared.queue import QUEUE
from web.openapi import OPENAPI

from .helpers import jpeg_bytes, post_files


@pytest.fixture
def client(make_app, stack_env):
    return make_app(stack_env).test_client()


def test_create_job_commits_enqueues_and_reports(client, mini_dir, redis_server, db_url):
    files = jpeg_bytes(mini_dir, 3)
    resp = post_files(client, "/api/jobs", [(files[0][0], "holiday/beach/a.jpg")] + files[1:])
    assert resp.status_code == 202
    job = resp.get_json()
    assert resp.headers["Location"].endswith(f"/api/jobs/{job['id']}")
    assert len(job["id"]) >= 20  # 128 random bits, url-safe
    assert job["status"] == "queued" and job["total"] == 3 and job["done"] == 0 and job["errors"] == 0
    assert job["counts"] == {"real": 0, "fake": 0, "uncertain": 0}
    # ids only through the broker: one task message holding the three image ids
    messages = Redis.from_url(redis_server.url).lrange(QUEUE, 0, -1)
    assert len(messages) == 1 and b'"pixelproof.classify"' in messages[0]

    page = client.get(f"/api/jobs/{job['id']}/results").get_json()
    assert [i["filename"] for i in page["items"]] == ["holiday/beach/a.jpg", files[1][1], files[2][1]]
    assert all(i["status"] == "queued" and len(i["sha256"]) == 64 for i in page["items"])
    assert page["next_cursor"] is None


def test_an_upload_is_split_into_even_tasks(make_app, stack_env, mini_dir, redis_server):
    """Seven images at batch 4 go out as 4 + 3 ids, and nine as 3 + 3 + 3, not 4 + 4 + 1: two workers that
    take a request's tasks finish together."""
    import base64
    import json

    client = make_app({**stack_env, "PIXELPROOF_BATCH_SIZE": "4"}).test_client()
    redis = Redis.from_url(redis_server.url)
    files = jpeg_bytes(mini_dir, 16)
    for n, sizes in ((7, [4, 3]), (9, [3, 3, 3])):
        redis.delete(QUEUE)
        assert post_files(client, "/api/jobs", files[:n]).status_code == 202
        bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in redis.lrange(QUEUE, 0, -1)]
        ids = [body[0][0] for body in reversed(bodies)]  # LPUSH: the first task sent is last in the list
        assert [len(chunk) for chunk in ids] == sizes
        assert sum(ids, []) == sorted(sum(ids, []))  # every id once, in upload order


def test_add_files_to_job_and_paginate(client, mini_dir):
    files = jpeg_bytes(mini_dir, 5)
    job = post_files(client, "/api/jobs", files[:2]).get_json()
    resp = post_files(client, f"/api/jobs/{job['id']}/files", files[2:])
    assert resp.status_code == 202 and resp.get_json()["total"] == 5
    seen, cursor = [], "0"
    while cursor is not None:
        page = client.get(f"/api/jobs/{job['id']}/results?limit=2&cursor={cursor}").get_json()
        assert len(page["items"]) <= 2
        seen += [i["filename"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [name for _, name in files]


def test_results_download_csv_and_json(client, mini_dir):
    job = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 2)).get_json()
    resp = client.get(f"/api/jobs/{job['id']}/results?format=csv&download=1")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(rows) == 2 and set(rows[0]) == {"filename", "sha256", "status", "label", "p_fake", "real_below", "fake_from",
                                               "error", "model_version", "image_width", "image_height", "encoding", "regions",
                                               "evidence", "review", "review_note", "earlier"}
    body = client.get(f"/api/jobs/{job['id']}/results?format=json&download=1").get_json()
    assert body["job_id"] == job["id"] and len(body["items"]) == 2
    assert body["next_cursor"] is None  # a page's shape, and the last page: a page reader reads it as one


@pytest.mark.parametrize("url", ["/api/jobs/nope", "/api/jobs/nope/results", "/api/jobs/" + "x" * 40])
def test_unknown_job_is_404_json(client, url):
    resp = client.get(url)
    assert resp.status_code == 404 and "no job" in resp.get_json()["error"]


def test_bad_requests_say_why(client, mini_dir):
    resp = client.post("/api/jobs", data={}, content_type="multipart/form-data")
    assert resp.status_code == 400 and "files" in resp.get_json()["error"]
    job = post_files(client, "/api/jobs", jpeg_bytes(mini_dir)).get_json()
    for query, word in [("limit=0", "limit"), ("limit=abc", "limit"), ("cursor=x", "cursor"), ("format=xml", "format"),
                        ("download=null", "download"), ("download=", "download"), ("download=1&limit=5000", "limit")]:
        resp = client.get(f"/api/jobs/{job['id']}/results?{query}")
        assert resp.status_code == 400 and word in resp.get_json()["error"], query
    assert "done" in client.get(f"/api/jobs/{job['id']}?done=null").get_json()["error"]  # not read as "no count"
    # download=0 is a page, not an attachment; an empty cursor (a null next_cursor sent back) is the first page
    page = client.get(f"/api/jobs/{job['id']}/results?download=0&cursor=")
    assert page.status_code == 200 and "attachment" not in page.headers.get("Content-Disposition", "")
    assert [i["id"] for i in page.get_json()["items"]] == [i["id"] for i in client.get(
        f"/api/jobs/{job['id']}/results").get_json()["items"]]
    assert client.get("/api/nothing-here").get_json()["status"] == 404
    wrong = client.delete("/api/jobs")
    assert wrong.status_code == 405 and wrong.get_json()["status"] == 405
    allowed = set(wrong.headers["Allow"].replace(" ", "").split(","))  # what would have worked
    assert "POST" in allowed and "DELETE" not in allowed


def test_a_used_key_with_an_emptier_body_is_refused_whatever_the_boundary(client, mini_dir):
    """Found by the contract test: a key first sent with two files (the test client's long boundary), then
    with a body of no file under a 32-character boundary, had been answered with the first job."""
    first = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 2), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    boundary = "c9710b39df1170d5aa7ccb1aa98827f3"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name=""\r\n\r\nnull\r\n--{boundary}--\r\n'.encode()
    again = client.post("/api/jobs", data=body, headers={
        "Idempotency-Key": "k-1", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert again.status_code == 422 and "another upload" in again.get_json()["error"]
    # Found by it too: the same key with no body at all (no length to compare) had been answered with the job.
    for url in ("/api/jobs", f"/api/jobs/{first.get_json()['id']}/files"):
        bare = client.post(url, headers={"Idempotency-Key": "k-1"})
        assert bare.status_code == 400 and "no files" in bare.get_json()["error"], (url, bare.get_json())


def test_limits_answer_413_and_keep_nothing(make_app, stack_env, mini_dir):
    app = make_app({**stack_env, "PIXELPROOF_MAX_FILE_BYTES": "500", "PIXELPROOF_MAX_FILES_PER_REQUEST": "3"})
    client = app.test_client()
    small = (b"x" * 10, "small.jpg")
    resp = post_files(client, "/api/jobs", [small, (b"y" * 501, "big.jpg")])
    assert resp.status_code == 413 and "big.jpg" in resp.get_json()["error"] and "500" in resp.get_json()["error"]
    resp = post_files(client, "/api/jobs", [small] * 4)
    assert resp.status_code == 413 and "3" in resp.get_json()["error"]


def test_openapi_lists_every_api_route(client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec == OPENAPI
    routes = {r.rule.replace("<job_id>", "{job_id}").replace("<int:image_id>", "{image_id}")
              for r in client.application.url_map.iter_rules() if r.rule.startswith(("/api", "/healthz", "/metrics"))}
    assert routes == set(spec["paths"])


def test_healthz_checks_database_and_broker(client, make_app, stack_env):
    assert client.get("/healthz").get_json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "storage": "ok"}}
    dead = make_app({**stack_env, "REDIS_URL": "redis://127.0.0.1:1/0"}).test_client()
    resp = dead.get("/healthz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["broker"].startswith("unreachable")


def test_the_web_reuses_one_redis_connection_for_health_notices_and_metrics(client, redis_server, mini_dir):
    """Redis counts every connection it accepts; health checks, metrics scrapes and cancel notices (a
    publish each) must not open one per request."""
    from redis import Redis

    def accepted() -> int:
        return Redis.from_url(redis_server.url).info("stats")["total_connections_received"]

    jobs = [post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 1)).get_json()["id"] for _ in range(2)]
    # Warm up: the pool's first connection, and Celery's own for the workers' ping (cached by /metrics).
    client.get("/healthz"), client.get("/metrics"), client.post(f"/api/jobs/{jobs[0]}/cancel")
    before = accepted()
    for _ in range(10):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
    assert client.post(f"/api/jobs/{jobs[1]}/cancel").status_code == 200
    assert accepted() - before <= 2  # this check's own second client (a client per request made it 22)


def test_a_process_forked_after_a_metrics_scrape_starts_and_ends(client):
    """/metrics asks the workers for a ping. A broker connection left waiting for its replies is closed again by
    kombu in every process forked later (a training DataLoader's workers), which then read the socket forever."""
    import multiprocessing

    assert client.get("/metrics").status_code == 200
    child = multiprocessing.get_context("fork").Process(target=int)
    child.start()
    child.join(20)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0


def test_broker_down_is_503_with_reason_and_files_kept(make_app, stack_env, mini_dir):
    client = make_app({**stack_env, "REDIS_URL": "redis://127.0.0.1:1/0"}).test_client()
    resp = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 2))
    body = resp.get_json()
    assert resp.status_code == 503 and "Redis" in body["error"] and resp.headers["Retry-After"]
    # the upload is stored and recorded: the sweeper will queue it once the broker is back
    assert client.get(f"/api/jobs/{body['job']}").get_json()["total"] == 2


def test_tokens_required_and_jobs_private(make_app, stack_env, mini_dir):
    client = make_app({**stack_env, "PIXELPROOF_API_TOKENS": "alpha,beta"}).test_client()
    files = jpeg_bytes(mini_dir)
    assert post_files(client, "/api/jobs", files).status_code == 401
    assert post_files(client, "/api/jobs", files, {"Authorization": "Bearer wrong"}).status_code == 403
    job = post_files(client, "/api/jobs", files, {"Authorization": "Bearer alpha"}).get_json()
    assert client.get(f"/api/jobs/{job['id']}", headers={"Authorization": "Bearer alpha"}).status_code == 200
    assert client.get(f"/api/jobs/{job['id']}", headers={"Authorization": "Bearer beta"}).status_code == 404
    assert client.get(f"/api/jobs/{job['id']}").status_code == 401


def test_rate_limit_is_429_with_retry_after(make_app, stack_env, mini_dir):
    client = make_app({**stack_env, "PIXELPROOF_RATE_LIMIT_PER_MINUTE": "2"}).test_client()
    codes = [post_files(client, "/api/jobs", jpeg_bytes(mini_dir)).status_code for _ in range(3)]
    assert codes[:2] == [202, 202] and codes[2] == 429


def test_upload_names_never_reach_the_filesystem(client, stack_env):
    names = ["../../etc/passwd", "/abs/path.png", "nul\x00byte.jpg", "ü" * 300 + ".jpg", "a\\..\\b.jpg"]
    job = post_files(client, "/api/jobs", [(b"not an image %d" % i, n) for i, n in enumerate(names)]).get_json()
    items = client.get(f"/api/jobs/{job['id']}/results").get_json()["items"]
    shown = [i["filename"] for i in items]
    assert shown[0] == "etc/passwd" and shown[1] == "abs/path.png" and "\x00" not in shown[2]
    assert all(".." not in s.split("/") for s in shown)
    from pathlib import Path
    stored = [p.name for p in (Path(stack_env["PIXELPROOF_DATA_DIR"]) / "uploads").rglob("*") if p.is_file()]
    assert stored and all(len(n) == 64 for n in stored)


def test_web_config_error_fails_at_start(make_app, stack_env):
    from shared.settings import SettingsError

    with pytest.raises(SettingsError, match="PIXELPROOF_BATCH_SIZE|BATCH_SIZE"):
        make_app({**stack_env, "PIXELPROOF_BATCH_SIZE": "zero"})
    with pytest.raises(SettingsError, match="PRECISION"):
        make_app({**stack_env, "PIXELPROOF_PRECISION": "half"})


def test_database_down_is_503_not_a_stack_trace(make_app, stack_env, mini_dir):
    from pixelproof.embedded_redis import free_port

    env = {**stack_env, "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none"}
    client = make_app(env).test_client()
    for resp in (post_files(client, "/api/jobs", jpeg_bytes(mini_dir)), client.get("/api/jobs/abc")):
        assert resp.status_code == 503 and "database" in resp.get_json()["error"] and resp.headers["Retry-After"]
    assert client.get("/healthz").get_json()["checks"]["database"].startswith("unreachable")


def test_a_later_page_of_a_tokens_jobs_starts_where_the_cursor_is_not_at_the_newest_job(db_url):
    """GET /api/jobs pages by a cursor so that page 100 costs what page 1 does: the cursor must be where an index
    read begins, never a filter applied to every newer job. Checked in each database's own query plan, on 20,000
    jobs of 40 tokens."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import create_engine, insert

    from shared.jobs import _iso, _pack, owner_jobs_query
    from shared.migrate import upgrade
    from shared.models import Job

    upgrade(db_url)
    engine = create_engine(db_url)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(insert(Job), [{"id": f"j{n:05d}", "owner": f"{n % 40:064d}", "created_at": start + timedelta(seconds=n),
                                    "updated_at": start, "webhook_round": 0} for n in range(20_000)])
        conn.exec_driver_sql("ANALYZE")

    def plan(cursor: str) -> str:
        compiled = owner_jobs_query(f"{1:064d}", cursor, 51).compile(dialect=engine.dialect)
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                            tuple(compiled.params[k] for k in compiled.positiontup))
                return "\n".join(row[-1] for row in rows)
            return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params))

    deep = _pack(_iso(start + timedelta(seconds=10_001)), "j10001")  # token 1's 250th of 500 jobs, the middle
    first, later = plan(""), plan(deep)
    if engine.dialect.name == "sqlite":
        assert "USING INDEX ix_jobs_owner_created (owner=?)" in first and "TEMP B-TREE" not in first, first
        assert "USING INDEX ix_jobs_owner_created (owner=? AND (created_at,id)<(?,?))" in later, later
        assert "TEMP B-TREE" not in later, later
    else:  # PostgreSQL picks between the owner's index and the creation time's by cost; either must seek
        for text in (first, later):
            assert "Index Scan Backward" in text and "Seq Scan" not in text and "Bitmap" not in text, text
        bound = [line for line in later.splitlines() if "Index Cond" in line]
        assert bound and "created_at" in bound[0], later
    engine.dispose()


def test_a_rerun_is_a_new_job_of_the_same_files_for_its_token_only(make_app, stack_env, mini_dir):
    """POST .../rerun makes a queued job of the earlier job's stored files, in their order, with the earlier one
    untouched; it belongs to the same token, and another token's job is not there to rerun."""
    import base64
    import json

    client = make_app({**stack_env, "PIXELPROOF_API_TOKENS": "alpha,beta"}).test_client()
    alpha, beta = {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer beta"}
    files = jpeg_bytes(mini_dir, 3)
    first = post_files(client, "/api/jobs", files + files[:1], alpha).get_json()  # one file twice, same name
    assert client.post(f"/api/jobs/{first['id']}/cancel", headers=alpha).status_code == 200
    assert client.post(f"/api/jobs/{first['id']}/rerun").status_code == 401
    assert client.post(f"/api/jobs/{first['id']}/rerun", headers=beta).status_code == 404
    refused = client.post(f"/api/jobs/{first['id']}/rerun?callback_url=http://10.0.0.1/x", headers=alpha)
    assert refused.status_code == 400 and "webhooks are off" in refused.get_json()["error"], refused.get_json()
    queue = Redis.from_url(stack_env["REDIS_URL"])
    queue.delete(QUEUE)
    resp = client.post(f"/api/jobs/{first['id']}/rerun", headers=alpha)
    again = resp.get_json()
    assert resp.status_code == 202 and again["status"] == "queued" and again["queued"] == 4, again
    assert again["rerun_of"] == first["id"] and again["cancelled_at"] is None  # a cancelled job's files, again
    items = client.get(f"/api/jobs/{again['id']}/results", headers=alpha).get_json()["items"]
    assert [r["filename"] for r in items] == [n for _, n in files + files[:1]]  # each once, the twice-sent twice
    assert [r["earlier"]["status"] for r in items] == ["cancelled"] * 4
    sent = [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in queue.lrange(QUEUE, 0, -1)]
    assert sorted(sum(sent, [])) == [r["id"] for r in items]  # its images' ids went to the queue, nothing else
    assert client.get(f"/api/jobs/{first['id']}", headers=alpha).get_json()["status"] == "cancelled"
    listed = client.get("/api/jobs", headers=alpha).get_json()["items"]
    assert [(j["id"], j["rerun_of"]) for j in listed] == [(again["id"], first["id"]), (first["id"], None)]
    assert client.get("/api/jobs", headers=beta).get_json()["items"] == []
    assert client.post("/api/jobs/nosuchjob/rerun", headers=alpha).status_code == 404


def test_a_job_has_the_title_its_owner_gives_it_listed_kept_by_a_rerun_and_changed_later(make_app, stack_env,
                                                                                          mini_dir):
    """?title= names a job when it is made (white space tidied, nothing else changed); PATCH renames it or removes
    the name; a rerun keeps the earlier job's unless told otherwise; the token's list shows it. Another token's
    job cannot be renamed, and a title too long or a body of another shape is refused with nothing changed."""
    from urllib.parse import quote

    client = make_app({**stack_env, "PIXELPROOF_API_TOKENS": "alpha,beta"}).test_client()
    alpha, beta = {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer beta"}
    files = jpeg_bytes(mini_dir, 2)
    sent = " Election night,\n\tdesk 2 \u00a0\x07 Ame\u0301lie "  # a pasted line break, a bell, a decomposed accent
    job = post_files(client, f"/api/jobs?title={quote(sent)}", files, alpha).get_json()
    assert job["title"] == "Election night, desk 2 Am\u00e9lie", job["title"]
    assert client.get(f"/api/jobs/{job['id']}", headers=alpha).get_json()["title"] == job["title"]
    untitled = post_files(client, "/api/jobs?title=%20%0A", files, alpha).get_json()
    assert untitled["title"] is None
    long = post_files(client, f"/api/jobs?title={'x' * 201}", files, alpha)
    assert long.status_code == 400 and "at most 200 characters" in long.get_json()["error"], long.get_json()
    keyed = {**alpha, "Idempotency-Key": "t-1"}  # refused before a stored answer is looked up (the contract test)
    assert post_files(client, "/api/jobs?title=first", files, keyed).status_code == 202
    assert post_files(client, f"/api/jobs?title={'x' * 201}", files, keyed).status_code == 400
    assert client.post(f"/api/jobs/{job['id']}/rerun?title={'x' * 201}", headers=keyed).status_code == 400
    assert post_files(client, f"/api/jobs?title={'x' * 200}", files, alpha).get_json()["title"] == "x" * 200

    url = f"/api/jobs/{job['id']}"
    assert client.patch(url, json={"title": "Desk 3"}).status_code == 401
    assert client.patch(url, json={"title": "Desk 3"}, headers=beta).status_code == 404
    for bad in ({"title": 3}, {"name": "Desk 3"}, {"title": "Desk 3", "other": 1}, ["Desk 3"], {"title": "y" * 201}):
        resp = client.patch(url, json=bad, headers=alpha)
        assert resp.status_code == 400, (bad, resp.get_json())
    assert client.patch(url, data="Desk 3", headers=alpha).status_code == 400
    assert client.get(url, headers=alpha).get_json()["title"] == job["title"]  # nothing refused changed it
    renamed = client.patch(url, json={"title": "Desk 3"}, headers=alpha)
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "Desk 3"
    assert renamed.get_json()["total"] == 2 and renamed.get_json()["status"] == "queued"

    kept = client.post(f"{url}/rerun", headers=alpha).get_json()
    other = client.post(f"{url}/rerun?title=Desk%203%2C%20new%20model", headers=alpha).get_json()
    cleared = client.post(f"{url}/rerun?title=", headers=alpha).get_json()
    assert (kept["title"], other["title"], cleared["title"]) == ("Desk 3", "Desk 3, new model", None)
    listed = {j["id"]: j["title"] for j in client.get("/api/jobs", headers=alpha).get_json()["items"]}
    assert listed[job["id"]] == "Desk 3" and listed[other["id"]] == "Desk 3, new model" and listed[untitled["id"]] is None

    def titled(text: str, limit: int = 50) -> list[str]:  # the token's jobs whose title holds text, page by page
        got, cursor = [], ""
        while cursor is not None:
            page = client.get("/api/jobs", query_string={"title": text, "limit": limit, "cursor": cursor}, headers=alpha)
            assert page.status_code == 200, page.get_json()
            got += [j["id"] for j in page.get_json()["items"]]
            cursor = page.get_json()["next_cursor"]
        return got

    assert titled("dESK  3") == titled("desk 3", limit=1) == [other["id"], kept["id"], job["id"]]  # newest first
    assert titled("new model") == [other["id"]] and titled("y" * 200) == [] == titled("%")
    assert len(titled("")) == len(listed) and client.get("/api/jobs?title=x", headers=beta).get_json()["items"] == []
    assert client.get(f"/api/jobs?title={'x' * 201}", headers=alpha).status_code == 400
    for removal in (None, "", "  "):
        assert client.patch(url, json={"title": "again"}, headers=alpha).get_json()["title"] == "again"
        assert client.patch(url, json={"title": removal}, headers=alpha).get_json()["title"] is None
    assert client.patch("/api/jobs/nosuchjob", json={"title": "x"}, headers=alpha).status_code == 404


def test_a_rerun_that_meets_a_delete_of_its_job_waits_for_it_and_finds_it_gone(make_app, stack_env, mini_dir):
    """A delete removes a job's uploads once no job holds them; a rerun reading the job's files while the delete
    is under way must not make a job of uploads about to be removed. It waits for the delete and answers 404."""
    import threading

    from sqlalchemy import create_engine, delete

    from shared.models import ImageItem, Job

    client = make_app(stack_env).test_client()
    first = post_files(client, "/api/jobs", jpeg_bytes(mini_dir, 2)).get_json()
    engine = create_engine(stack_env["DATABASE_URL"])
    conn = engine.connect()
    deleting = conn.begin()  # the delete's transaction, as shared.deletion runs it: images, then the job
    conn.execute(delete(ImageItem).where(ImageItem.job_id == first["id"]))
    conn.execute(delete(Job).where(Job.id == first["id"]))
    answer = {}
    rerun = threading.Thread(target=lambda: answer.update(resp=client.post(f"/api/jobs/{first['id']}/rerun")))
    rerun.start()
    rerun.join(2)
    still_waiting = rerun.is_alive()
    deleting.commit()
    conn.close()
    engine.dispose()
    rerun.join(60)
    assert still_waiting and answer["resp"].status_code == 404, answer["resp"].get_json()


def test_every_setting_is_in_the_readme():
    """A setting read at start-up that the README does not name is one an operator cannot find."""
    from shared.settings import REPO_ROOT, Settings, _env_name

    readme = (REPO_ROOT / "README.md").read_text()
    missing = [_env_name(name) for name in Settings.model_fields if f"`{_env_name(name)}`" not in readme]
    assert not missing, missing


def test_a_token_lists_its_own_jobs_newest_first_page_by_page(make_app, stack_env, mini_dir):
    """With tokens on, GET /api/jobs lists the caller's jobs (never another token's); with tokens off it is
    refused, since a job's id is then what grants access to it."""
    from sqlalchemy import select, update

    from shared.db import Database
    from shared.models import ImageItem

    assert make_app(stack_env).test_client().get("/api/jobs").status_code == 403
    client = make_app({**stack_env, "PIXELPROOF_API_TOKENS": "alpha,beta"}).test_client()
    alpha, beta = {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer beta"}
    made = [post_files(client, "/api/jobs", jpeg_bytes(mini_dir, n), alpha).get_json()["id"] for n in (1, 2, 3, 4)]
    theirs = post_files(client, "/api/jobs", jpeg_bytes(mini_dir), beta).get_json()["id"]
    assert client.post(f"/api/jobs/{made[0]}/cancel", headers=alpha).status_code == 200
    db = Database(stack_env["DATABASE_URL"])
    with db.session() as s:  # the second job classified, as a worker leaves it: one real, one uncertain
        ids = sorted(s.scalars(select(ImageItem.id).where(ImageItem.job_id == made[1])))
        for image_id, label in zip(ids, ("real", "uncertain")):
            s.execute(update(ImageItem).where(ImageItem.id == image_id).values(status="done", label=label, p_fake=0.3))
        s.commit()
    db.engine.dispose()

    assert client.get("/api/jobs").status_code == 401
    pages, cursor = [], ""
    while cursor is not None:
        resp = client.get(f"/api/jobs?limit=3&cursor={cursor}", headers=alpha)
        assert resp.status_code == 200, resp.get_json()
        pages.append(resp.get_json()["items"])
        cursor = resp.get_json()["next_cursor"]
    assert [len(p) for p in pages] == [3, 1]
    listed = {j["id"]: j for p in pages for j in p}
    assert [j["id"] for p in pages for j in p] == made[::-1]  # newest first, every one once, none of beta's
    assert listed[made[1]]["status"] == "done" and listed[made[1]]["counts"] == {"real": 1, "fake": 0, "uncertain": 1}
    assert listed[made[0]]["status"] == "cancelled" and listed[made[0]]["cancelled"] == 1
    assert listed[made[3]]["status"] == "queued" and listed[made[3]]["total"] == 4
    for job_id in made:  # each summary says what the job's own JSON says
        full = client.get(f"/api/jobs/{job_id}", headers=alpha).get_json()
        assert {k: full[k] for k in listed[job_id]} == listed[job_id]
    assert [j["id"] for j in client.get("/api/jobs", headers=beta).get_json()["items"]] == [theirs]
    for bad in ("nonsense", "W10", "WyJ4IiwgInkiXQ", "x" * 201):
        resp = client.get(f"/api/jobs?cursor={bad}", headers=alpha)
        assert resp.status_code == 400 and "next_cursor" in resp.get_json()["error"], (bad, resp.get_json())
