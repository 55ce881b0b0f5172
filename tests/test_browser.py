"""The page in real headless Chromium against the real stack (gunicorn, Redis, a Celery worker)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import unavailable

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


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

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_stack + "/")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_selector("#results:not([hidden])", timeout=120_000)
    rows = page.locator("#results tbody tr")
    assert rows.count() == 13
    names = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
    assert all(n.startswith("holiday/") for n in names), names
    assert "holiday/fake/readme.jpg" in names
    status = page.locator("#status")
    assert status.get_attribute("data-status") == "done"
    assert "13 / 13" in page.locator("#job-text").inner_text() and "1 errors" in page.locator("#job-text").inner_text()
    bad = page.locator("#results tbody tr.error")
    assert bad.count() == 1 and "not a recognised image" in bad.inner_text()
    labels = page.locator("#results tbody tr:not(.error) td.label").all_inner_texts()
    assert len(labels) == 12 and set(labels) <= {"real", "AI-generated"}
    # thumbnails are our own PNGs and they load
    page.wait_for_function("[...document.querySelectorAll('#results img[src]')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#dl-csv").get_attribute("href").endswith("format=csv&download=1")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert not errors, errors
