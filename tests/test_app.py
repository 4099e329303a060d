"""`radcap app`: the page captions uploads exactly as `Captioner.caption` does.

The page runs in this process under Streamlit's `AppTest`, over a tiny
attention run trained in a module fixture; one test serves it with `radcap
app` and uploads an image from a headless Chromium (skipped without one), and
others check that each stop signal to `radcap app` ends its server.
"""

import errno
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from tiny_run import shared_tiny_run

from radcap import cli
from radcap.data.images import MAX_PIXELS, load_image
from radcap.decoding.captioner import Captioner
from radcap.evaluation.notes import familiarity_note
from radcap.models.card import DISCLAIMER
from radcap.serving import app, app_page, app_search

TIMEOUT = 120  # seconds for a page run that captions (the first loads VGG16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The session's tiny attention run (tests/tiny_run.py): 20 images, 2 epochs."""
    run_dir, dataset = shared_tiny_run(tmp_path_factory)
    root = run_dir.parents[1]
    # The page's own captioner (its searches are compiled once for both).
    captioner = app_page.service(str(run_dir), None).captioner
    assert isinstance(captioner, Captioner) and captioner.run_dir == run_dir
    return root, run_dir, captioner, dataset


@pytest.fixture
def page(run, monkeypatch):
    """The page over the run, rendered once with nothing uploaded."""
    monkeypatch.setenv(app.RUN_ENV, str(run[1]))
    at = AppTest.from_file(str(app.PAGE), default_timeout=TIMEOUT)
    return at.run()


def upload(page, paths_or_files):
    """Upload files (paths, or `(name, bytes)`) and run the page again."""
    files = [
        (p.name, p.read_bytes()) if isinstance(p, Path) else p for p in paths_or_files
    ]
    page.file_uploader[0].set_value([(n, b, "image/png") for n, b in files])
    return page.run()


def shown_captions(page) -> dict[int, str]:
    """The caption shown for each upload, by its position."""
    out = {}
    for i in range(20):
        try:
            out[i] = page.get_by_key(f"caption-{i}").markdown[0].value
        except KeyError:
            continue
    return out


def images(dataset, split, n):
    return [Path(p) for p in dataset.images(split)["path"][:n]]


def test_the_page_says_it_is_for_research_only(page):
    assert [w.value for w in page.warning] == [DISCLAIMER]


