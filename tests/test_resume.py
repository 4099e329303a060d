"""Going on with a run elsewhere: `radcap.training.resume.copy_run`, then training.

The story of a Kaggle notebook: a session trains in its working folder A
and stops mid-training; what A held comes back as a read-only input; the
next session copies the run folder into a fresh working folder B (whose data
and feature caches are there again) and trains on. The result must be the
run that was never stopped: the same history, best epoch and validation
loss. Dropout is off in these runs: its random draws are the one part of
training that a resume does not restore (see `radcap.training.train`), and with it
on, a continued run is equal to an uninterrupted one only in distribution.

The refusals and the crash safety of the copy are tested on run folders made
by hand (no training).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from forked import shared

from radcap.core import files
from radcap.core.config import preset
from radcap.data import load
from radcap.data.images import load_image
from radcap.features.cache import extract
from radcap.models import runs
from radcap.training.resume import copy_run
from radcap.training.train import train

SETTINGS = dict(
    demo_size=20,  # 14 train and 3 validation images: VGG16 runs over 17
    epochs=3,
    early_stopping=0,
    units=32,
    embed_dim=16,
    batch_size=4,  # four steps per epoch: Adam's state matters after a resume
    extract_batch_size=8,
    dropout=0.0,
)


class StopInSecondEpoch(keras.callbacks.Callback):
    """Stops training after the first batch of the second epoch (a disconnect)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1:
            raise KeyboardInterrupt


class Epochs(keras.callbacks.Callback):
    """Records the epochs that this fit trained (0-based)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def history(root: Path) -> pd.DataFrame:
    return pd.read_csv(preset("demo", **SETTINGS).run_dir(root) / runs.HISTORY)


class PixelBackbone:
    """A stand-in for VGG16 at no cost: an image's features are its pixels.

    Training reads the feature caches only; what made them does not matter
    to a resume, and VGG16 over the images would be most of this test's time.
    """

    def run(self, paths, on_batch, start=0, max_batches=None, desc="", frame=None):
        for first in range(start, len(paths), 8):
            pixels = np.stack([load_image(p)[::7, ::7] for p in paths[first:][:8]])
            flat = pixels.reshape(len(pixels), -1)  # (n, 3072)
            fc2 = np.concatenate([flat, flat[:, :1024]], axis=1)  # (n, 4096)
            on_batch(first, [fc2, flat[:, :1472]], {})  # block means: (n, 1472)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A working folder with the demo's data and features, and a run never stopped."""
    root = tmp_path_factory.mktemp("reference")
    config = preset("demo", **SETTINGS)
    dataset = load(config, root)
    for split in ("train", "validation"):
        extract(config, dataset.images(split), split, root, extractor=PixelBackbone())
    summary = train(config, root=root, verbose=False)
    return root, summary


