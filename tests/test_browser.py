"""The page in real headless Chromium against the real stack (gunicorn, Redis, a Celery worker)."""
from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import unavailable

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


# Every Content-Security-Policy violation the page causes, recorded in the page itself.
RECORD_CSP = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
              "(e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def watched_page(browser):
    """A page that records uncaught errors, console errors and CSP violations; check them with page_problems."""
    page = browser.new_page()
    page.add_init_script(RECORD_CSP)
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text} {m.location}"))
    return page


def page_problems(page) -> list[str]:
    return page.problems + [f"csp: {v}" for v in page.evaluate("window.__csp")]


def wait_status(page, status: str, timeout: float = 30_000) -> None:
    """Wait for the job's status on the page; on a timeout, say what the page showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(f"#status[data-status={status}]", timeout=timeout)
    except PlaywrightTimeout:
        shown = {sel: page.locator(sel).inner_text() for sel in ("#status", "#job-text", "#error")}
        raise AssertionError(f"the page never showed {status}: {shown}, problems {page_problems(page)}") from None


def folder_of(tmp_path: Path, name: str, files: list[Path]) -> Path:
    """A folder to pick in the page: copies of `files` under tmp_path/name."""
    folder = tmp_path / name
    folder.mkdir()
    for p in files:
        shutil.copy(p, folder / p.name)
    return folder


def page_given(browser, base: str, folder: Path):
    """A watched page of the server at base, given `folder` to upload through its folder picker."""
    page = watched_page(browser)
    page.goto(base + "/")
    page.set_input_files("#folder-input", str(folder))
    return page


def download_text(page, selector: str) -> str:
    with page.expect_download() as info:
        page.click(selector)
    return Path(info.value.path()).read_text()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def test_upload_a_folder_and_see_results(browser, live_stack, mini_dir, tmp_path):
    folder = tmp_path / "holiday"
    (folder / "real").mkdir(parents=True)
    (folder / "fake").mkdir()
    picks = sorted((mini_dir / "real").iterdir())[:6] + sorted((mini_dir / "fake").iterdir())[:6]
    for p in picks:
        shutil.copy(p, folder / p.parent.name / p.name)
    (folder / "fake" / "readme.jpg").write_text("this is text, not a picture")
    # a folder copied from a Mac: hidden files are left out, as `pixelproof submit` leaves them out
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "real" / f"._{picks[0].name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)
    photo = sorted((mini_dir.parent / "mixed100" / "real").iterdir())[0]  # 512x512: a grid of several crops
    shutil.copy(photo, folder / "real" / "photo.jpg")

    page = page_given(browser, live_stack, folder)
    page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)  # shown once the job is done
    rows = page.locator("#results tbody tr")
    assert rows.count() == 14
    names = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
    assert all(n.startswith("holiday/") for n in names), names
    assert "holiday/fake/readme.jpg" in names
    status = page.locator("#status")
    assert status.get_attribute("data-status") == "done"
    assert "14 / 14" in page.locator("#job-text").inner_text() and "(1 error)" in page.locator("#job-text").inner_text()
    bad = page.locator("#results tbody tr.error")
    assert bad.count() == 1 and "not a recognised image" in bad.inner_text()
    labels = page.locator("#results tbody tr:not(.error) td.label").all_inner_texts()
    assert len(labels) == 13 and set(labels) <= {"real", "AI-generated", "uncertain"}
    # the three labels and the model's thresholds are explained on the page
    legend = page.locator("#legend")
    assert legend.is_visible() and "uncertain" in page.locator("header").inner_text()
    assert "AI-generated when P" in legend.inner_text() and "about 1 in 100 real photos" in legend.inner_text()
    # thumbnails are our own JPEGs and they load as their rows come into view
    page.locator("#results tbody tr").last.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#results tr:not(.error) img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    csv_text = download_text(page, "#dl-csv")
    assert csv_text.startswith("filename,") and len(csv_text.strip().splitlines()) == 15
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    # the job's mix of encodings, and a warning because it holds more than one
    encodings = page.locator("#encodings").inner_text()
    assert encodings.startswith("Files: JPEG quality 70-79 ×12 · JPEG quality 90-94 ×1. This job mixes encodings")
    # each done row names its file's encoding, so a folder's mix of formats shows at a glance
    photo_row = page.locator("#results tbody tr", has_text="holiday/real/photo.jpg")
    assert photo_row.locator("td.encoding").inner_text() == "JPEG quality 90, 4:2:0"
    # the per-image view: the picture with one coloured box per crop the model scored, and their scores
    page.locator("#results tbody tr", has_text="holiday/real/photo.jpg").click()
    dialog = page.locator("#detail")
    dialog.wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('detail-img').complete && "
                           "document.getElementById('detail-img').naturalWidth > 0")
    boxes = page.locator("#detail-map div")
    assert boxes.count() == 9 and page.locator("#detail-regions tbody tr").count() == 9
    assert "P(AI-generated)" in page.locator("#detail-verdict").inner_text()
    # how the file was encoded, beside the verdict: the model's score moves with compression
    assert "File: JPEG quality 90, 4:2:0." in page.locator("#detail-encoding").inner_text()
    figure = page.locator("#detail-figure").bounding_box()
    last = boxes.nth(8).bounding_box()  # the bottom-right crop ends at the image's bottom-right corner
    assert abs(last["x"] + last["width"] - (figure["x"] + figure["width"])) < 2
    assert abs(last["y"] + last["height"] - (figure["y"] + figure["height"])) < 2
    page.screenshot(path=str(tmp_path / "detail.png"))
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    # from the keyboard too: a classified row takes focus, Enter opens its view, and closing it gives the
    # focus back to the row; an error row has no view to open and takes no focus
    photo_row.focus()
    assert page.evaluate("() => document.activeElement.dataset.status") == "done"
    page.keyboard.press("Enter")
    dialog.wait_for(state="visible")
    assert page.locator("#detail-name").inner_text() == "holiday/real/photo.jpg"
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate("() => document.activeElement.dataset.status") == "done"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # Tab moves between rows, and back
    assert page.evaluate("() => document.activeElement.tagName") == "TR"
    assert page.locator("#results tbody tr.error").get_attribute("tabindex") is None
    assert not page_problems(page)  # no script error, and nothing the Content-Security-Policy had to block


TOKEN = "s3cret-token-for-the-browser-test"


@pytest.mark.parametrize("live_stack_env", [{"PIXELPROOF_API_TOKENS": TOKEN}])
def test_with_a_token_no_url_ever_carries_it(browser, live_stack, mini_dir, tmp_path):
    """Thumbnails, the per-image view and downloads are fetched with the header; no URL holds the token."""
    folder = folder_of(tmp_path, "pics", sorted((mini_dir / "fake").iterdir())[:3])
    page = watched_page(browser)
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(live_stack + "/")
    page.locator("#drop details summary").click()
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
    page.locator("#results tbody tr").last.scroll_into_view_if_needed()  # thumbnails load as rows come into view
    page.wait_for_function("() => [...document.querySelectorAll('#results tbody img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#results tbody tr").count() == 3
    page.locator("#results tbody tr").first.click()
    page.wait_for_function("() => document.getElementById('detail-img').complete && "
                           "document.getElementById('detail-img').naturalWidth > 0")
    page.keyboard.press("Escape")
    assert len(download_text(page, "#dl-json")) > 100 and download_text(page, "#dl-csv").startswith("filename,")
    assert any("/thumbnail" in u for u in urls)
    assert not [u for u in urls if TOKEN in u], urls
    assert not page_problems(page)

    # Another browser, the same token: its recent jobs are the token's, as the server lists them (GET /api/jobs)
    other = watched_page(browser)
    other_urls = []
    other.on("request", lambda r: other_urls.append(r.url))
    other.goto(live_stack + "/")
    assert other.locator("#recent").is_hidden()  # nothing made or opened here, no token yet
    other.locator("#drop details summary").click()
    other.fill("#token", TOKEN)
    other.dispatch_event("#token", "change")
    other.wait_for_selector("#recent:not([hidden])")
    job_id = urlsplit(page.url).query.split("job=")[1]
    assert other.locator("#recent-count").inner_text() == "1" and other.locator("#recent-forget").is_hidden()
    other.click("#recent summary")
    assert other.locator("#recent-list a").get_attribute("href") == f"?job={job_id}"
    assert "done · 3 files" in other.locator("#recent-list li").inner_text()
    assert "This API token's jobs" in other.locator("#recent-about").inner_text()
    # looked up by title on the server (all of the token's jobs, not only the newest 20)
    other.fill("#recent-search", "PIC")
    other.wait_for_function("() => document.getElementById('recent-count').textContent === '1' && "
                            "document.querySelector('#recent-list .title')")
    assert other.locator("#recent-list .title").inner_text() == "pics"
    other.fill("#recent-search", "nothing of the kind")
    other.wait_for_function("() => document.getElementById('recent-count').textContent === '0'")
    assert other.locator("#recent-list li").inner_text() == "No job's title contains “nothing of the kind”."
    assert any("/api/jobs?limit=20&title=nothing%20of%20the%20kind" in u for u in urls + other_urls)
    assert not page_problems(other)


def ten_files(source: Path, folder: Path) -> Path:
    """A folder of ten of ``source``'s images: at three a request, the first request and three more."""
    return folder_of(folder.parent, folder.name, sorted(source.iterdir())[:10])