def test_two_images_get_the_captioners_greedy_then_beam_captions(run, page):
    root, run_dir, captioner, dataset = run
    paths = images(dataset, "test", 2)
    assert page.radio[0].value == "greedy"
    upload(page, paths)
    greedy = [str(c) for c in captioner.caption(paths)]
    assert shown_captions(page) == {0: greedy[0], 1: greedy[1]}
    names = [p.name.replace("_", "\\_") for p in paths]  # as Markdown: demo\_...
    assert [s.value for s in page.subheader] == names
    # Per image: itself and its three most similar training images.
    assert len(page.error) == 0 and len(page.image) == 2 * 4

    beam = captioner.config.beam
    page.radio[0].set_value(f"beam search, width {beam}").run()
    beamed = [str(c) for c in captioner.caption(paths, beam=beam)]
    assert shown_captions(page) == {0: beamed[0], 1: beamed[1]}
    # The attention run shows where each word looked, when asked.
    assert [t.value for t in page.toggle] == [False, False]
    page.toggle[1].set_value(True).run()
    assert len(page.image) == 2 * 4 + 1
    (result,) = [
        r
        for (_, name, b), r in page.session_state["results"].items()
        if name == paths[1].name and b == beam
    ]
    assert result["words"] == beamed[1].split()
    assert result["attention"].shape == (len(result["words"]), 49)
    assert Image.open(io.BytesIO(result["attention_png"])).format == "PNG"


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all black, in a few kilobytes."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte, then packed pixels
    data = zlib.compress(row * side, 9)

    def chunk(kind, body):
        crc = zlib.crc32(kind + body)
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1 bit, grey
    chunks = [chunk(b"IHDR", header), chunk(b"IDAT", data), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def test_bad_uploads_get_an_error_naming_them_and_a_good_one_its_caption(
    run, page, tmp_path
):
    root, run_dir, captioner, dataset = run
    huge = huge_png()
    assert len(huge) < 100_000
    good = images(dataset, "test", 1)[0]
    files = [
        ("x.png", b"this is text, not an image"),
        ("empty.png", b""),
        ("huge.png", huge),
        (good.name, good.read_bytes()),
    ]
    # load_image refuses the huge PNG from its header, before decoding it.
    (tmp_path / "huge.png").write_bytes(huge)
    with pytest.raises(ValueError, match=r"image too large \(20000x20000 pixels\)"):
        load_image(tmp_path / "huge.png")
    assert 20_000**2 > MAX_PIXELS

    upload(page, files)
    errors = [e.value for e in page.error]
    assert len(errors) == 3
    assert errors[0].startswith("x.png could not be captioned: not an image file")
    assert errors[1].startswith("empty.png could not be captioned: empty file")
    assert errors[2].startswith(
        "huge.png could not be captioned: image too large (20000x20000 pixels)"
    )
    assert "upload it again" in errors[2]
    expected = captioner.caption([good])[0]
    assert shown_captions(page) == {3: str(expected)}


def test_an_upload_over_the_size_limit_is_refused_unread(run, page):
    from streamlit import config

    good = images(run[3], "test", 1)[0]
    limit = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        upload(page, [("big.png", bytes(2**20 + 1)), good])
    finally:
        config.set_option("server.maxUploadSize", limit)
    assert [e.value for e in page.error] == [
        "big.png could not be captioned: larger than the upload limit of 1 MB. "
        "Shrink or compress it and upload it again."
    ]
    assert list(shown_captions(page)) == [1]


NAMES = {  # what a browser may send as a file name: its safe name
    "plain": ("scan.png", "scan.png"),
    "hidden": (".hidden.png", ".hidden.png"),
    "parent parts": ("../../etc/passwd.png", "passwd.png"),
    "windows path": ("C:\\Users\\me\\scan.png", "scan.png"),
    "dot dot": ("..", "upload"),
    "dot": (".", "upload"),
    "empty": ("", "upload"),
    "folder": ("scans/", "upload"),
    "dots and spaces": (" . ", "upload"),
    "nul": ("a\x00b.png", "a_b.png"),
    "control": ("line\nbreak\t\x7f.png", "line_break__.png"),
    "windows refuses": ('what?<>:"|*.png', "what_______.png"),
    "surrogate": ("\ud800.png", "_.png"),
    "spaces and dot": ("  name. ", "name"),
    "long": ("x" * 300 + ".png", "x" * 251 + ".png"),
    "long utf-8": ("é" * 200 + ".png", "é" * 125 + ".png"),  # no half a character
    "long no extension": ("y" * 300, "y" * 255),
    "long extension": ("z." + "q" * 300, "z." + "q" * 253),  # not an extension
}


@pytest.mark.parametrize("name, safe", NAMES.values(), ids=list(NAMES))
def test_upload_names_become_safe_file_names(name, safe, tmp_path):
    assert app.safe_name(name) == safe
    (tmp_path / safe).write_bytes(b"")
    assert [p.name for p in tmp_path.iterdir()] == [safe]


def test_hostile_names_are_captioned_and_an_upload_not_saved_fails_alone(
    run, page, monkeypatch
):
    def save(name, data, folder):
        if name == "full.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return saved(name, data, folder)

    saved = app._save
    monkeypatch.setattr(app, "_save", save)
    good = images(run[3], "test", 1)[0]
    names = ["x" * 300 + ".png", "../../up.png", "a\\b.png", "é" * 130 + ".png"]
    upload(page, [(name, good.read_bytes()) for name in ["full.png", *names]])
    assert len(page.exception) == 0
    assert [e.value for e in page.error] == [
        "full.png could not be captioned: the server could not save it (No space "
        "left on device). Rename it to a short plain name, upload again."
    ]
    expected = str(run[2].caption([good])[0])
    assert shown_captions(page) == dict.fromkeys(range(1, 5), expected)
    # What Streamlit refuses to pass on (no image extension), given directly.
    results = app.caption_uploads(app_page.service(str(run[1]), None), [("..", b"")])
    assert results[0]["error"].startswith(".. could not be captioned: empty file")


def test_an_unfamiliar_image_is_flagged_and_a_training_image_is_not(
    run, page, tmp_path
):
    root, run_dir, captioner, dataset = run
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), np.uint8)
    (tmp_path / "noise.png").write_bytes(png_bytes(noise))  # the run is shared
    familiar = images(dataset, "train", 1)[0]
    paths = [tmp_path / "noise.png", familiar]
    noise_caption, familiar_caption = captioner.caption(paths)
    assert [noise_caption.familiar, familiar_caption.familiar] == [False, True]

    upload(page, paths)
    note = familiarity_note(noise_caption.familiarity, captioner.familiarity)
    assert note.startswith("warning: unlike the training images")
    assert [w.value for w in page.warning] == [DISCLAIMER, note]  # no other
    # The training image's evidence is itself, then two others.
    train = dataset.split("train").drop_duplicates("image_id")
    own = train.loc[train["path"] == str(familiar), "caption"].item()
    evidence = [c.value for c in page.get_by_key("evidence-1").caption]
    assert len(evidence) == 3 and evidence[0] == f"{own} (cosine 1.00)"


