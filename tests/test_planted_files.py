"""radcap never deletes or changes a file it did not write.

Every temporary file radcap writes is named by `radcap.core.files.partial_path`
and records its writer's pid; only such names of dead writers are ever
removed as leftovers. The lock file has a radcap name of its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radcap.core import files, locks

# Names a user (or another program) may plausibly give a file, including
# names that look like the temporaries of earlier radcap versions.
PLANTED = [
    ".notes.20250101",
    ".bashrc.original",
    ".lock",
    "notes.txt",
    ".tmp12345678",
    "x.keras.tmp",
    "backup.bak",
    ".best.keras.abcd1234.keras",
    ".metrics.json.k3j_x9q2.json",
    ".export.partial-1",
    ".demo.copy",
]


def plant(folder: Path) -> dict[Path, bytes]:
    """Put every planted name in `folder` and in a subfolder `mine/` of it."""
    planted = {}
    for where in (folder, folder / "mine"):
        where.mkdir(parents=True, exist_ok=True)
        for name in PLANTED:
            path = where / name
            content = f"user data: {path}\n".encode()
            path.write_bytes(content)
            planted[path] = content
    return planted


def assert_intact(planted: dict[Path, bytes]) -> None:
    changed = [str(p) for p, data in planted.items() if not p.is_file()]
    changed += [
        str(p) for p, data in planted.items() if p.is_file() and p.read_bytes() != data
    ]
    assert changed == []


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- the files module ----------------------------------------------------------


def test_taking_a_folder_lock_leaves_user_files_alone(tmp_path):
    folder = tmp_path / "d"
    planted = plant(folder)
    planted.update(plant(folder / "sub"))
    with files.folder_lock(folder, "run folder"):
        pass
    assert_intact(planted)
    lock = folder / files.LOCK_FILE
    assert lock.name == ".radcap.lock" and lock.read_text() == str(os.getpid())


@pytest.mark.parametrize("lock", [files.folder_lock, locks.read_lock])
def test_a_lock_file_that_is_a_link_or_no_file_is_refused_and_nothing_written(
    tmp_path, lock
):
    folder, target = tmp_path / "run", tmp_path / "notes.txt"
    folder.mkdir()
    target.write_text("user data")
    (folder / files.LOCK_FILE).symlink_to(target)
    (folder / ".dangling.lock").symlink_to(tmp_path / "nowhere")
    with pytest.raises(files.LockError, match=r"run/\.radcap\.lock is a symbolic link"):
        with lock(folder, "run folder"):
            pass
    assert target.read_text() == "user data"
    (folder / files.LOCK_FILE).unlink()
    (folder / ".dangling.lock").rename(folder / files.LOCK_FILE)
    with pytest.raises(files.LockError, match="is a symbolic link"):
        with lock(folder, "run folder"):
            pass
    assert not (tmp_path / "nowhere").exists()
    (folder / files.LOCK_FILE).unlink()
    (folder / files.LOCK_FILE).mkdir()
    with pytest.raises(files.LockError, match="is not a file"):
        with lock(folder, "run folder"):
            pass
    (folder / files.LOCK_FILE).rmdir()
    os.mkfifo(folder / files.LOCK_FILE)
    with pytest.raises(files.LockError, match="is not a file"):
        with lock(folder, "run folder"):
            pass


def test_a_partial_path_is_a_sibling_that_names_its_writer(tmp_path):
    target = tmp_path / "best.keras"
    path = files.partial_path(target)
    assert path.parent == tmp_path and path.suffix == ".keras"
    match = files.PARTIAL.fullmatch(path.name)
    assert match["target"] == "best.keras" and int(match["pid"]) == os.getpid()
    assert files.partial_path(target) != path  # a fresh name each time
    folder = files.partial_path(tmp_path / "export")
    assert files.PARTIAL.fullmatch(folder.name)["target"] == "export"
    assert folder.name.startswith(f".export.radcap-partial-{os.getpid()}-")
    assert not any(files.PARTIAL.fullmatch(name) for name in PLANTED)


@pytest.mark.parametrize(
    "name, suffix",
    [("é" * 120 + ".keras", ".keras"), ("e" * 255, ""), ("a." + "b" * 250, "")],
)
def test_a_partial_path_of_a_long_name_is_one_the_disk_takes(tmp_path, name, suffix):
    path = files.partial_path(tmp_path / name)
    assert len(path.name.encode()) <= 255
    path.write_text("being written")  # no "File name too long"
    match = files.PARTIAL.fullmatch(path.name)
    assert int(match["pid"]) == os.getpid() and (match["suffix"] or "") == suffix


def test_only_partials_of_dead_writers_are_removed(tmp_path):
    planted = plant(tmp_path)
    dead = dead_pid()
    mine = files.partial_path(tmp_path / "a.json")
    mine.write_text("being written")
    (tmp_path / "mine").mkdir(exist_ok=True)
    stale_file = tmp_path / "mine" / f".b.csv.radcap-partial-{dead}-0123abcd.csv"
    stale_file.write_text("left by a killed writer")
    stale_folder = tmp_path / f".export.radcap-partial-{dead}-89abcdef"
    (stale_folder / "variables").mkdir(parents=True)
    (stale_folder / "saved_model.pb").write_bytes(b"half")
    link = tmp_path / f".c.radcap-partial-{dead}-00000000"
    link.symlink_to(tmp_path / "notes.txt")

    shallow = files.remove_stale_partials(tmp_path, recursive=False)
    assert shallow == [stale_folder.name]
    removed = files.remove_stale_partials(tmp_path)
    assert removed == [stale_file.name]
    assert not stale_folder.exists() and not stale_file.exists()
    assert mine.read_text() == "being written"  # a live writer's (this one)
    assert link.is_symlink()  # never followed nor removed
    assert_intact(planted)


# --- every command that writes, on a tiny run ----------------------------------


class DrawnFeatures:
    """An extractor that draws each image's features from its path, in no time.

    The feature caches are written by radcap exactly as with VGG16; only
    the backbone's minute of arithmetic on two cores is left out.
    """

    def __init__(self, layers):
        self.layers = layers

    def run(self, paths, on_batch, start=0, max_batches=None, desc="", frame=None):
        from radcap.features.backbone import FEATURE_SHAPES

        for s in range(start, len(paths), 4):
            rngs = [np.random.default_rng(list(p.encode())) for p in paths[s : s + 4]]
            outputs = [
                np.stack([r.random(FEATURE_SHAPES[layer], np.float32) for r in rngs])
                for layer in self.layers
            ]
            on_batch(s, outputs, {})


@pytest.mark.slow
def test_no_command_touches_a_file_it_did_not_write(tmp_path, monkeypatch):
    """Files of yours in every folder radcap writes to survive every command.

    The controls, the export and the captions run the tiny stand-in for
    VGG16 (tests/tiny_run.py): which files a command writes does not depend
    on the backbone's weights.
    """
    from tiny_run import patch_tiny_backbone

    from radcap.core.config import preset
    from radcap.data.demo import make_demo
    from radcap.data.layouts import load_demo
    from radcap.decoding.captioner import Captioner
    from radcap.evaluation import evaluate
    from radcap.features.backbone import layers_for, shared_extractor
    from radcap.features.cache import cache_dir, extract
    from radcap.models import runs
    from radcap.serving.export import export
    from radcap.training.resume import copy_run
    from radcap.training.train import add_familiarity, train

    root = tmp_path / "root"
    config = preset(
        "demo",
        name="tiny",
        demo_size=20,
        epochs=1,
        early_stopping=0,
        units=16,
        embed_dim=8,
        extract_batch_size=4,
    )
    run_dir = config.run_dir(root)
    work = tmp_path / "work"  # where the run is copied to go on with it
    folders = [root, root / "data/demo", run_dir, run_dir / runs.BACKUP]
    folders += [run_dir / runs.LOGS, run_dir / runs.CONTROLS, tmp_path / "exports"]
    folders += [cache_dir(config, layer, root) for layer in layers_for(config)]
    folders += [work, work / "checkpoints"]
    planted = {}
    for folder in folders:
        planted.update(plant(folder))

    patch_tiny_backbone(monkeypatch)
    make_demo(root / "data/demo", n=20, seed=0)
    dataset = load_demo(root / "data/demo")
    extractor = DrawnFeatures(layers_for(config))
    for split in ("train", "validation", "test"):
        extract(config, dataset.images(split), split, root, extractor=extractor)
    train(config, dataset, root, verbose=False)
    metrics = evaluate(
        run_dir, root, dataset=dataset, beams=[1], meteor=False, verbose=False
    )
    add_familiarity(run_dir, root, verbose=False)
    out = export(run_dir, tmp_path / "exports" / "model")
    copied = copy_run(run_dir, work, verbose=False)
    images = dataset.images("test")["path"].tolist()[:2]
    backbone = shared_extractor(config, more=True)  # the controls' backbone
    captions = Captioner.load(copied.run_dir(work), extractor=backbone).caption(images)

    assert_intact(planted)
    assert metrics["images"] > 0 and len(captions) == 2
    assert (out / "saved_model.pb").is_file()
    assert (copied.run_dir(work) / runs.MODEL).is_file()
    # Nothing of radcap's own was left half-written either.
    leftovers = [str(p) for p in tmp_path.rglob("*") if files.PARTIAL.fullmatch(p.name)]
    assert leftovers == []
