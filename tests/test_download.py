"""Everything around the Kaggle download, offline: credentials, layout, unzip."""

import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from radcap.data import download, roco
from radcap.data.download import (
    DownloadError,
    check_roco_layout,
    download_roco,
    find_roco,
    kaggle_credentials,
    link_roco,
    unzip,
)

CAPTIONS = 'id,name,caption\nROCO_00002,PMC1_a.jpg," Axial CT.\n"\n'
LAYOUT = {
    "all_data/train/radiologytraindata.csv": CAPTIONS,
    "all_data/train/radiology/traindata.csv": CAPTIONS,
    "all_data/train/radiology/images/PMC1_a.jpg": "jpeg",
    "all_data/validation/radiologyvaldata.csv": CAPTIONS,
    "all_data/validation/radiology/images/PMC1_a.jpg": "jpeg",
    "all_data/test/radiology/testdata.csv": CAPTIONS,
    "all_data/test/radiology/images/PMC1_a.jpg": "jpeg",
}


def make_roco(root, skip=()):
    for name, text in LAYOUT.items():
        if not any(name.startswith(s) for s in skip):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    return root


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zipped:
        for name, text in members.items():
            zipped.writestr(name, text)
    return path


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """A home folder without Kaggle credentials and no Kaggle variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
        "KAGGLE_CONFIG_DIR",
        "XDG_CONFIG_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(roco, "KAGGLE_INPUT", tmp_path / "no-kaggle-input")
    return home


def test_credentials_from_env_kaggle_json_and_config_dir(
    no_credentials, tmp_path, monkeypatch
):
    assert kaggle_credentials() is None

    token = no_credentials / ".kaggle/kaggle.json"
    token.parent.mkdir()
    token.write_text(json.dumps({"username": "ana", "key": "0123abcd"}))
    assert kaggle_credentials() == {"username": "ana", "source": str(token)}

    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "kaggle.json").write_text(json.dumps({"username": "bo", "key": "k"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(other))
    assert kaggle_credentials() == {
        "username": "bo",
        "source": str(other / "kaggle.json"),
    }

    monkeypatch.setenv("KAGGLE_USERNAME", "cy")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    assert kaggle_credentials() == {
        "username": "cy",
        "source": "KAGGLE_USERNAME and KAGGLE_KEY",
    }


def test_a_broken_kaggle_json_is_named(no_credentials):
    token = no_credentials / ".kaggle/kaggle.json"
    token.parent.mkdir()
    token.write_text('{"username": "ana"}')
    with pytest.raises(DownloadError, match=f"{token} is not a Kaggle token"):
        kaggle_credentials()
    token.write_text("not json")
    with pytest.raises(DownloadError, match="Create New Token"):
        kaggle_credentials()


def test_layout_check_lists_what_is_missing(tmp_path):
    assert check_roco_layout(tmp_path / "nothing") == [
        f"{tmp_path / 'nothing'} (no such folder)"
    ]
    root = make_roco(tmp_path / "roco", skip=("all_data/test/",))
    (root / "all_data/validation/radiology/images/PMC1_a.jpg").unlink()
    assert check_roco_layout(root) == [
        "all_data/validation/radiology/images/ (empty)",
        "all_data/test/radiologytestdata.csv (or all_data/test/radiology/testdata.csv)",
        "all_data/test/radiology/images/",
    ]
    complete = make_roco(tmp_path / "complete")
    assert check_roco_layout(complete) == []
    assert check_roco_layout(complete / "all_data") == []


def test_find_roco_prefers_the_kaggle_input_then_the_local_folder(tmp_path):
    mount = make_roco(tmp_path / "kaggle/input/roco-dataset")
    local = make_roco(tmp_path / "data/roco")
    assert find_roco(local, kaggle_input=mount) == mount
    assert find_roco(local, kaggle_input=tmp_path / "absent") == local
    assert find_roco(tmp_path / "data", kaggle_input=tmp_path / "absent") is None
    # The original layout of razorx89/roco-dataset counts as a local copy too.
    original = tmp_path / "clone"
    (original / "data/test/radiology").mkdir(parents=True)
    (original / "data/test/radiology/captions.txt").write_text("ROCO_1\t A CT.\n")
    assert find_roco(original, kaggle_input=tmp_path / "absent") == original


def test_link_roco_points_the_dataset_folder_at_a_copy_elsewhere(tmp_path):
    found = make_roco(tmp_path / "kaggle/input/roco-dataset")
    dest = tmp_path / "work/data/roco"
    assert link_roco(found, dest) == dest and dest.resolve() == found
    other = make_roco(tmp_path / "mine")
    link_roco(other, dest)  # a link is replaced
    assert dest.resolve() == other
    dest.unlink()
    dest.mkdir()  # an empty folder, e.g. left by a failed download
    link_roco(found, dest)
    assert dest.resolve() == found and check_roco_layout(dest) == []
    dest.unlink()
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="already holds files.*Move"):
        link_roco(found, dest)
    assert (dest / "notes.txt").read_text() == "mine"


def test_unzip_builds_the_layout_and_refuses_escaping_members(tmp_path):
    archive = make_zip(tmp_path / "roco-dataset.zip", LAYOUT)
    assert unzip(archive, tmp_path / "out") == len(LAYOUT)
    assert check_roco_layout(tmp_path / "out") == []
    assert (tmp_path / "out/all_data/train/radiologytraindata.csv").read_text() == (
        CAPTIONS
    )

    evil = make_zip(tmp_path / "evil.zip", {"ok.txt": "x", "../escaped.txt": "x"})
    with pytest.raises(DownloadError, match="would land outside"):
        unzip(evil, tmp_path / "evil")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "evil/ok.txt").exists()

    (tmp_path / "cut.zip").write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DownloadError, match="interrupted download"):
        unzip(tmp_path / "cut.zip", tmp_path / "cut")


def test_no_credentials_gives_the_ways_out(no_credentials, tmp_path):
    with pytest.raises(DownloadError) as err:
        download_roco(tmp_path / "data/roco")
    message = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert message.startswith("No Kaggle API credentials found")
    for way in (
        "~/.kaggle/kaggle.json",
        "KAGGLE_USERNAME and KAGGLE_KEY",
        "Add Input > virajbagal/roco-dataset",
        str(tmp_path / "no-kaggle-input"),
        "demo",
    ):
        assert way in message
    assert not (tmp_path / "data/roco").exists()


def test_attached_kaggle_input_needs_no_download(no_credentials, tmp_path):
    mount = make_roco(tmp_path / "kaggle/input/roco-dataset")
    assert download_roco(tmp_path / "data/roco", kaggle_input=mount) == mount


class FakeApi:
    """Stands in for `KaggleApi`: "downloads" a zip the test built."""

    def __init__(self, archive):
        self.archive = archive
        self.calls = []

    def dataset_download_files(self, dataset, path, force, quiet):
        self.calls.append((dataset, path, force))
        (Path(path) / "roco-dataset.zip").write_bytes(self.archive)


def test_download_unzips_checks_stamps_and_is_idempotent(
    no_credentials, tmp_path, monkeypatch
):
    monkeypatch.setenv("KAGGLE_USERNAME", "ana")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    api = FakeApi(make_zip(tmp_path / "a.zip", LAYOUT).read_bytes())
    monkeypatch.setattr(download, "_kaggle_api", lambda: api)
    dest = tmp_path / "data/roco"

    assert download_roco(dest) == dest
    assert api.calls == [("virajbagal/roco-dataset", str(dest), False)]
    assert check_roco_layout(dest) == []
    assert (dest / ".complete").is_file()
    assert not (dest / "roco-dataset.zip").exists()

    assert download_roco(dest) == dest  # complete: not fetched again
    assert len(api.calls) == 1
    download_roco(dest, force=True)
    assert len(api.calls) == 2

    # An archive without the test split is reported, and not stamped complete.
    partial = {k: v for k, v in LAYOUT.items() if "/test/" not in k}
    api.archive = make_zip(tmp_path / "b.zip", partial).read_bytes()
    with pytest.raises(DownloadError, match="incomplete after the download"):
        download_roco(tmp_path / "other")
    assert not (tmp_path / "other/.complete").exists()


def test_rejected_credentials_become_a_download_error(
    no_credentials, tmp_path, monkeypatch
):
    class KaggleApi:  # like the real one without valid credentials
        def authenticate(self):
            raise SystemExit(1)

    extended = types.ModuleType("kaggle.api.kaggle_api_extended")
    extended.KaggleApi = KaggleApi
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, extended.__name__, extended)
    monkeypatch.setenv("KAGGLE_USERNAME", "ana")
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with pytest.raises(DownloadError, match="Kaggle did not accept the credentials"):
        download_roco(tmp_path / "data/roco")


def test_importing_radcap_download_does_not_import_kaggle():
    code = "import sys, radcap.data.download; print('kaggle' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