@pytest.fixture
def downloads(monkeypatch):
    """The files the page offers for download, by file name."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files = {}

    class Recording(MemoryMediaFileStorage):
        def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
            files[filename] = path_or_data
            return super().load_and_get_id(path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recording)
    return files


def test_the_csv_has_a_row_per_upload(run, page, downloads):
    root, run_dir, captioner, dataset = run
    paths = images(dataset, "test", 2)
    upload(page, [*paths, ("x.png", b"text")])
    assert page.download_button[0].label == "Download the captions (CSV)"
    table = pd.read_csv(io.BytesIO(downloads["captions.csv"]))
    assert list(table.columns) == app.CSV_COLUMNS
    assert table["path"].tolist() == [paths[0].name, paths[1].name, "x.png"]
    expected = captioner.describe(paths)
    for column in ("caption", "familiar"):
        assert table[column].tolist()[:2] == [getattr(e, column) for e in expected]
    for column in ("score", "familiarity"):
        assert table[column].tolist()[:2] == pytest.approx(
            [getattr(e, column) for e in expected], rel=1e-6
        )
    assert table.loc[2, "error"].startswith("x.png could not be captioned")
    assert table["error"].isna().tolist() == [True, True, False]


def test_the_command_checks_the_run_folder_first(tmp_path, capsys):
    assert cli.main(["app", "--run", str(tmp_path)]) == 2
    assert "is not a radcap run folder" in capsys.readouterr().err


def test_the_command_says_how_to_install_streamlit_when_it_is_missing(
    run, monkeypatch, capsys
):
    find_spec = app.importlib.util.find_spec
    monkeypatch.setattr(
        app.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "streamlit" else find_spec(name, *a),
    )
    assert cli.main(["app", "--run", str(run[1])]) == 2
    err = capsys.readouterr().err
    assert "Streamlit is not installed" in err and "pip install" in err


def test_the_command_serves_the_page_on_this_machine_only(run):
    argv, env = app.streamlit_command(run[1])
    assert argv[1:5] == ["-m", "streamlit", "run", str(app.PAGE)]
    flags = dict(zip(argv[5::2], argv[6::2]))
    assert flags == {
        "--server.address": "127.0.0.1",
        "--server.port": "8501",
        "--server.headless": "true",
        "--browser.gatherUsageStats": "false",
        "--server.maxUploadSize": "50",
        "--server.fileWatcherType": "none",
        "--client.toolbarMode": "viewer",
    }
    assert env[app.RUN_ENV] == str(run[1].resolve()) and app.ROOT_ENV not in env
    assert app.run_root(run[1], run[2].config) == run[0].resolve()


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class Served:
    """`radcap app` serving the run, and a headless Chromium that opened its page.

    Both start in a thread before the module's first test, so that the
    server loads the run while the other tests run. `skip` says why there
    is no browser; `error` holds what went wrong otherwise.
    """

    def __init__(self, run_dir: Path, log: Path, retrieval: Path | None = None):
        self.server = self.driver = self.skip = self.error = None
        self.log, self.retrieval = log, retrieval
        self.thread = threading.Thread(target=self._start, args=(run_dir,))
        self.thread.start()

    def _start(self, run_dir: Path) -> None:
        try:
            self.driver, self.skip = browser()
            if self.driver is None:
                return
            self.server, url = start_serving(run_dir, self.log, self.retrieval)
            self.driver.get(url)
        except Exception as err:  # re-raised in the browser test
            self.error = err

    def stop(self) -> None:
        self.thread.join()
        if self.driver is not None:
            self.driver.quit()
        if self.server is not None:
            self.server.terminate()  # radcap alone: it ends its server
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            stop(self.server)


def start_serving(run_dir: Path, log: Path, retrieval=None, timeout: float = 90):
    """`(process, url)`: `radcap app` on a free port, once its page answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "radcap", "app", "--run", str(run_dir)]
    command += ["--retrieval", str(retrieval)] if retrieval else []
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, that `stop` can end
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"radcap app stopped:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.2)  # polls the page: it answers within seconds
    stop(server)
    raise RuntimeError(f"radcap app did not answer:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """End whatever is left of a `start_serving` process group."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_stop_signal_to_the_command_stops_its_server(run, signum, tmp_path):
    server, url = start_serving(run[1], tmp_path / "server.log")
    try:
        server.send_signal(getattr(signal, signum))  # to radcap alone
        assert server.wait(timeout=60) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(server.pid, 0)  # nothing left in its process group
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 5)
    finally:
        stop(server)


