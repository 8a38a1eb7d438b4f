"""Screenshots of ``maelab demo`` for the README, taken from a real run with Playwright.

Usage (repository root; run.sh makes the checkpoint first when it is missing):
    maelab pretrain --model mae_vit_fashion --epochs 3 --output-dir runs/default-idle
    python results/demo/screenshot.py runs/default-idle

Starts ``maelab demo`` on a free loopback port, opens it in headless Chromium, and writes
docs/demo-fashion.png (a Fashion-MNIST test image) and docs/demo-photo.png (an uploaded colour
photo, scikit-image's ``chelsea``), printing what the page says for each to stdout.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright
from skimage import data as skdata


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"maelab demo did not come up on {url}")


def shoot(page, path: Path) -> None:
    page.wait_for_timeout(1500)  # let the images finish painting
    page.screenshot(path=str(path), full_page=True)
    print(f"--- {path}\n{page.locator('#summary').inner_text()}\n")


def main(checkpoint: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-m", "maelab", "demo", checkpoint, "--port", str(port)])
    try:
        wait_for(url, proc)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
            photo = Path(tmp) / "cat.jpg"
            Image.fromarray(skdata.chelsea()).save(photo, quality=92)
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            summary = page.locator("#summary")
            page.locator("#test-index input[type=number]").fill("3")
            page.locator("#test-index input[type=number]").press("Enter")
            expect(summary).to_contain_text("test image #3")
            shoot(page, Path("docs/demo-fashion.png"))
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            expect(summary).to_contain_text("your upload cat.jpg")
            page.locator("#mask-ratio input[type=range]").fill("0.5")
            expect(summary).to_contain_text("ratio 0.50")
            shoot(page, Path("docs/demo-photo.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/default-idle")