def recorded_posts(page) -> list[str]:
    """The path of every POST the page sends, in order, as the page sends them."""
    posts: list[str] = []
    page.on("request", lambda r: posts.append(urlsplit(r.url).path) if r.method == "POST" else None)
    return posts


@pytest.mark.parametrize("live_stack_env", [{"PIXELPROOF_MAX_FILES_PER_REQUEST": "3"}])
def test_the_page_keeps_two_uploads_in_flight_after_the_first(browser, live_stack, mini_dir, tmp_path):
    """Ten files at three a request: the first request makes the job, then two are sent at once (the first
    two added requests are held until both have arrived, which one at a time never would), all into that job."""
    folder = ten_files(mini_dir / "real", tmp_path / "many")
    page = watched_page(browser)
    held, posts = [], recorded_posts(page)

    def hold_two(route):
        held.append(route)
        if len(held) == 2:
            # the two held ones only: while one is let go, the next request may already be added to `held`
            for r in held[:2]:
                r.continue_()
        elif len(held) > 2:
            route.continue_()

    page.route("**/api/jobs/*/files", hold_two)
    page.goto(live_stack + "/")
    page.set_input_files("#folder-input", str(folder))
    try:
        page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
    except Exception as exc:  # say where it stopped: the requests seen and held, and what the page shows
        shown = {sel: page.locator(sel).inner_text() for sel in ("#error", "#upload-text", "#status", "#job-text")}
        logs = {name: (tmp_path / name).read_text(errors="replace")[-3000:] for name in ("web.log", "worker.log")}
        raise AssertionError(f"no downloads after 120 s: held {len(held)}, posts {posts}, page {shown}, {logs}") from exc
    assert len(held) == 3  # requests 2 and 3 held together, then the last
    assert posts[0] == "/api/jobs" and len(posts) == 4
    job_id = urlsplit(page.url).query.split("job=")[1]
    assert all(p == f"/api/jobs/{job_id}/files" for p in posts[1:])
    assert page.locator("#results tbody tr").count() == 10
    assert "10 / 10 files" in page.locator("#upload-text").inner_text()
    assert "10 / 10" in page.locator("#job-text").inner_text()
    assert not page_problems(page)


