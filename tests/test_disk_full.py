"""A full disk: a clear message and exit 2, never a bus error; a rerun then completes.

The small disks are tmpfs mounts, which need root; elsewhere these tests skip
and say why. Data (and a feature cache for training) stay on the normal disk;
only the folder under test (a feature cache or a run folder) lives on the
small disk.
"""

import os
import subprocess

import numpy as np
import pytest
from forked import shared
from tiny_run import patch_tiny_backbone, tiny_command

from radcap.data.demo import make_demo
from radcap.models import runs

pytestmark = pytest.mark.slow

TINY = ["--set", "demo_size=40", "--set", "epochs=2", "--set", "early_stopping=0"]
TINY += ["--set", "units=32", "--set", "embed_dim=16", "--set", "extract_batch_size=8"]


@pytest.fixture
def disk(tmp_path):
    """`disk(size)` mounts a tmpfs of that size; `disk.resize(folder, size)`."""
    mounted = []

    def mount(size: str):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
        mounted.append(folder)
        return folder

    def resize(folder, size: str):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)

    mount.resize = resize
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def radcap(*args, root):
    """`python -m radcap *args --root root`, a real process (forked: tests/forked.py).

    A process of its own, so that a bus error would end it and not pytest.
    The backbone is the tiny stand-in: a full disk does not depend on VGG16.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("RADCAP_KILL_AT", None)
    return shared().run(tiny_command(*args, "--root", root), env=env)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The demo data and its fc2 cache on the normal disk, shared by the tests."""
    root = tmp_path_factory.mktemp("disk-full")
    make_demo(root / "data/demo", n=40, seed=0)
    done = radcap("extract", *TINY, root=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def test_extraction_onto_a_full_disk_says_so_and_resumes(disk, root):
    small = disk("200k")  # 40 images need 330 KB of fc2 features
    args = ["extract", *TINY, "--set", f"features_dir={small}"]
    first = radcap(*args, root=root)
    assert first.returncode == 2, first.stderr[-2000:]
    assert "Not enough disk space for the train features" in first.stderr
    assert "Traceback" not in first.stderr
    disk.resize(small, "8m")  # space freed
    again = radcap(*args, root=root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert np.load(small / "demo/vgg16-fc2/train.npy").shape == (28, 4096)


def test_a_write_that_fills_the_disk_is_an_error_not_a_bus_error(
    disk, root, monkeypatch
):
    import radcap.features.cache
    from radcap.core.config import preset
    from radcap.core.files import DiskFullError
    from radcap.data import load

    small = disk("150k")
    patch_tiny_backbone(monkeypatch)
    monkeypatch.setattr(radcap.features.cache, "check_free_space", lambda *a: None)
    config = preset("demo", demo_size=40, extract_batch_size=8, features_dir=str(small))
    images = load(config, root).images("train")
    with pytest.raises(DiskFullError, match="The disk is full: could not write"):
        radcap.features.cache.extract(config, images, "train", root)
    disk.resize(small, "8m")
    cached = radcap.features.cache.extract(config, images, "train", root)
    assert cached["fc2"].array.shape == (28, 4096) and cached["fc2"].array[-1].any()


def test_training_onto_a_full_disk_says_so_and_a_rerun_completes(disk, root):
    small = disk("2m")  # the checks ask for about 10 MB more than the files
    args = ["train", *TINY, "--set", f"checkpoints_dir={small}"]
    first = radcap(*args, root=root)
    assert first.returncode == 2, first.stderr[-2000:]
    assert "Not enough disk space for the training checkpoints" in first.stderr
    assert "Traceback" not in first.stderr
    disk.resize(small, "64m")
    again = radcap(*args, root=root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert runs.is_trained(small / "demo")


def test_evaluation_onto_a_full_disk_leaves_no_empty_file(disk, root):
    small = disk("64m")
    args = [*TINY, "--set", f"checkpoints_dir={small}"]
    assert radcap("train", *args, root=root).returncode == 0
    filler = small / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    evaluate = ["evaluate", "--run", str(small / "demo"), "--no-controls"]
    evaluate += ["--no-meteor"]
    first = radcap(*evaluate, root=root)
    assert first.returncode == 2, first.stderr[-2000:]
    assert "The disk is full" in first.stderr and "Traceback" not in first.stderr
    assert not (small / "demo" / runs.METRICS).exists()
    assert not [p for p in (small / "demo").iterdir() if p.name.startswith(".m")]
    filler.unlink()
    again = radcap(*evaluate, root=root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (small / "demo" / runs.METRICS).stat().st_size > 0


def test_an_export_onto_a_full_disk_says_so_before_it_traces(disk, tmp_path):
    from tiny_run import radcap_tiny, untrained_run

    small = disk("1m")  # the check asks for the weights and 32 MB for the graph
    run_dir = untrained_run(tmp_path)
    out = small / "export"
    done = radcap_tiny("export", "--run", str(run_dir), "--out", str(out))
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "exit 2"
    assert "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert error.startswith(
        "radcap export: error: [Errno 28] Not enough disk space for the export in "
        f"{small}: it needs about 34 MB and 1 MB are free."
    )
    assert os.listdir(small) == []


def test_an_export_that_fills_the_disk_is_a_disk_full_error(
    disk, tmp_path, monkeypatch
):
    from tiny_run import tiny_backbone, untrained_run

    import radcap.serving.export
    from radcap.core.files import DiskFullError

    small = disk("400k")  # the tiny SavedModel takes 780 KB
    run_dir = untrained_run(tmp_path)
    monkeypatch.setattr(radcap.serving.export, "check_free_space", lambda *a: None)
    monkeypatch.setattr(radcap.serving.export, "build_backbone", tiny_backbone)
    with pytest.raises(DiskFullError) as err:
        radcap.serving.export.export(run_dir, small / "export")
    assert str(err.value).startswith(
        f"[Errno 28] The disk is full: could not write {small / 'export'}. It "
        "needs about 34 MB;"
    )
    assert os.listdir(small) == []  # the partial export is gone
