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
    photo = sorted((mini_dir.parent / "mixed100" / "real").iterdir())[0]  # 512x512: a grid of several crops
    shutil.copy(photo, folder / "real" / "photo.jpg")

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_stack + "/")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_selector("#results:not([hidden])", timeout=120_000)
    rows = page.locator("#results tbody tr")
    assert rows.count() == 14
    names = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
    assert all(n.startswith("holiday/") for n in names), names
    assert "holiday/fake/readme.jpg" in names
    status = page.locator("#status")
    assert status.get_attribute("data-status") == "done"
    assert "14 / 14" in page.locator("#job-text").inner_text() and "1 errors" in page.locator("#job-text").inner_text()
    bad = page.locator("#results tbody tr.error")
    assert bad.count() == 1 and "not a recognised image" in bad.inner_text()
    labels = page.locator("#results tbody tr:not(.error) td.label").all_inner_texts()
    assert len(labels) == 13 and set(labels) <= {"real", "AI-generated", "uncertain"}
    # the three labels and the model's thresholds are explained on the page
    legend = page.locator("#legend")
    assert legend.is_visible() and "uncertain" in page.locator("header").inner_text()
    assert "AI-generated when P" in legend.inner_text()
    # thumbnails are our own PNGs and they load
    page.wait_for_function("[...document.querySelectorAll('#results img[src]')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#dl-csv").get_attribute("href").endswith("format=csv&download=1")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    # the per-image view: the picture with one coloured box per crop the model scored, and their scores
    page.locator("#results tbody tr", has_text="holiday/real/photo.jpg").click()
    dialog = page.locator("#detail")
    dialog.wait_for(state="visible")
    page.wait_for_function("document.getElementById('detail-img').complete && "
                           "document.getElementById('detail-img').naturalWidth > 0")
    boxes = page.locator("#detail-map div")
    assert boxes.count() == 9 and page.locator("#detail-regions tbody tr").count() == 9
    assert "P(AI-generated)" in page.locator("#detail-verdict").inner_text()
    figure = page.locator("#detail-figure").bounding_box()
    last = boxes.nth(8).bounding_box()  # the bottom-right crop ends at the image's bottom-right corner
    assert abs(last["x"] + last["width"] - (figure["x"] + figure["width"])) < 2
    assert abs(last["y"] + last["height"] - (figure["y"] + figure["height"])) < 2
    page.screenshot(path=str(tmp_path / "detail.png"))
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert not errors, errors