@pytest.mark.parametrize("live_stack_env", [{"PIXELPROOF_MAX_FILES_PER_REQUEST": "3"}])
def test_leaving_the_page_while_files_are_sent_asks_first(browser, live_stack, mini_dir, tmp_path):
    """Leaving the page mid-upload (a reload, a recent job's link, closing the tab) would leave a job with part
    of the folder: the browser asks first (beforeunload), staying lets the upload finish, and once every file
    is sent nothing is asked."""
    folder = ten_files(mini_dir / "real", tmp_path / "many")
    page = watched_page(browser)
    held, asked = [], []
    page.route("**/api/jobs/*/files", lambda route: held.append(route))  # the first makes the job; the rest wait
    page.on("dialog", lambda d: (asked.append(d.type), d.dismiss()))  # dismissed: stay on the page
    page.goto(live_stack + "/")
    page.click("h1")  # a user's gesture: Chromium asks before unloading only a page that had one
    page.set_input_files("#folder-input", str(folder))
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(100)
    assert held and "?job=" in page.url, "no request to add files was sent"
    leave = "() => setTimeout(() => location.reload(), 0)"
    page.evaluate(leave)
    page.wait_for_timeout(800)
    assert asked == ["beforeunload"]
    for route in held:
        route.continue_()
    page.unroute("**/api/jobs/*/files")
    page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
    assert "10 / 10 files" in page.locator("#upload-text").inner_text()  # the same page: it stayed
    page.click("h1")
    with page.expect_navigation():
        page.evaluate(leave)
    wait_status(page, "done")
    assert asked == ["beforeunload"] and page.locator("#upload-row").is_hidden()  # reloaded, not asked again
    assert not page_problems(page)


def test_an_upload_that_stops_part_way_sends_the_rest_into_its_job(browser, start_web_only, sqlite_url, redis_server,
                                                                   mini_dir, tmp_path):
    """After the job is made, requests that fail on the way (tried 3 times each) stop the upload with an error and
    a button that sends what is left into the same job. Each batch goes again with its first Idempotency-Key, so
    a request the server had stored after all (its answer lost) is answered with the job, not added twice."""
    import re

    import requests

    base = start_web_only(sqlite_url, PIXELPROOF_MAX_FILES_PER_REQUEST="2")
    folder = folder_of(tmp_path, "flaky", sorted((mini_dir / "real").iterdir())[:6])
    page = watched_page(browser)
    tried = {}  # Idempotency-Key -> the files of that request, each time it was tried

    def cut_off(route):
        names = re.findall(rb'filename="([^"]+)"', route.request.post_data_buffer or b"")
        tried.setdefault(route.request.headers["idempotency-key"], []).append([n.decode() for n in names])
        route.abort("connectionreset")

    page.route("**/api/jobs/*/files", cut_off)
    page.goto(base + "/")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_selector("#upload-rest:not([hidden])", timeout=60_000)
    assert page.locator("#upload-rest").inner_text() == "Send the 4 files not sent yet"
    assert "could not be reached" in page.locator("#error").inner_text()
    assert len(tried) == 2 and all(len(t) == 3 and t[0] == t[1] == t[2] for t in tried.values())  # its key, 3 times
    job_id = page.url.rsplit("?job=", 1)[1]
    assert requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()["total"] == 2
    # One of them reached the server after all, as a request whose answer was lost does: the same body (sent from
    # the page, as the browser builds it) stored under its key.
    key, names = next(iter(tried.items()))
    page.unroute("**/api/jobs/*/files")
    total = page.evaluate("""async ([url, key, names]) => {
        const form = new FormData();
        const files = Array.from(document.getElementById('folder-input').files);
        for (const name of names) form.append('files', files.find((f) => f.webkitRelativePath === name), name);
        const resp = await fetch(url, {method: 'POST', body: form, headers: {'Idempotency-Key': key}});
        return (await resp.json()).total;
    }""", [f"/api/jobs/{job_id}/files", key, names[0]])
    assert total == 4

    resent = []
    page.on("request", lambda r: r.method == "POST" and "/files" in r.url
            and resent.append(r.headers["idempotency-key"]))
    page.click("#upload-rest")
    page.wait_for_function("() => document.getElementById('upload-text').textContent === '6 / 6 files'")
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length === 6")
    assert sorted(resent) == sorted(tried) and page.locator("#upload-rest").is_hidden()
    assert page.locator("#error").is_hidden()
    names = [r["filename"] for r in requests.get(f"{base}/api/jobs/{job_id}/results", timeout=10).json()["items"]]
    assert sorted(names) == sorted(f"flaky/{p.name}" for p in folder.iterdir())  # each once
    assert [p for p in page_problems(page) if "ERR_CONNECTION_RESET" not in p and "TOO MANY" not in p] == []


def test_a_refusal_of_the_files_themselves_offers_no_second_try(browser, start_web_only, sqlite_url, redis_server,
                                                                mini_dir, tmp_path):
    """A job full part way (413) is not something sending again fixes: the page says why, and offers nothing."""
    base = start_web_only(sqlite_url, PIXELPROOF_MAX_FILES_PER_REQUEST="1", PIXELPROOF_MAX_FILES_PER_JOB="2")
    folder = folder_of(tmp_path, "too many", sorted((mini_dir / "real").iterdir())[:4])
    page = page_given(browser, base, folder)
    page.wait_for_selector("#error:not([hidden])")
    assert "a job holds at most 2 files" in page.locator("#error").inner_text()
    assert page.locator("#upload-rest").is_hidden()
    assert [p for p in page_problems(page) if "413" not in p] == []


