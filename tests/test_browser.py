"""The Space in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Opens the page, uploads a photo, runs the default protection with few steps, waits for both videos,
checks that they play and that the guarded PNG downloads. A screenshot of the finished page is saved
in the test's tmp_path and in $GUARD_SCREENSHOT_DIR when set."""

import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from test_app import EXAMPLE, launch_app, prepared_example

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI") == "true"
STEPS = 2  # protection steps for the test (the page's default is larger)
VIDEO_STEPS = 3  # denoising steps of each video (the model's default is larger)
RUN_TIMEOUT_MS = 300_000  # protection + two videos on a loaded CPU

if not IN_CI:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium); "
                    "CI installs it and runs this test", allow_module_level=True)
    pytest.importorskip("playwright", reason="Playwright's Python package is missing (pip install -r requirements-test.txt)")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    app, url = launch_app(tmp_path_factory.mktemp("app"))
    yield app, url
    app.demo.close()


@pytest.fixture
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


def set_number(page, elem_id: str, value: int) -> None:
    """Type into a slider's number box (Gradio sliders pair a range input with a number input)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def video_plays(page, elem_id: str) -> dict:
    """Plays the video muted (autoplay rules) and reports readyState, duration and whether time moved."""
    return page.evaluate(
        """async (selector) => {
            const v = document.querySelector(selector);
            if (!v) return {found: false};
            v.muted = true;
            try { await v.play(); } catch (e) {}
            const start = v.currentTime;
            const frames0 = v.getVideoPlaybackQuality().totalVideoFrames;
            await new Promise(r => setTimeout(r, 1500));
            return {found: true, readyState: v.readyState, duration: v.duration, start: start,
                    now: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames - frames0,
                    error: v.error ? v.error.code : null, width: v.videoWidth};
        }""",
        f"#{elem_id} video",
    )


def test_protect_and_animate_in_the_browser(page, page_url, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    app, url = page_url
    page.goto(url)
    page.wait_for_selector("#run")
    assert "Chelsea the cat" in page.locator("#example-credits").inner_text()  # examples carry their credits

    # pressing the button with no photo answers with a sentence, not a traceback
    page.click("#run")
    page.get_by_text("Upload an image first").first.wait_for()

    page.set_input_files("#input-image input[type=file]", str(EXAMPLE))
    page.wait_for_selector("#input-image img")
    # the steps follow the chosen method's preset
    steps_box = page.locator("#steps input[type=number]")
    for method, label in (("photoguard", "PhotoGuard"), ("vidfreeze", "Vid-Freeze")):
        page.get_by_label(label, exact=False).check()
        page.wait_for_function(f"() => document.querySelector('#steps input[type=number]').value == "
                               f"'{app.default_steps(method)}'")
    assert steps_box.input_value() == str(app.default_steps("vidfreeze"))
    set_number(page, "steps", STEPS)
    page.get_by_text("Advanced options").click()  # folded away by default
    set_number(page, "video-steps", VIDEO_STEPS)
    page.click("#run")
    try:  # the progress bar shows what runs (best effort: a fast machine may finish first)
        page.get_by_text("Protecting with").or_(page.get_by_text("denoising step")).first.wait_for(timeout=20_000)
        page.screenshot(path=str(tmp_path / "running_page.png"), full_page=True)
    except PlaywrightTimeout:
        pass

    page.wait_for_selector("#video-original video", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#video-guarded video", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#guarded-file a", timeout=60_000)
    page.wait_for_selector("#motion-plot img, #motion-plot svg, #motion-plot canvas", timeout=60_000)

    for elem_id in ("video-original", "video-guarded"):
        state = video_plays(page, elem_id)
        assert state["found"] and state["error"] is None, (elem_id, state)
        assert state["readyState"] >= 2 and state["duration"] > 0 and state["width"] > 0, (elem_id, state)
        assert state["now"] != state["start"] or state["frames"] > 0, f"{elem_id} does not advance: {state}"

    with page.expect_download() as download_info:
        page.locator("#guarded-file a").first.click()
    downloaded = tmp_path / (download_info.value.suggested_filename or "guarded.png")
    download_info.value.save_as(downloaded)
    with PIL.Image.open(downloaded) as png:
        assert png.format == "PNG"
        pixels = np.asarray(png.convert("RGB"), dtype=np.int16)
    original = prepared_example(app)
    assert pixels.shape == original.shape and np.abs(pixels - original).max() <= 8  # the default eps

    for close in page.locator(".toast-close").all():  # notices would hide the outputs
        close.click()
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "finished_page.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 900})  # a phone
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "finished_narrow_page.png"), full_page=True)
    if os.environ.get("GUARD_SCREENSHOT_DIR"):
        folder = Path(os.environ["GUARD_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        for shot in tmp_path.glob("*_page.png"):
            shutil.copy(shot, folder / shot.name)