@pytest.fixture(scope="module")
def kept(reference, tmp_path_factory):
    """A working folder A stopped in its second epoch, as Kaggle keeps it.

    A itself is deleted: nothing that goes on later can read from it.
    """
    root, _ = reference
    a = tmp_path_factory.mktemp("session-1") / "working"
    for folder in ("data", "features"):  # as notebooks 01 and 02 make them
        shutil.copytree(root / folder, a / folder)
    config = preset("demo", **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        train(config, root=a, callbacks=[StopInSecondEpoch()], verbose=False)
    assert history(a)["epoch"].tolist() == [0]  # one epoch finished
    assert runs.backup_path(config.run_dir(a), 0).is_file()
    output = tmp_path_factory.mktemp("kaggle-input") / "session-1-output"
    shutil.copytree(a, output)
    shutil.rmtree(a)
    read_only(output / "checkpoints")
    return output


def read_only(folder: Path) -> None:
    """Take away every write permission below `folder` (a Kaggle input)."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.mark.slow
def test_a_run_copied_to_another_working_folder_ends_as_if_never_stopped(
    reference, kept, tmp_path, capsys
):
    root, summary = reference
    b = tmp_path / "session-2"
    for folder in ("data", "features"):
        shutil.copytree(kept / folder, b / folder)
    source = kept / "checkpoints" / "demo"

    config = copy_run(source, b)
    assert config == preset("demo", **SETTINGS)
    run_dir = config.run_dir(b)
    assert "Copied run 'demo'" in capsys.readouterr().out
    copied = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    brought = [str(p.relative_to(source)) for p in source.rglob("*")]
    assert files.LOCK_FILE in brought  # A's lock came along, and is not copied
    assert copied == sorted(brought)
    assert os.access(run_dir / runs.HISTORY, os.W_OK)  # writable, unlike the input

    epochs = Epochs()
    continued = train(config, root=b, callbacks=[epochs], verbose=True)
    assert "continuing at epoch 2 from" in capsys.readouterr().out
    assert epochs.seen == [1, 2]  # went on: the first epoch was not trained again
    expected, got = history(root), history(b)
    assert got["epoch"].tolist() == expected["epoch"].tolist() == [0, 1, 2]
    assert got["val_loss"].tolist() == pytest.approx(
        expected["val_loss"].tolist(), abs=1e-6
    )
    assert continued["best_epoch"] == summary["best_epoch"]
    assert continued["best_val_loss"] == pytest.approx(
        summary["best_val_loss"], abs=1e-6
    )
    print(
        f"\nreference: best epoch {summary['best_epoch']}, val_loss "
        f"{expected['val_loss'].tolist()}\ncontinued: best epoch "
        f"{continued['best_epoch']}, val_loss {got['val_loss'].tolist()}"
    )

    # The notebook runs again in the same session: the run here is kept.
    assert copy_run(source, b) == config
    assert "going on with it, nothing copied" in capsys.readouterr().out
    assert runs.is_trained(run_dir)


# --- run folders made by hand ---------------------------------------------------


def fake_run(folder: Path, epochs: int, **changes) -> Path:
    """A run folder with a config and `epochs` rows of history (no model)."""
    config = preset("demo", **{**SETTINGS, **changes})
    folder.mkdir(parents=True)
    config.save(folder / runs.CONFIG)
    (folder / runs.VOCAB).write_text("{}")
    if epochs:
        rows = [{"epoch": e, "loss": 1.0, "val_loss": 2.0 - e} for e in range(epochs)]
        runs.write_history(folder, rows)
        (folder / runs.BACKUP).mkdir()
        runs.backup_path(folder, epochs - 1).write_bytes(b"state")
    return folder


def listing(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != files.LOCK_FILE
    }


def test_a_read_only_run_folder_is_copied_whole_and_writable(tmp_path):
    source = fake_run(tmp_path / "input" / "demo", epochs=2)
    read_only(source)
    root = tmp_path / "work"
    config = copy_run(source, root, verbose=False)
    run_dir = root / "checkpoints" / "demo"
    assert config.run_dir(root) == run_dir
    assert listing(run_dir) == listing(source)
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["demo"]
    runs.write_history(run_dir, [{"epoch": 0, "val_loss": 1.0}])  # writable


def test_what_is_not_a_run_folder_is_refused_with_what_to_pass(tmp_path):
    with pytest.raises(runs.RunError, match="does not exist or is not a folder"):
        copy_run(tmp_path / "nowhere", tmp_path / "work")
    output = tmp_path / "output"
    fake_run(output / "checkpoints" / "demo", epochs=1)
    with pytest.raises(runs.RunError) as err:
        copy_run(output, tmp_path / "work")
    message = str(err.value)
    assert f"{output} is not a radcap run folder: it has no config.json" in message
    assert f"It holds run folders: {output / 'checkpoints' / 'demo'}; pass" in message
    assert not (tmp_path / "work").exists()


def test_another_run_in_the_target_folder_is_never_overwritten(tmp_path):
    root = tmp_path / "work"
    here = fake_run(root / "checkpoints" / "demo", epochs=1, units=64)
    before = listing(here)
    source = fake_run(tmp_path / "input" / "demo", epochs=2)
    with pytest.raises(runs.RunError, match="already holds another run .*units"):
        copy_run(source, root)
    assert listing(here) == before

    (here / runs.CONFIG).unlink()  # files, but no run
    with pytest.raises(runs.RunError, match="holds files but no config.json"):
        copy_run(source, root)


def test_the_same_run_here_is_kept_unless_the_source_is_further_on(tmp_path):
    root = tmp_path / "work"
    here = fake_run(root / "checkpoints" / "demo", epochs=2)
    source = fake_run(tmp_path / "input" / "demo", epochs=1)
    before = listing(here)
    assert copy_run(source, root, verbose=False).name == "demo"
    assert listing(here) == before  # kept: it is further on than the source

    further = fake_run(tmp_path / "later" / "demo", epochs=3)
    with pytest.raises(runs.RunError, match="2 finished epochs, fewer than the 3"):
        copy_run(further, root)
    assert listing(here) == before


def test_a_run_being_trained_is_not_copied_over(tmp_path):
    source = fake_run(tmp_path / "input" / "demo", epochs=1)
    root = tmp_path / "work"
    run_dir = root / "checkpoints" / "demo"
    with files.folder_lock(run_dir, "run folder"):  # as `radcap train` holds it
        with pytest.raises(files.LockError, match="in use by another radcap"):
            copy_run(source, root)
    assert os.listdir(run_dir) == [files.LOCK_FILE]


_COPY = (
    "import sys; from radcap.training.resume import copy_run; copy_run(*sys.argv[1:])"
)


def subprocess_copy(source, root, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != "RADCAP_KILL_AT"}
    if kill_at:
        env["RADCAP_KILL_AT"] = kill_at
    command = [sys.executable, "-c", _COPY, str(source), str(root)]
    return shared().run(command, env=env, timeout=120)  # a real process, forked


@pytest.mark.parametrize("kill_at", ["copy:history.csv", "copy:rename"])
def test_a_copy_killed_midway_leaves_no_run_and_the_next_one_finishes(
    tmp_path, kill_at
):
    source = fake_run(tmp_path / "input" / "demo", epochs=2)
    root = tmp_path / "work"
    run_dir = root / "checkpoints" / "demo"
    killed = subprocess_copy(source, root, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # No run folder that `radcap train` could take for a run: at most its lock.
    assert not run_dir.exists() or os.listdir(run_dir) == [files.LOCK_FILE]
    hidden = [p.name for p in (root / "checkpoints").iterdir() if p != run_dir]
    assert len(hidden) == 1 and files.PARTIAL.fullmatch(hidden[0])["target"] == "demo"

    again = subprocess_copy(source, root)
    assert again.returncode == 0, again.stderr
    assert listing(run_dir) == listing(source)
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["demo"]


def test_links_and_special_files_are_named_and_never_followed(tmp_path, capsys):
    source = fake_run(tmp_path / "input" / "demo", epochs=1)
    before = listing(source)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for publishing")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"x")
    (source / "passwd").symlink_to(secret)  # a file outside
    (source / "etc").symlink_to(outside)  # a folder outside
    (source / "again").symlink_to(".")  # a loop
    (source / "gone").symlink_to(tmp_path / "nowhere")  # broken
    os.mkfifo(source / "pipe")
    dead = source / f".{runs.EXPORT}.radcap-partial-999999999-0123abcd"
    dead.mkdir()  # an export killed in the earlier session
    (dead / "saved_model.pb").write_bytes(b"half")
    root = tmp_path / "work"

    config = copy_run(source, root, verbose=False)
    run_dir = config.run_dir(root)
    assert listing(run_dir) == before
    assert not [p for p in run_dir.rglob("*") if p.is_symlink()]
    link = "links are not followed, copy what it points to into the run folder"
    partial = "a partial file of an unfinished radcap write, not part of the run"
    assert sorted(capsys.readouterr().err.splitlines()) == sorted(
        [
            f"Not copied: {source / 'again'}: a symbolic link (to .); {link} if "
            "the run needs it.",
            f"Not copied: {source / 'etc'}: a symbolic link (to {outside}); {link}"
            " if the run needs it.",
            f"Not copied: {source / 'gone'}: a symbolic link (to "
            f"{tmp_path / 'nowhere'}); {link} if the run needs it.",
            f"Not copied: {source / 'passwd'}: a symbolic link (to {secret}); "
            f"{link} if the run needs it.",
            f"Not copied: {source / 'pipe'}: not a regular file (a device, pipe or "
            "socket).",
            f"Not copied: {dead}: {partial}.",
        ],
    )


@pytest.mark.parametrize("place", ["../escaped", "ABSOLUTE"])
def test_a_config_that_puts_the_run_outside_the_working_folder_is_refused(
    tmp_path, place
):
    escaped = tmp_path / "escaped"
    place = str(escaped) if place == "ABSOLUTE" else place
    source = fake_run(tmp_path / "input" / "demo", epochs=1, checkpoints_dir=place)
    root = tmp_path / "work"
    root.mkdir()
    with pytest.raises(runs.RunError) as err:
        copy_run(source, root)
    assert str(err.value) == (
        f"RESUME_FROM: the config.json of {source} puts the run in "
        f"{escaped / 'demo'} (checkpoints_dir={place!r}), outside the working "
        f"folder {root}, so it is not copied. Copy the run folder into "
        f"{root / 'checkpoints'} yourself and set its checkpoints_dir to "
        '"checkpoints".'
    )
    assert not escaped.exists() and os.listdir(root) == []


def test_a_run_whose_model_or_config_is_a_link_is_not_copied_half(tmp_path):
    source = fake_run(tmp_path / "input" / "demo", epochs=1)
    (source / runs.VOCAB).rename(tmp_path / "vocab.json")
    (source / runs.VOCAB).symlink_to(tmp_path / "vocab.json")
    root = tmp_path / "work"
    root.mkdir()
    with pytest.raises(runs.RunError) as err:
        copy_run(source, root)
    assert str(err.value) == (
        f"RESUME_FROM: {source / runs.VOCAB} is a symbolic link (to "
        f"{tmp_path / 'vocab.json'}), and the run copy follows no link. Copy the "
        f"run folder with its links resolved yourself (cp -rL {source} <folder>) "
        "and pass the copy."
    )
    assert os.listdir(root) == []


def test_a_checkpoints_folder_the_user_linked_to_another_disk_takes_the_copy(
    tmp_path,
):
    source = fake_run(tmp_path / "input" / "demo", epochs=1)
    disk, root = tmp_path / "disk", tmp_path / "work"
    disk.mkdir()
    root.mkdir()
    (root / "checkpoints").symlink_to(disk)
    config = copy_run(source, root, verbose=False)
    assert config.run_dir(root) == root / "checkpoints" / "demo"
    assert (root / "checkpoints").is_symlink()
    assert listing(disk / "demo") == listing(source)


@pytest.mark.parametrize("pause_at", ["copy:rename", "copy:swapped"])
def test_no_second_process_takes_the_run_folder_while_a_copy_moves_in(
    tmp_path, pause_at
):
    source = fake_run(tmp_path / "input" / "demo", epochs=2)
    root = tmp_path / "work"
    run_dir = root / "checkpoints" / "demo"
    env = {k: v for k, v in os.environ.items() if k != "RADCAP_KILL_AT"}
    first = subprocess.Popen(
        [sys.executable, "-c", _COPY, str(source), str(root)],
        env={**env, "RADCAP_PAUSE_AT": pause_at},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout.readline() == f"paused at {pause_at}\n", first.stderr
        # This process comes second, as a notebook run twice or `radcap train`.
        with pytest.raises(files.LockError, match="in use by another radcap"):
            copy_run(source, root, verbose=False)
        with pytest.raises(files.LockError, match="in use by another radcap"):
            with files.folder_lock(run_dir, "run folder"):
                pass
        out, err = first.communicate("go\n", timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert "Copied run 'demo'" in out
    assert listing(run_dir) == listing(source)
    assert os.listdir(root / "checkpoints") == ["demo"]


def test_where_folders_cannot_be_swapped_the_copy_still_lands_whole(
    tmp_path, monkeypatch
):
    import errno

    import radcap.training.resume

    def cannot(a, b):
        raise OSError(errno.EINVAL, "Invalid argument")  # NFS, or not Linux

    monkeypatch.setattr(radcap.training.resume, "swap_paths", cannot)
    source = fake_run(tmp_path / "input" / "demo", epochs=2)
    root = tmp_path / "work"
    run_dir = copy_run(source, root, verbose=False).run_dir(root)
    assert listing(run_dir) == listing(source)
    assert os.listdir(root / "checkpoints") == ["demo"]
