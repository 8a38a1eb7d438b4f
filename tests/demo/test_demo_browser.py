"""``maelab demo`` in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; ./install.sh --test does it as root)"
)
TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(demo_run, tmp_path_factory):
    """``maelab demo`` on a free loopback port, as a user starts it; yields the page URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "demo.log"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "maelab", "demo", str(demo_run), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"maelab demo did not come up on {url}:\n{log.read_text()}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture()
def page(server):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        yield page
        browser.close()


def _picture(page, elem_id: str) -> str:
    """Hash of the bytes the page shows in an output image (fetched by the browser itself)."""
    img = page.locator(f"#{elem_id} img")
    expect(img).to_be_visible()
    data = page.evaluate(
        "async (src) => Array.from(new Uint8Array(await (await fetch(src)).arrayBuffer()))", img.get_attribute("src")
    )
    return hashlib.sha256(bytes(data)).hexdigest()


def _set_ratio(page, value: float) -> None:
    """Move the slider's range input, as a drag would (input events, then the release)."""
    page.locator("#mask-ratio input[type=range]").fill(str(value))


def test_upload_and_mask_ratio(page, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photo)
    summary = page.locator("#summary")
    expect(summary).to_contain_text("test image #0")  # the page starts on a test image
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    expect(summary).to_contain_text("your upload photo.png")
    expect(summary).to_contain_text("ratio 0.75")
    at_75 = _picture(page, "reconstruction")
    _set_ratio(page, 0.25)
    expect(summary).to_contain_text("4 of 16 patches hidden, ratio 0.25")
    at_25 = _picture(page, "reconstruction")
    assert at_25 != at_75
    _set_ratio(page, 0.75)
    expect(summary).to_contain_text("ratio 0.75")
    assert _picture(page, "reconstruction") == at_75  # same seed, same ratio: the same picture again
    expect(page.locator("#status")).not_to_contain_text("Error")


def test_text_file_named_png_gets_a_message(page, server, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not a picture\n")
    page.locator("#upload input[type=file]").set_input_files(str(fake))
    expect(page.locator("#status")).to_contain_text("not a readable image")
    expect(page.locator("#reconstruction img")).to_have_count(0)  # no stale result from before
    assert _answers(server)
    # The same page keeps working: back to a test image, then a real picture is reconstructed.
    page.locator("#use-test").click()
    expect(page.locator("#summary")).to_contain_text("test image #0")
    photo = tmp_path / "real.png"
    Image.new("L", (40, 40), 128).save(photo)
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    expect(page.locator("#summary")).to_contain_text("your upload real.png")
    expect(page.locator("#status")).not_to_contain_text("Error")
    _picture(page, "reconstruction")


def test_anomaly_view_scores_the_upload(page, tmp_path):
    photo = tmp_path / "part.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(photo)
    summary = page.locator("#anomaly-summary")  # the page scores on load, with the reconstruction: allow time
    expect(summary).to_contain_text("test image #0", timeout=TIMEOUT_MS)
    expect(summary).to_contain_text("of 16 held-out images", timeout=TIMEOUT_MS)
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    expect(summary).to_contain_text("your upload part.png", timeout=TIMEOUT_MS)
    expect(summary).to_contain_text("Anomaly score", timeout=TIMEOUT_MS)
    at_4 = _picture(page, "anomaly-map")
    page.locator("#anomaly-masks input[type=range]").fill("2")
    expect(summary).to_contain_text("--masks 2 --seed 0 --score top", timeout=TIMEOUT_MS)
    assert _picture(page, "anomaly-map") != at_4
