"""Crash safety: kill a real `radcap train` at chosen moments, then run it again.

The kill is a SIGKILL sent by the process to itself through the test hook in
`radcap.core.files.kill_point` (env `RADCAP_KILL_AT`): no cleanup code runs, as
after a power cut or the OOM killer. After every kill, each file in the run
folder must be complete (the old version or the new one, never half of one),
and a plain rerun must finish the run: every file present and valid, the
history holding each epoch once, `best.keras` the state of the best epoch.

The demo data and its feature caches are made once per module by a complete
run (the reference), so each trial below only trains. Training the demo with
a fixed seed is deterministic, so epochs finished before a kill must match
the reference exactly.

Also: two trainers on one run folder (the lock), and unit tests of the
atomic writes, `read_json` and `folder_lock` in `radcap.core.files`.

Each `radcap` process is forked from one interpreter that has TensorFlow
imported (tests/forked.py): a real process, killed for real, without 7
CPU-seconds of imports before every kill and every rerun.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from forked import shared
from tiny_run import patch_tiny_backbone, tiny_command

from radcap.core import files
from radcap.models import runs

TIMEOUT = 300  # seconds for one `radcap train`; a healthy one takes 5-20 s
SETTINGS = (
    "demo_size=40",
    "epochs=3",
    "early_stopping=0",
    "units=32",
    "embed_dim=16",
    "extract_batch_size=8",
)
EPOCHS = 3
RUN_FILES = (runs.CONFIG, runs.VOCAB, runs.MODEL, runs.HISTORY, runs.TRAINING)
RUN_FILES += (runs.FAMILIARITY, runs.MODEL_CARD)
LOCK_MESSAGE = "is in use by another radcap process"


# --- running `radcap train` ---------------------------------------------------


def _env(kill_at: str | None = None) -> dict:
    env = dict(os.environ)
    env.pop("RADCAP_KILL_AT", None)  # never inherited: only the killed run has it
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if kill_at is not None:
        env["RADCAP_KILL_AT"] = kill_at
    return env


def _command(root: Path, run: str) -> list[str]:
    command = [sys.executable, "-m", "radcap", "train", "--root", str(root)]
    for setting in SETTINGS:
        command += ["--set", setting]
    return command + ["--run", run]


def radcap_train(root: Path, run: str, kill_at: str | None = None):
    """Run `radcap train` to its end (or its kill): the CompletedProcess."""
    return run_process(_command(root, run), _env(kill_at))


def run_process(command: list[str], env: dict, timeout: float = TIMEOUT):
    """`subprocess.run` of a `python -m radcap` (or script) command, forked."""
    return shared().run(command, env=env, timeout=timeout)


def _describe(result) -> str:
    return (
        f"exit status {result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}"
        f"\n--- stderr ---\n{result.stderr[-3000:]}"
    )


# --- what a run folder holds ----------------------------------------------------


def temporary_files(run_dir: Path) -> list[str]:
    """Leftovers of interrupted atomic writes (hidden files, the lock aside)."""
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob(".*")
        if p.is_file() and p.name != files.LOCK_FILE
    )


def history_epochs(run_dir: Path) -> list[int] | None:
    path = run_dir / runs.HISTORY
    return pd.read_csv(path)["epoch"].tolist() if path.exists() else None


def check_files_in_place_are_whole(run_dir: Path) -> None:
    """Every file at its real name is complete: the atomic-write promise."""
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        assert path.stat().st_size > 0, f"{path} is empty"
        if path.suffix == ".json":
            files.read_json(path)  # raises on a damaged file
        elif path.suffix == ".keras":
            assert runs.usable_model_file(path), f"{path} is not a complete .keras"
        elif path.name == runs.HISTORY:
            assert runs.read_history(run_dir, verbose=False) is not None, path


def validation_loss(run_dir: Path, root: Path) -> float:
    """The validation loss of the run's `best.keras`, computed as training does."""

    from radcap.data import load
    from radcap.features.splits import load_split
    from radcap.training.recipe import compile_captioner, split_batches

    config = runs.load_config(run_dir)
    vocab = runs.load_vocab(run_dir)
    split = load_split(config, load(config, root), "validation", root)
    batches = split_batches(split, vocab, config, shuffle=False)
    model = compile_captioner(runs.load_model(run_dir), config)
    return float(model.evaluate(batches.dataset(), verbose=0))