@pytest.mark.parametrize("live_stack_env", [{"PIXELPROOF_MAX_FILES_PER_REQUEST": "3"}])
def test_files_chosen_before_the_limits_arrive_are_split_by_them(browser, live_stack, mini_dir, tmp_path):
    """The server's limits come from /api/config after the page loads; files chosen before they arrive wait
    for them, so no request breaks a limit (ten files in one request would be refused whole)."""
    folder = ten_files(mini_dir / "fake", tmp_path / "early")
    page = watched_page(browser)
    config, posts = [], recorded_posts(page)
    page.route("**/api/config", lambda route: config.append(route))  # held until the files are chosen
    page.goto(live_stack + "/")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_timeout(500)
    assert posts == [] and len(config) == 1  # nothing is sent before the limits are known
    config[0].continue_()
    page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
    assert len(posts) == 4 and page.locator("#results tbody tr").count() == 10  # 3 + 3 + 3 + 1
    assert "10 / 10" in page.locator("#job-text").inner_text() and page.locator("#error").is_hidden()
    assert not page_problems(page)


def test_files_dropped_without_folder_entries_upload_and_an_empty_drop_is_said(browser, live_stack, mini_dir):
    """Files dragged from an application that hands over plain files (no file-system entries: what a
    synthetic drop gives too) are uploaded; a drop with no files in it says so instead of doing nothing."""
    import base64

    files = [{"name": p.name, "b64": base64.b64encode(p.read_bytes()).decode()}
             for p in sorted((mini_dir / "real").iterdir())[:3]]
    page = watched_page(browser)
    page.goto(live_stack + "/")
    page.wait_for_selector("#scope:not([hidden])")
    text_only = page.evaluate_handle("() => { const dt = new DataTransfer(); dt.setData('text/plain', 'hello'); "
                                     "return dt; }")
    page.dispatch_event("#drop", "drop", {"dataTransfer": text_only})
    page.wait_for_selector("#error:not([hidden])")
    assert "nothing to upload: no files" in page.locator("#error").inner_text()
    dropped = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: "image/jpeg" }));
        }
        return dt;
    }""", files)
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    wait_status(page, "done", timeout=120_000)
    names = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(names) == sorted(f["name"] for f in files), names
    assert page.locator("#error").is_hidden() and not page_problems(page)


def test_a_job_link_cannot_point_the_page_at_another_path(browser, live_stack):
    page = watched_page(browser)
    requests_seen = []
    page.on("request", lambda r: requests_seen.append(r.url))
    page.goto(live_stack + "/?job=../../healthz%3F")
    page.wait_for_selector("#error:not([hidden])")
    assert "no valid job id" in page.locator("#error").inner_text()
    assert not [u for u in requests_seen if "healthz" in urlsplit(u).path]
    assert [urlsplit(u).path for u in requests_seen if "/api/jobs" in u] == []


def test_a_page_on_another_origin_cannot_create_jobs(browser, live_stack, sqlite_url, tmp_path):
    """The CSRF attempt as a browser makes it: a no-cors multipart POST, which needs no preflight."""
    import http.server
    import threading

    from sqlalchemy import create_engine, func, select

    from shared.models import Job

    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "evil"))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/index.html")
        page.evaluate("""async (url) => {
            const form = new FormData();
            form.append("files", new Blob([new Uint8Array([255, 216, 255])], { type: "image/jpeg" }), "a.jpg");
            // the response is opaque, or blocked by its Cross-Origin-Resource-Policy: either way the page learns nothing
            await fetch(url, { method: "POST", mode: "no-cors", body: form }).catch(() => null);
        }""", live_stack + "/api/jobs")
    finally:
        evil.shutdown()
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Job)) == 0
    engine.dispose()
    assert 'method=POST path="/api/jobs" status=403' in (tmp_path / "web.log").read_text()  # it did arrive


@pytest.mark.parametrize("live_stack_env", [{"PIXELPROOF_MAX_FILE_BYTES": "30000"}])
def test_first_hour_scope_oversized_file_and_a_phone(browser, live_stack, mini_dir, tmp_path):
    folder = folder_of(tmp_path, "shoot", sorted((mini_dir / "real").iterdir())[:4])
    (folder / "huge.jpg").write_bytes(b"\xff\xd8" + b"x" * 40000)  # over the 30,000-byte limit
    (folder / "a_rather_long_name_from_an_archive_export_2026-12-07.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    page = watched_page(browser)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_stack + "/")
    # the model's scope, from its checkpoint, before anything is uploaded
    page.wait_for_selector("#scope:not([hidden])")
    assert "better than chance" in page.locator("#scope-text").inner_text()
    assert page.locator("#scope-limits li").count() >= 2
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
    # the big file is reported and left out; the others are classified
    assert "shoot/huge.jpg" in page.locator("#skipped").inner_text() and "limit" in page.locator("#skipped").inner_text()
    assert page.locator("#results tbody tr").count() == 5
    assert "5 / 5 files" in page.locator("#upload-text").inner_text()
    assert page.locator("#encodings").inner_text().startswith("Files: JPEG quality 70-79 ×4")
    # at phone width the page does not scroll sideways, and Label and P are on screen
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for column in (3, 4):
        box = page.locator(f"#results tbody tr:not(.error) >> nth=0 >> td:nth-child({column})").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (column, box)
    # each row's path has the card's width (it had wrapped a few letters to a line beside the other columns),
    # and a broken file's error, in the column a phone has no room for, is still shown under it
    for row in page.locator("#results tbody tr").all():
        name = row.locator("td:nth-child(2)").bounding_box()
        assert name and name["width"] >= 250 and name["x"] + name["width"] <= 390, name
    error = page.locator("#results tbody tr.error td:nth-child(5)")
    assert error.is_visible() and "could not be read" in error.inner_text(), error.inner_text()
    assert (error.bounding_box() or {}).get("width", 0) >= 250
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert not page_problems(page)


def test_results_appear_before_the_job_ends_and_a_saved_link_reopens_it(browser, start_web_only, sqlite_url,
                                                                       redis_server, mini_dir, tmp_path):
    from .conftest import service_env
    from .processes import start_worker

    base = start_web_only(sqlite_url)
    folder = folder_of(tmp_path, "later", sorted((mini_dir / "fake").iterdir())[:3])
    page = page_given(browser, base, folder)
    # no worker yet: the rows are there, queued, while the job is not done
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length === 3")
    assert page.locator("#results").is_visible() and page.locator("#status").get_attribute("data-status") != "done"
    assert set(page.locator("#results tbody td.label").all_inner_texts()) == {"queued"}
    worker = start_worker(service_env(sqlite_url, redis_server.url, tmp_path / "data"), tmp_path / "worker.log")
    try:
        wait_status(page, "done", timeout=120_000)
        page.wait_for_function("() => [...document.querySelectorAll('#results tbody td.label')]"
                               ".every(td => td.textContent !== 'queued')")
    finally:
        worker.stop()
    # reopening the saved link: the job, without an upload bar; an unknown id: a message, no bars
    job_url = page.url
    page.goto(job_url)
    wait_status(page, "done")
    assert not page.locator("#upload-row").is_visible() and page.locator("#results tbody tr").count() == 3
    page.goto(base + "/?job=nosuchjob")
    page.wait_for_selector("#error:not([hidden])")
    assert "no job" in page.locator("#error").inner_text() and not page.locator("#progress").is_visible()
    assert [p for p in page_problems(page) if "404" not in p] == []  # the unknown job's 404 is expected


def test_a_folders_job_is_titled_by_its_name_and_renamed_in_the_page(browser, start_web_only, sqlite_url,
                                                                      redis_server, mini_dir, tmp_path):
    """A chosen folder's job carries the folder's name as its title: shown above the job, in the window's title
    and in the recent list. Rename changes it on the server (Escape leaves it); an empty title removes it; loose
    files make an untitled job."""
    import requests

    base = start_web_only(sqlite_url)
    folder = folder_of(tmp_path, "Election night, desk 2", sorted((mini_dir / "real").iterdir())[:2])
    page = page_given(browser, base, folder)
    page.wait_for_function("() => document.getElementById('job-title').textContent === 'Election night, desk 2'")
    job_id = page.url.rsplit("?job=", 1)[1]
    assert requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()["title"] == "Election night, desk 2"
    assert page.title() == "Election night, desk 2 · Pixelproof"
    page.click("#recent summary")
    assert page.locator("#recent-list li").first.locator(".title").inner_text() == "Election night, desk 2"

    page.click("#rename-job")
    assert page.locator("#title-input").input_value() == "Election night, desk 2"
    page.fill("#title-input", "never saved")
    page.keyboard.press("Escape")
    assert page.locator("#title-form").is_hidden() and page.locator("#rename-job").is_visible()
    page.click("#rename-job")
    page.fill("#title-input", "  Desk 3:\tthe count  ")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('job-title').textContent === 'Desk 3: the count'")
    assert page.locator("#title-form").is_hidden()
    assert requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()["title"] == "Desk 3: the count"
    assert page.locator("#recent-list li").first.locator(".title").inner_text() == "Desk 3: the count"
    page.goto(f"{base}/?job={job_id}")  # as saved: the server's title, and the recent list kept it
    page.wait_for_function("() => document.getElementById('job-title').textContent === 'Desk 3: the count'")
    page.click("#recent summary")
    assert page.locator("#recent-list li").first.locator(".title").inner_text() == "Desk 3: the count"
    page.click("#cancel-job")  # a final job offers its downloads, saved under its title
    page.wait_for_selector("#downloads:not([hidden])")
    with page.expect_download() as info:
        page.click("#dl-csv")
    assert info.value.suggested_filename == "Desk 3_ the count.csv"

    page.click("#rename-job")
    page.fill("#title-input", "")
    page.click("#title-save")
    page.wait_for_function(f"() => document.getElementById('job-title').textContent === 'Untitled job {job_id}'")
    assert "untitled" in page.locator("#job-title").get_attribute("class")
    assert requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()["title"] is None
    assert page.title() == "Pixelproof: real photo or AI-generated?"
    assert page.locator("#recent-list li").first.locator(".title").count() == 0
    with page.expect_download() as info:
        page.click("#dl-json")
    assert info.value.suggested_filename == f"pixelproof-{job_id}.json"

    page.goto(base + "/")
    page.set_input_files("#files-input", [str(p) for p in sorted(folder.iterdir())])  # loose files: no folder
    page.wait_for_function("() => /^Untitled job /.test(document.getElementById('job-title').textContent)")
    loose = page.url.rsplit("?job=", 1)[1]
    assert loose != job_id and requests.get(f"{base}/api/jobs/{loose}", timeout=10).json()["title"] is None
    # this browser's list, looked up by title here (no token: the server lists no jobs)
    page.set_input_files("#folder-input", str(folder_of(tmp_path, "Harbour at dawn", sorted(folder.iterdir())[:1])))
    page.wait_for_function("() => document.getElementById('job-title').textContent === 'Harbour at dawn'")
    page.click("#recent summary")
    assert page.locator("#recent-count").inner_text() == "3"
    page.fill("#recent-search", "  harBOUR ")
    page.wait_for_function("() => document.getElementById('recent-count').textContent === '1'")
    assert page.locator("#recent-list .title").all_inner_texts() == ["Harbour at dawn"]
    page.fill("#recent-search", "desk")
    page.wait_for_function("() => document.getElementById('recent-count').textContent === '0'")
    assert page.locator("#recent-list li").inner_text() == "No job's title contains “desk”."
    assert page.locator("#recent").is_visible()
    # with no worker the jobs stay queued, and the long-polls of the pages left behind keep their places a while:
    # a 429 the page waits out (Retry-After) is expected here
    assert [p for p in page_problems(page) if "(TOO MANY REQUESTS)" not in p] == []


def test_evidence_badges_and_the_per_image_view(browser, live_stack, tmp_path):
    from .corpus import heic
    from .provenance import (
        a1111_png,
        camera_jpeg,
        comfyui_png,
        signed_jpeg,
        tampered,
        xmp_jpeg,
    )

    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "credentials.jpg").write_bytes(signed_jpeg())
    (folder / "camera.jpg").write_bytes(camera_jpeg())
    for name, data in (("tampered.jpg", tampered(signed_jpeg())), ("xmp.jpg", xmp_jpeg()), ("a1111.png", a1111_png()),
                       ("comfyui.png", comfyui_png()), ("phone.heic", heic((320, 240)))):
        (folder / name).write_bytes(data)
    page = page_given(browser, live_stack, folder)
    page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
    row = page.locator("#results tbody tr", has_text="claims/credentials.jpg")
    assert row.locator(".badge.ai.strong").inner_text() == "Content Credentials: says AI ✓"
    assert page.locator("#results tbody tr", has_text="claims/camera.jpg").locator(".badge.camera").count() == 1

    def badge_texts(name):
        return page.locator("#results tbody tr", has_text=f"claims/{name}").locator(".badge").all_inner_texts()

    assert badge_texts("tampered.jpg") == ["Content Credentials: says AI"]  # no ✓: its signature fails
    assert badge_texts("xmp.jpg") == ["XMP/IPTC: says AI"]
    assert badge_texts("a1111.png") == badge_texts("comfyui.png") == ["generator parameters: says AI"]
    heic_row = page.locator("#results tbody tr", has_text="claims/phone.heic")
    assert heic_row.locator("td.label").inner_text() in ("real", "AI-generated", "uncertain")  # classified
    assert "5 declare themselves AI-generated" in page.locator("#counts").inner_text()
    row.click()
    page.locator("#detail").wait_for(state="visible")
    evidence = page.locator("#detail-evidence").inner_text()
    assert "made with DALL-E 3" in evidence and "signature valid" in evidence and "strong evidence" in evidence
    page.screenshot(path=str(tmp_path / "evidence.png"))
    assert not page_problems(page)


def test_cancel_filter_review_and_delete_in_the_page(browser, start_web_only, sqlite_url, redis_server, mini_dir,
                                                    tmp_path):
    import csv
    import io

    import requests

    from .conftest import service_env
    from .processes import start_worker

    from .test_operations import SECRET, Receiver

    rx = Receiver()
    hooks = {"PIXELPROOF_WEBHOOK_ALLOWLIST": rx.url, "PIXELPROOF_WEBHOOK_SECRET": SECRET,
             "PIXELPROOF_RETENTION_DAYS": "30"}
    base = start_web_only(sqlite_url, **hooks)
    queued, mixed = tmp_path / "queued", tmp_path / "mixed"
    queued.mkdir()
    for p in sorted((mini_dir / "real").iterdir())[:4]:
        shutil.copy(p, queued / p.name)
    for d in ("real", "fake"):
        (mixed / d).mkdir(parents=True)
        for p in sorted((mini_dir / d).iterdir())[10:18 if d == "real" else 17]:
            shutil.copy(p, mixed / d / p.name)
    # A file that is no image: its row has no label, so filtering by any label shows fewer than all 16 rows
    # even where the model gives every image the same label (the default labels most of them `uncertain`).
    (mixed / "fake" / "broken.jpg").write_bytes(b"not an image at all")
    page = watched_page(browser)
    keys = []
    page.on("request", lambda r: r.method == "POST" and urlsplit(r.url).path.endswith(("/api/jobs", "/files"))
            and keys.append(r.headers.get("idempotency-key")))
    page.goto(base + "/")
    # Cancel: no worker yet, so the job waits; after the click nothing of it is ever classified.
    page.set_input_files("#folder-input", str(queued))
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length === 4")
    page.click("#cancel-job")
    wait_status(page, "cancelled", timeout=60_000)  # an event, not a speed: room for a loaded machine
    assert "4 cancelled" in page.locator("#job-text").inner_text() and not page.locator("#cancel-job").is_visible()
    assert len(keys) == 1 and keys[0] and len(keys[0]) == 32  # each upload request carries its own key
    cancelled_id = page.url.split("job=")[1]
    worker = start_worker(service_env(sqlite_url, redis_server.url, tmp_path / "data", **hooks),
                          tmp_path / "worker.log")
    try:
        # A job made through the API with a webhook: its page shows how the delivery went.
        hooked = requests.post(f"{base}/api/jobs?callback_url={rx.url}/done",
                               files=[("files", (p.name, p.read_bytes())) for p in sorted(queued.iterdir())[:2]],
                               timeout=30).json()
        page.goto(f"{base}/?job={hooked['id']}")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('webhook delivered')",
                               timeout=60_000)
        assert "(1 attempt, last: 200)" in page.locator("#status").inner_text() and len(rx.hits) == 1
        page.goto(base + "/")
        page.wait_for_selector("#retention:not([hidden])")  # filled in when /api/config answers, after load
        assert "deletes jobs, their results and their uploads 30 days after" in page.locator("#retention").inner_text()
        page.set_input_files("#folder-input", str(mixed))
        page.wait_for_selector("#downloads:not([hidden])", timeout=120_000)
        job_id = page.url.split("job=")[1]
        job = requests.get(f"{base}/api/jobs/{cancelled_id}", timeout=10).json()
        assert job["status"] == "cancelled" and job["cancelled"] == 4 and sum(job["counts"].values()) == 0
    finally:
        worker.stop()
        rx.close()
    counts = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()["counts"]
    assert page.locator("#results tbody tr").count() == 16

    # Filter and sort: the rows the API would list, in its order.
    smaller = min((label for label in counts if counts[label]), key=counts.get)  # a label some rows have
    page.select_option("#f-label", smaller)
    page.wait_for_function(f"() => document.querySelectorAll('#results tbody tr').length === {counts[smaller]}")
    text = {"fake": "AI-generated", "real": "real", "uncertain": "uncertain"}[smaller]
    assert {t.split("\n")[0] for t in page.locator("#results tbody td.label").all_inner_texts()} == {text}
    assert counts[smaller] < 16
    page.select_option("#f-label", "")
    # no filter and every row again before the next filter, whose count may equal the label filter's (15)
    page.wait_for_function("() => document.querySelector('#f-count').textContent === ''"
                           " && document.querySelectorAll('#results tbody tr').length === 16")
    page.select_option("#f-sort", "-p_fake")
    page.fill("#f-pmin", "0.2")
    expected = [r for r in requests.get(f"{base}/api/jobs/{job_id}/results?sort=-p_fake&p_min=0.2", timeout=10)
                .json()["items"]]
    page.wait_for_function(f"() => document.querySelector('#f-count').textContent === '{len(expected)} shown'")
    shown = [float(t) for t in page.locator("#results tbody tr td:nth-child(4)").all_inner_texts()]
    assert shown == sorted(shown, reverse=True) and all(p >= 0.2 for p in shown) and len(shown) == len(expected)
    assert page.locator("#results tbody tr td:nth-child(2)").all_inner_texts() == [r["filename"] for r in expected]

    # Review the top row: saved on the server, shown on the row, exported in the CSV.
    page.locator("#results tbody tr").first.click()
    page.locator("#detail").wait_for(state="visible")
    page.check("#review input[value=real]")
    page.fill("#review-note", "our photographer took it")
    page.click("#review-save")
    page.wait_for_function("() => document.querySelector('#review-status').textContent === 'saved'")
    page.click("#detail .close")
    first = page.locator("#results tbody tr").first
    assert first.locator(".badge.review").inner_text() == "reviewed: real"
    csv_text = download_text(page, "#dl-csv")  # as filtered: P >= 0.2, highest first
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows[0]["filename"] == expected[0]["filename"] and rows[0]["review"] == "real"
    assert rows[0]["review_note"] == "our photographer took it" and len(rows) == len(expected)

    # Part of a folder's name, typed in another case: that folder's rows only, as the API lists them.
    page.fill("#f-pmin", "")
    page.fill("#f-name", "FAKE/")
    named = [r["filename"] for r in requests.get(f"{base}/api/jobs/{job_id}/results", params={
        "sort": "-p_fake", "name": "FAKE/"}, timeout=10).json()["items"]]
    assert len(named) == 8 and all("/fake/" in n for n in named), named  # 7 images and broken.jpg, none of real/
    page.wait_for_function("() => document.querySelector('#f-count').textContent === '8 shown'")
    assert page.locator("#results tbody tr td:nth-child(2)").all_inner_texts() == named
    assert len(list(csv.DictReader(io.StringIO(download_text(page, "#dl-csv"))))) == 8  # the download follows it

    # A desk's queue: the results nobody gave a verdict yet. One reviewed leaves it once its view is closed.
    page.fill("#f-name", "")
    page.select_option("#f-review", "none")
    page.wait_for_function("() => document.querySelector('#f-count').textContent === '15 shown'")
    queue = page.locator("#results tbody tr:not(.error) td:nth-child(2)").all_inner_texts()
    page.locator("#results tbody tr:not(.error)").first.click()
    page.locator("#detail").wait_for(state="visible")
    page.check("#review input[value=fake]")
    page.click("#review-next")  # saved, and the next result of the list in the same view, its form cleared
    page.wait_for_function(f"() => document.querySelector('#detail-name').textContent === {queue[1]!r}")
    assert page.locator("#review input[name=verdict]:checked").count() == 0
    page.check("#review input[value=unsure]")
    page.click("#review-save")
    page.wait_for_function("() => document.querySelector('#review-status').textContent === 'saved'")
    assert page.locator("#results tbody tr").count() == 15  # not under the open view
    page.click("#detail .close")
    page.wait_for_function("() => document.querySelector('#f-count').textContent === '13 shown'")
    page.wait_for_function("() => document.querySelector('#reviews').textContent === "
                           "'Your verdicts: 3 of 16 (real 1 · AI-generated 1 · unsure 1)'")  # asked again after each
    left = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
    assert queue[0] not in left and queue[1] not in left and queue[2] in left
    page.locator("#results tbody tr:not(.error)").last.click()  # the last of the list has no next
    page.check("#review input[value=real]")
    page.click("#review-next")
    page.wait_for_function("() => document.querySelector('#review-status').textContent.includes('the last result')")
    page.click("#detail .close")
    page.select_option("#f-review", "real,fake,unsure")
    page.wait_for_function("() => document.querySelector('#f-count').textContent === '4 shown'")
    assert set(queue[:2]) <= set(page.locator("#results tbody tr td:nth-child(2)").all_inner_texts())
    page.select_option("#f-review", "")
    page.screenshot(path=str(tmp_path / "operations.png"), full_page=True)

    # Delete, after the browser's confirmation: gone from the server and from the page.
    page.once("dialog", lambda d: d.accept())
    page.click("#delete-job")
    page.wait_for_selector("#error:not([hidden])")
    assert f"Job {job_id} was deleted: 16 results" in page.locator("#error").inner_text()
    assert requests.get(f"{base}/api/jobs/{job_id}", timeout=10).status_code == 404
    assert page.locator("#results").is_hidden() and "job=" not in page.url
    assert [p for p in page_problems(page) if "404" not in p] == []

    # A bare page lists the jobs this browser made or opened, newest first, without the one it deleted; opening
    # the list asks for each one's state, and a job deleted elsewhere says so; a click opens one.
    assert requests.delete(f"{base}/api/jobs/{hooked['id']}", timeout=10).status_code == 200
    page.goto(base + "/")
    assert page.locator("#recent-count").inner_text() == "2" and page.locator("#progress").is_hidden()
    page.click("#recent summary")
    page.wait_for_function("() => [...document.querySelectorAll('#recent-list span')].every((s) => s.textContent)")
    hrefs = page.locator("#recent-list a").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
    assert hrefs == [f"?job={hooked['id']}", f"?job={cancelled_id}"], hrefs
    texts = page.locator("#recent-list li").all_inner_texts()
    assert "not on this server now: deleted" in texts[0], texts
    assert "cancelled · 4 files · real 0 · AI-generated 0 · uncertain 0" in texts[1], texts
    page.locator("#recent-list a").nth(1).click()
    wait_status(page, "cancelled")
    assert page.url.endswith(f"?job={cancelled_id}") and "4 cancelled" in page.locator("#job-text").inner_text()
    page.click("#recent summary")
    page.click("#recent-forget")
    assert page.locator("#recent").is_hidden()
    page.reload()
    wait_status(page, "cancelled")  # opened again, so listed again: the one job
    assert page.locator("#recent-count").inner_text() == "1"
    assert [p for p in page_problems(page) if "404" not in p] == []


def test_a_job_is_classified_again_when_the_served_model_changed(browser, start_web_only, sqlite_url, redis_server,
                                                                 mini_dir, tmp_path):
    """A job classified by an earlier model offers to classify its files again with the model served now; the
    new job follows on the page and names the earlier one, which keeps its results."""
    import time

    import requests

    from shared.modeling.checkpoint import read_meta
    from shared.settings import CIFAKE_CHECKPOINT, DEFAULT_CHECKPOINT

    from .conftest import service_env
    from .processes import start_worker

    base = start_web_only(sqlite_url)
    folder = folder_of(tmp_path, "desk", sorted((mini_dir / "fake").iterdir())[:3])
    env = service_env(sqlite_url, redis_server.url, start_web_only.data_dir)
    page = watched_page(browser)
    worker = start_worker({**env, "PIXELPROOF_MODEL_PATH": str(CIFAKE_CHECKPOINT)}, tmp_path / "old.log", name="old")
    try:
        page.goto(base + "/")
        page.set_input_files("#folder-input", str(folder))
        wait_status(page, "done", timeout=60_000)
    finally:
        worker.stop()
    first = page.url.split("job=")[1]
    old, new = read_meta(CIFAKE_CHECKPOINT).version, read_meta(DEFAULT_CHECKPOINT).version
    page.wait_for_selector(f"#rerun-job[data-served='{old}']", state="attached")  # /api/config has answered
    assert not page.locator("#rerun-job").is_visible()  # classified by the model served now: nothing to offer
    worker = start_worker(env, tmp_path / "new.log", name="new")
    try:
        # /api/config answers after the job here, as on a slow link: the scope shown stays the job's model's
        page.route("**/api/config", lambda route: (time.sleep(1), route.continue_()))
        page.reload()
        wait_status(page, "done")
        page.wait_for_selector("#rerun-job:visible")  # shown once /api/config names the model served now
        assert new in page.locator("#rerun-job").get_attribute("title")
        assert old in page.locator("#scope-model").inner_text()  # the job's verdicts came from that one
        page.click("#rerun-job")
        page.wait_for_function(f"() => !location.search.includes('{first}')")
        wait_status(page, "done", timeout=60_000)
    finally:
        worker.stop()
    second = page.url.split("job=")[1]
    assert page.locator("#rerun-of-link").inner_text() == first and page.locator("#rerun-of").is_visible()
    assert f"model {new}" in page.locator("#status").inner_text() and not page.locator("#rerun-job").is_visible()
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length === 3")
    assert requests.get(f"{base}/api/jobs/{second}", timeout=10).json()["rerun_of"] == first
    # What the new model changed: a badge with the earlier verdict, and a filter for those rows only
    changed = requests.get(f"{base}/api/jobs/{second}/results?changed=1", timeout=10).json()["items"]
    assert changed  # the CIFAKE model never says uncertain; the default mostly does
    assert page.locator("#results tbody .badge.earlier").count() == len(changed)
    assert page.locator("#results tbody .badge.earlier").first.inner_text() == "was: " + {
        "fake": "AI-generated", "real": "real"}[changed[0]["earlier"]["label"]]
    page.check("#f-changed")
    page.wait_for_function(f"() => document.querySelector('#f-count').textContent === '{len(changed)} shown'")
    assert page.locator("#results tbody tr td:nth-child(2)").all_inner_texts() == [r["filename"] for r in changed]
    page.uncheck("#f-changed")
    assert requests.get(f"{base}/api/jobs/{first}", timeout=10).json()["model"]["version"] == old
    page.click("#rerun-of-link")  # back to the earlier job, which still has its own results
    wait_status(page, "done")
    assert f"model {old}" in page.locator("#status").inner_text() and page.locator("#rerun-of").is_hidden()
    assert page.locator("#f-changed-label").is_hidden()  # no earlier verdicts to compare with here
    assert page_problems(page) == []
