"""A screenshot of `radcap app` captioning a demo test image: `figures/app.png`.

Run after `radcap demo --attention`, from the folder it ran in:

    .venv/bin/python bench/app_screenshot.py --root . --out bench/figures/app.png

Serves the run with `radcap app` on a free port, opens the page in headless
Chromium (Debian: `apt-get install chromium chromium-driver`; selenium from
the test extra), uploads the first test image that shows a lesion, waits
for its caption, turns on its attention maps and saves the window as a PNG
of 128 colours, 1280 pixels wide. Prints one JSON object: the image, the
caption the page showed, the file written and its size.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from radcap.core.config import preset
from radcap.data.layouts import load_demo

WIDTH = 1280


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"radcap app stopped (exit status {server.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"radcap app did not answer at {url} within {timeout} s")


def chromium(height: int):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDTH},{height}")
    options.add_argument("--hide-scrollbars")
    return webdriver.Chrome(options, webdriver.ChromeService("/usr/bin/chromedriver"))


def screenshot(run_dir: Path, image: Path, out: Path, height: int) -> str:
    """Serve `run_dir`, upload `image`, save the page to `out`; the caption shown."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "radcap", "app", "--run", str(run_dir)]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # its streamlit child stops with it
    )
    driver = chromium(height)
    try:
        wait_until_serving(url, server)
        driver.get(url)
        wait = WebDriverWait(driver, 300)
        wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))
        ).send_keys(str(image))
        caption = wait.until(
            ready.visibility_of_element_located((By.CSS_SELECTOR, ".st-key-caption-0"))
        ).text
        driver.find_element(By.CSS_SELECTOR, ".st-key-attention-0 label").click()
        time.sleep(2)  # the images and the attention figure finish drawing
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    with Image.open(out) as shot:
        shot.convert("RGB").quantize(128).save(out, optimize=True)
    return caption


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="Where `radcap demo` ran.")
    parser.add_argument("--run", default="demo-attention", help="Run name.")
    parser.add_argument("--out", default="bench/figures/app.png", type=Path)
    parser.add_argument("--height", type=int, default=1700, help="Window height.")
    args = parser.parse_args()
    root = Path(args.root)
    config = preset("demo")
    test = load_demo(config.dataset_dir(root)).split("test")
    with_lesion = test[~test["caption"].str.contains("no abnormality")]
    image = Path(with_lesion["path"].iloc[0])
    run_dir = root / config.checkpoints_dir / args.run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    caption = screenshot(run_dir, image, args.out, args.height)
    facts = {
        "image": image.name,
        "caption": caption,
        "figure": str(args.out),
        "bytes": args.out.stat().st_size,
    }
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