def check_complete_run(run_dir: Path, root: Path) -> pd.DataFrame:
    """Assert that `run_dir` is a finished, valid run folder; its history."""
    for name in RUN_FILES:
        path = run_dir / name
        assert path.is_file(), f"{name} is missing: {sorted(os.listdir(run_dir))}"
        assert path.stat().st_size > 0, f"{name} is empty (0 bytes)"
    check_files_in_place_are_whole(run_dir)
    assert not (run_dir / runs.BACKUP).exists(), "backup/ was not removed"

    history = pd.read_csv(run_dir / runs.HISTORY)
    assert history["epoch"].tolist() == list(range(EPOCHS))
    assert history["val_loss"].map(math.isfinite).all()
    summary = files.read_json(run_dir / runs.TRAINING)
    assert summary["epochs"] == EPOCHS and summary["epochs_run"] == EPOCHS
    assert summary["best_val_loss"] == pytest.approx(history["val_loss"].min())
    assert summary["best_epoch"] == int(history["val_loss"].idxmin()) + 1
    assert runs.load_config(run_dir).name == run_dir.name
    assert runs.load_vocab(run_dir).size == summary["vocab_size"]

    assert runs.usable_model_file(run_dir / runs.MODEL)
    with zipfile.ZipFile(run_dir / runs.MODEL) as archive:
        assert archive.testzip() is None
    # best.keras is the state of the best epoch, not of another one: its
    # validation loss is the one the history recorded for that epoch.
    assert validation_loss(run_dir, root) == pytest.approx(
        summary["best_val_loss"], rel=1e-5
    )
    return history


# --- the reference run and the trials -------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone_here():
    """The tiny stand-in for VGG16 wherever this module's tests run a backbone.

    Kills and files do not depend on VGG16's weights: the caches are
    extracted with the stand-in (`reference`), and the evaluations, in this
    process or another, caption the control images with it too.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch_tiny_backbone(patch)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A root with the demo data and feature caches, and an unkilled run's history."""
    root = tmp_path_factory.mktemp("crash")
    # Every split's features first (one backbone in one process), so that
    # the training runs and the evaluation trials find them cached.
    extract = tiny_command("extract", *_command(root, "reference")[4:])
    done = run_process(extract, _env())
    assert done.returncode == 0, _describe(done)
    result = radcap_train(root, "reference")
    assert result.returncode == 0, _describe(result)
    run_dir = root / "checkpoints" / "reference"
    history = check_complete_run(run_dir, root)
    assert temporary_files(run_dir) == []
    return root, history


def improvements(history: pd.DataFrame) -> list[int]:
    """The epochs whose validation loss improved, i.e. that wrote `best.keras`."""
    losses = history["val_loss"].tolist()
    return [e for e, v in enumerate(losses) if v < min(losses[:e], default=math.inf)]


@dataclasses.dataclass
class Point:
    """A kill point and where it falls."""

    id: str
    hook: str  # RADCAP_KILL_AT
    kept: int  # epochs in history.csv when the process dies
    temp: str | None  # the temporary file it leaves: "<folder>/.<name>." prefix
    missing: tuple[str, ...] = ()  # files not yet in place when it dies


def point(point_id: str, reference_history: pd.DataFrame) -> Point:
    """Resolve a kill point against the reference run (when best.keras is written)."""
    better = improvements(reference_history)
    if point_id == "mid-first-epoch":
        return Point(point_id, "epoch-0-batch-0", 0, None, (runs.MODEL, runs.HISTORY))
    if point_id == "best-epoch-0":
        assert better[0] == 0  # the first epoch always improves on nothing
        return Point(point_id, "write:best.keras", 1, ".best.keras.", (runs.MODEL,))
    if point_id == "backup-epoch-1":
        return Point(
            point_id,
            "write:epoch-1.keras",
            1,
            "backup/.epoch-1.keras.",
            ("backup/epoch-1.keras",),
        )
    if point_id == "history-epoch-1":
        return Point(point_id, "write:history.csv@2", 1, ".history.csv.")
    if point_id == "best-later-epoch":
        if len(better) < 2:
            pytest.skip(f"the reference run improved only in epoch {better}")
        return Point(
            point_id, f"write:best.keras@{len(better)}", better[-1] + 1, ".best.keras."
        )
    if point_id == "training-json":
        return Point(
            point_id, "write:training.json", EPOCHS, ".training.json.", (runs.TRAINING,)
        )
    raise KeyError(point_id)