def test_a_killed_command_takes_its_server_with_it(run, tmp_path):
    server, url = start_serving(run[1], tmp_path / "server.log")
    address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    try:
        server.kill()  # SIGKILL: radcap app cannot pass it on
        assert server.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(address, 5).close()
            except ConnectionRefusedError:
                break
            time.sleep(0.2)  # the server takes a moment to stop
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, 5)
    finally:
        stop(server)


def browser():
    """`(driver, None)`: headless Chromium under selenium, or `(None, why not)`."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return None, (
            f"no {CHROMIUM} or {CHROMEDRIVER} (Debian: apt-get install chromium "
            "chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1400")
    try:
        return webdriver.Chrome(options, webdriver.ChromeService(CHROMEDRIVER)), None
    except WebDriverException as err:
        return None, f"Chromium did not start: {err.msg}"


def tiny_retrieval_run(run, folder: Path) -> Path:
    """A dual encoder of one epoch on the tiny run's cached features, in `folder`
    (not beside the shared run, which other modules read)."""
    from tiny_run import tiny_config

    from radcap.retrieval.train import train_retrieval

    root, _, _, dataset = run
    config = tiny_config().replace(
        name="tiny-retrieval", checkpoints_dir=str(folder), batch_size=8, epochs=1
    )
    train_retrieval(config, dataset, root, verbose=False)
    return config.run_dir(root)


@pytest.fixture(scope="module", autouse=True)
def served(run, tmp_path_factory):
    retrieval = tiny_retrieval_run(run, tmp_path_factory.mktemp("retrieval"))
    log = tmp_path_factory.mktemp("served") / "server.log"
    served = Served(run[1], log, retrieval)
    yield served
    served.stop()


def test_a_browser_uploads_an_image_and_reads_its_caption(run, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    root, run_dir, captioner, dataset = run
    image = images(dataset, "test", 1)[0]
    expected = str(captioner.caption([image])[0])
    served.thread.join()
    if served.error is not None:
        raise served.error
    if served.driver is None:
        pytest.skip(f"no browser: {served.skip}")
    wait = WebDriverWait(served.driver, TIMEOUT)
    chooser = wait.until(
        ready.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))
    )
    chooser.send_keys(str(image))
    shown = wait.until(
        ready.visibility_of_element_located((By.CSS_SELECTOR, ".st-key-caption-0"))
    )
    assert shown.text == expected
    served.driver.save_screenshot(str(tmp_path / "app.png"))
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_without_a_retrieval_run_the_search_tab_says_how_to_make_one(run, page):
    message = app_search.absent_message(run[1])
    assert "radcap retrieval --preset demo" in message
    assert message in [info.value for info in page.info]


def test_a_browser_searches_the_dataset_with_a_text(run, served):
    """After the upload test, in the same page: the search tab shows the
    retrieval run's best images for a text, with their captions, in order."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from radcap.retrieval.retriever import Retriever

    dataset = run[3]
    query = f"{dataset.split('test')['caption'].iloc[0]} zzzq"
    expected = Retriever.load(served.retrieval).search_text(query, k=app_search.K)
    served.thread.join()
    if served.error is not None:
        raise served.error
    if served.driver is None:
        pytest.skip(f"no browser: {served.skip}")
    driver, wait = served.driver, WebDriverWait(served.driver, TIMEOUT)
    tab = "//*[@role='tab' and contains(., 'Search the dataset')]"
    wait.until(ready.element_to_be_clickable((By.XPATH, tab))).click()
    box = wait.until(
        ready.visibility_of_element_located((By.CSS_SELECTOR, ".st-key-query input"))
    )
    box.send_keys(query, Keys.ENTER)
    last = f".st-key-hit-{len(expected) - 1}"
    wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, last)))
    shown = [
        driver.find_element(By.CSS_SELECTOR, f".st-key-hit-{i}").text
        for i in range(len(expected))
    ]
    assert len(expected) == app_search.K
    for text, (caption, score) in zip(shown, zip(expected.caption, expected.score)):
        assert text.endswith(f"{caption} (cosine {score:.2f})"), (text, caption)
    images = driver.find_elements(By.CSS_SELECTOR, ".st-key-search-results img")
    assert len(images) == len(expected)
    assert "Not in the vocabulary, left out: zzzq" in driver.page_source