POINTS = (
    "mid-first-epoch",
    "best-epoch-0",
    "backup-epoch-1",
    "history-epoch-1",
    "best-later-epoch",
    "training-json",
)


@dataclasses.dataclass
class Trial:
    point: Point
    run_dir: Path
    killed: subprocess.CompletedProcess
    after_kill: dict  # relative path -> size, right after the kill
    history_after_kill: list[int] | None
    temps_after_kill: list[str]
    whole_after_kill: str | None  # why a file in place was damaged, or None
    rerun: subprocess.CompletedProcess
    seconds: tuple[float, float]


def run_trial(root: Path, point_id: str, reference_history: pd.DataFrame) -> Trial:
    """Kill a `radcap train` at the point, look at the run folder, rerun it."""
    where = point(point_id, reference_history)
    run_dir = root / "checkpoints" / point_id
    started = time.perf_counter()
    killed = radcap_train(root, point_id, kill_at=where.hook)
    middle = time.perf_counter()
    sizes = {
        str(p.relative_to(run_dir)): p.stat().st_size
        for p in run_dir.rglob("*")
        if p.is_file()
    }
    try:
        check_files_in_place_are_whole(run_dir)
        whole = None
    except (AssertionError, ValueError) as err:
        whole = str(err)
    history = history_epochs(run_dir) if whole is None else None
    temps = temporary_files(run_dir)
    rerun = radcap_train(root, point_id)
    seconds = (middle - started, time.perf_counter() - middle)
    print(
        f"\n{point_id} ({where.hook}): killed run {seconds[0]:.1f} s "
        f"(exit {killed.returncode}), rerun {seconds[1]:.1f} s "
        f"(exit {rerun.returncode})"
    )
    return Trial(where, run_dir, killed, sizes, history, temps, whole, rerun, seconds)


# Trials run two at a time: each process is mostly single-threaded work
# (imports, tracing), so two share this test's 2-core budget well.
WORKERS = max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def trial(request, reference):
    """`trial(point_id)`: the Trial of that point; each runs once per module.

    The trials of every selected test start at once, `WORKERS` at a time,
    in the order the tests run.
    """
    root, reference_history = reference
    wanted = [
        item.callspec.params["point_id"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and "point_id" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    futures = {}

    def get(point_id: str) -> Trial:
        if point_id not in futures:
            futures[point_id] = pool.submit(
                run_trial, root, point_id, reference_history
            )
        return futures[point_id].result()

    for point_id in dict.fromkeys(wanted):
        futures[point_id] = pool.submit(run_trial, root, point_id, reference_history)
    try:
        yield get
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("point_id", POINTS)
def test_a_killed_run_leaves_only_whole_files(trial, point_id):
    t = trial(point_id)
    assert t.killed.returncode == -signal.SIGKILL, _describe(t.killed)
    assert "Traceback" not in t.killed.stderr
    assert t.whole_after_kill is None, t.whole_after_kill
    # The kill fell where it was meant to: the epochs finished by then are in
    # the history, the file being written is complete beside its real name.
    expected = list(range(t.point.kept)) if t.point.kept else None
    assert t.history_after_kill == expected, t.after_kill
    for name in t.point.missing:
        assert name not in t.after_kill, t.after_kill
    for name in (runs.CONFIG, runs.VOCAB):
        assert t.after_kill.get(name, 0) > 0, t.after_kill
    if t.point.temp is not None:
        temps = [n for n in t.after_kill if n.startswith(t.point.temp)]
        assert len(temps) == 1, t.after_kill
        assert t.after_kill[temps[0]] > 0  # written in full, then killed
    if t.point.kept:  # the resume state of the last finished epoch is there
        backup = f"{runs.BACKUP}/epoch-{t.point.kept - 1}.keras"
        assert t.after_kill.get(backup, 0) > 0, t.after_kill


@pytest.mark.slow
@pytest.mark.parametrize("point_id", POINTS)
def test_the_rerun_finishes_a_complete_valid_run(trial, reference, point_id):
    root, reference_history = reference
    t = trial(point_id)
    assert t.rerun.returncode == 0, _describe(t.rerun)
    assert "Traceback" not in t.rerun.stderr
    if t.point.kept:  # it continued from the last finished epoch...
        assert f"continuing at epoch {t.point.kept + 1} from" in t.rerun.stdout
    else:  # ...or, with none finished, started over
        assert "continuing" not in t.rerun.stdout, t.rerun.stdout
    history = check_complete_run(t.run_dir, root)
    # The epochs before the kill are kept as they were; a run that started
    # over (or only had to finish up) is the reference, seeds being fixed.
    same = t.point.kept if 0 < t.point.kept < EPOCHS else EPOCHS
    pd.testing.assert_frame_equal(history.head(same), reference_history.head(same))


@pytest.mark.slow
@pytest.mark.parametrize("point_id", POINTS)
def test_no_temporary_file_is_left_behind(trial, point_id):
    # The killed writer's temporary file is removed by the rerun, which holds
    # the run folder's lock (radcap.core.files.remove_stale_partials).
    t = trial(point_id)
    assert t.rerun.returncode == 0, _describe(t.rerun)
    assert temporary_files(t.run_dir) == []
    expected = [*RUN_FILES, runs.LOGS, files.LOCK_FILE]  # logs/: TensorBoard's
    assert sorted(os.listdir(t.run_dir)) == sorted(expected)


@pytest.mark.slow
def test_two_trainers_on_one_run_folder_one_waits_out(reference, tmp_path):
    root, _ = reference
    # Two processes at once (their output goes to files: no pipe to stall).
    procs = [shared().popen(_command(root, "twice"), env=_env()) for _ in range(2)]
    try:
        codes = [proc.wait(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = [(proc.stdout_text(), proc.stderr_text()) for proc in procs]
    assert sorted(code == 0 for code in codes) == [False, True], (codes, outputs)
    winner = codes.index(0)
    loser = 1 - winner
    err = outputs[loser][1]
    assert LOCK_MESSAGE in err, err
    assert f"(pid {procs[winner].pid})" in err, err  # names the holder
    assert "Traceback" not in err and "Traceback" not in outputs[winner][1]
    assert codes[loser] == 2

    again = radcap_train(root, "twice")
    assert again.returncode == 0, _describe(again)
    assert "already trained" in again.stdout
    check_complete_run(root / "checkpoints" / "twice", root)


@pytest.mark.slow
def test_a_killed_retrieval_run_continues_to_a_complete_run(reference):
    """`radcap retrieval` trains with the captioner's machinery: the same kill
    leaves whole files, and the rerun continues, indexes and scores."""
    root, _ = reference
    command = _command(root, "retrieval")
    command[3] = "retrieval"  # `radcap retrieval` with the module's settings
    command += ["--set", "checkpoints_dir=retrieval-runs", "--set", "batch_size=8"]
    run_dir = root / "retrieval-runs" / "retrieval"
    killed = run_process(command, _env("epoch-1-batch-0"))
    assert killed.returncode == -signal.SIGKILL, _describe(killed)
    check_files_in_place_are_whole(run_dir)
    assert history_epochs(run_dir) == [0] and not (run_dir / runs.INDEX).exists()
    kept = pd.read_csv(run_dir / runs.HISTORY)

    rerun = run_process(command, _env())
    assert rerun.returncode == 0, _describe(rerun)
    assert "continuing at epoch 2 from" in rerun.stdout
    check_files_in_place_are_whole(run_dir)
    expected = [runs.CONFIG, runs.VOCAB, runs.MODEL, runs.HISTORY, runs.TRAINING]
    expected += [runs.FAMILIARITY, runs.INDEX, runs.METRICS, runs.LOGS, files.LOCK_FILE]
    assert sorted(os.listdir(run_dir)) == sorted(expected)
    assert temporary_files(run_dir) == []
    history = pd.read_csv(run_dir / runs.HISTORY)
    assert history["epoch"].tolist() == list(range(EPOCHS))
    pd.testing.assert_frame_equal(history.head(1), kept)
    section = files.read_json(run_dir / runs.METRICS)["retrieval"]
    assert "no finished captioner run" in section["absent"]["likelihood"]

    index = (run_dir / runs.INDEX).stat().st_mtime_ns
    again = run_process(command, _env())
    assert again.returncode == 0 and "already trained" in again.stdout
    assert (run_dir / runs.INDEX).stat().st_mtime_ns == index  # not rebuilt


TWO_CPUS = Path(__file__).with_name("two_cpus.py")  # two logical CPU devices


@pytest.mark.slow
def test_mirrored_on_two_devices_resumes_and_trains_as_one_device(reference):
    """MirroredStrategy, two replicas: killed in its second epoch, resumed, the same.

    Without dropout (each replica would draw its own masks) the replicas'
    halves of each batch give the one-device run's gradients, so the losses
    agree to float rounding (measured: 1e-7 relative).
    """
    root, _ = reference
    runs_of = {}
    for name, strategy in (("one", "none"), ("two", "mirrored")):
        command = _command(root, name) + ["--set", "dropout=0"]
        command += ["--set", f"strategy={strategy}"]
        command[1:3] = [str(TWO_CPUS)]  # the same two devices; "none" uses one
        if strategy == "mirrored":
            killed = run_process(command, _env("epoch-1-batch-0"))
            assert killed.returncode == -signal.SIGKILL, _describe(killed)
            assert history_epochs(root / "checkpoints" / name) == [0]
        done = run_process(command, _env())
        assert done.returncode == 0, _describe(done)
        runs_of[name] = (
            done.stdout,
            check_complete_run(root / "checkpoints" / name, root),
        )
    stdout, mirrored = runs_of["two"]
    assert "training on 2 replicas (mirrored)" in stdout
    assert "continuing at epoch 2" in stdout
    summary = files.read_json(root / "checkpoints/two" / runs.TRAINING)
    assert (summary["strategy"], summary["replicas"]) == ("mirrored", 2)
    one = runs_of["one"][1]
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(mirrored[column], one[column], rtol=1e-5)


# --- radcap.core.files ----------------------------------------------------------------


def test_a_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "notes.txt"
    files.write_text(path, "old")

    def refuse(src, dst):
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="simulated"):
        files.write_text(path, "new " * 10_000)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # the temporary file went


def test_a_full_disk_leaves_the_old_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    files.write_json(path, {"epochs": 1})

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(files.DiskFullError, match=re.escape(str(path))):
        files.write_json(path, {"epochs": 2})
    assert files.read_json(path) == {"epochs": 1}
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_a_writer_failing_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    files.write_bytes(path, b"old model")
    with pytest.raises(RuntimeError, match="midway"):
        with files.atomic_path(path) as tmp:
            tmp.write_bytes(b"half a mod")
            raise RuntimeError("the writer died midway")
    assert path.read_bytes() == b"old model"
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]
    # No file at all stays no file.
    with pytest.raises(RuntimeError):
        with files.atomic_path(tmp_path / "new.keras") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]


def test_a_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "a.json"
    files.write_json(path, {"long": "x" * 1000})
    files.write_json(path, {"short": 1})
    assert json.loads(path.read_text()) == {"short": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


@pytest.mark.parametrize(
    "content, state",
    [
        (b"", "empty (0 bytes)"),
        (b'{"epochs": 3, "best', "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
    ],
    ids=["empty", "garbled", "not-utf8"],
)
def test_read_json_names_a_damaged_file(tmp_path, content, state):
    path = tmp_path / "training.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        files.read_json(path, "training summary")
    message = str(err.value)
    assert str(path) in message
    assert f"The training summary {path} is {state}" in message


_HOLDER = """
import sys, time
from radcap.core.files import folder_lock
with folder_lock(sys.argv[1], "run folder"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_read_only_folder_is_refused_in_one_line_by_the_lock(tmp_path):
    mount = tmp_path / "input"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        for folder in (mount, mount / "run"):  # the lock file, the folder itself
            with pytest.raises(files.ReadOnlyError) as err:
                with files.folder_lock(folder, "run folder"):
                    pytest.fail("a read-only folder was locked for writing")
            assert str(err.value) == (
                f"[Errno 30] The run folder {folder} is read-only (Read-only file "
                "system), and radcap writes into it. Copy it into a writable "
                "folder (a run folder: radcap.training.resume.copy_run) and run again "
                "with the copy."
            )
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_folder_lock_refuses_a_second_holder_until_the_first_dies(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.LockError) as err:
            with files.folder_lock(folder, "run folder"):
                pytest.fail("a second holder got the lock")
        message = str(err.value)
        assert f"The run folder {folder} {LOCK_MESSAGE} (pid {holder.pid})" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    # The kernel released the lock of the killed holder: no stale lock.
    with files.folder_lock(folder, "run folder"):
        assert (folder / files.LOCK_FILE).read_text() == str(os.getpid())
    with files.folder_lock(folder, "run folder"):  # and released it again
        pass


# --- evaluation killed while it writes ---------------------------------------

# The run folder holds an evaluation of its model M1; then `best.keras` is
# replaced by another model, M2 (a further trained one, say), and `evaluate`
# (with `reuse`, as notebook 04 calls it) is killed at each of its writes, in
# the order it makes them: the kill lands after a file is written in full
# and before it takes its real name. The rerun must give M2's results:
# report, metrics, captions and model card, never one of M1's passed as M2's.
EVALUATE_POINTS = (
    "write:black.png",  # the first write: a control image
    "write:noise.png",  # the last control image
    f"write:{runs.METRICS}",
    f"write:{runs.captions_file('test')}",
    f"write:{runs.REPORT}",
    f"write:{runs.MODEL_CARD}",
    f"write:{runs.EVALUATION}",  # the last write: the marker that commits them
)
EVALUATE_ARGS = dict(beams=[1], meteor=False, verbose=False)
_EVALUATE = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tiny_run import use_tiny_backbone
use_tiny_backbone()
from radcap.evaluation import evaluate
evaluate(sys.argv[1], sys.argv[2], reuse=True, **json.loads(sys.argv[3]))
"""


@dataclasses.dataclass
class Evaluations:
    root: Path
    expected: dict  # file name -> bytes of a fresh evaluation of M2
    killed: dict  # kill point -> (run folder, future of its killed process)


def _other_model(run_dir: Path, path: Path) -> None:
    """M2: the run's model with every weight moved, so that it captions otherwise."""
    model = runs.load_model(run_dir)
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:
        noise = rng.normal(0, 0.5, variable.shape).astype(variable.dtype)
        variable.assign(np.asarray(variable) + noise)
    model.save(path)


def _copy(source: Path, run_dir: Path, model: Path | None = None) -> Path:
    """A copy of the run folder `source`, with `model` as its model if given."""
    import shutil

    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns(files.LOCK_FILE))
    if model is not None:
        shutil.copyfile(model, run_dir / runs.MODEL)
    return run_dir


def _kill_evaluate(root: Path, run_dir: Path, kill_at: str):
    command = [sys.executable, "-c", _EVALUATE, str(run_dir), str(root)]
    return run_process(command + [json.dumps(EVALUATE_ARGS)], _env(kill_at))


@pytest.fixture(scope="module")
def evaluations(reference):
    """M1's complete evaluation, M2, the kills (started at once) and M2's results."""
    from radcap.evaluation import evaluate

    root, _ = reference
    checkpoints = root / "checkpoints"
    first = _copy(checkpoints / "reference", checkpoints / "evaluate-m1")
    evaluate(first, root, **EVALUATE_ARGS)
    m2 = root / "m2.keras"
    _other_model(first, m2)
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    killed = {}
    for kill_at in EVALUATE_POINTS:
        run_dir = checkpoints / f"evaluate-{kill_at.split(':')[1]}"
        _copy(first, run_dir, m2)  # M1's evaluation, M2's model
        killed[kill_at] = run_dir, pool.submit(_kill_evaluate, root, run_dir, kill_at)
    # The reference: M2 evaluated afresh, with nothing of M1's to reuse.
    fresh = _copy(first, checkpoints / "evaluate-m2", m2)
    evaluate(fresh, root, **EVALUATE_ARGS)
    names = runs.evaluation_outputs("test")
    expected = {name: (fresh / name).read_bytes() for name in names}
    # M2 is another model: its captions differ from M1's.
    assert expected[names[1]] != (first / names[1]).read_bytes()
    try:
        yield Evaluations(root, expected, killed)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", EVALUATE_POINTS)
def test_a_killed_evaluation_reruns_to_the_results_of_the_model_in_the_folder(
    evaluations, kill_at
):
    from radcap.evaluation import evaluate

    run_dir, future = evaluations.killed[kill_at]
    killed = future.result()
    assert killed.returncode == -signal.SIGKILL, _describe(killed)
    check_files_in_place_are_whole(run_dir)
    written = kill_at.split(":")[1]
    partials = [p for p in run_dir.rglob(f".{written}.*") if p.is_file()]
    assert len(partials) == 1 and partials[0].stat().st_size > 0  # killed there

    metrics = evaluate(run_dir, evaluations.root, reuse=True, **EVALUATE_ARGS)
    for name, content in evaluations.expected.items():
        assert (run_dir / name).read_bytes() == content, name
    assert metrics == json.loads(evaluations.expected[runs.METRICS])
    assert temporary_files(run_dir) == []
    # Now complete: a second call reuses it as it is.
    marker = (run_dir / runs.EVALUATION).stat().st_mtime_ns
    assert evaluate(run_dir, evaluations.root, reuse=True, **EVALUATE_ARGS) == metrics
    assert (run_dir / runs.EVALUATION).stat().st_mtime_ns == marker
