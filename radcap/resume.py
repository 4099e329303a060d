"""Going on with a run that an earlier session left elsewhere: copy it in.

Stage: after `runs` (beside `train`). Imports the base and `radcap.runs`.

A Kaggle session ends and its machine is gone; what the notebook version
wrote to `/kaggle/working` comes back as a read-only input of the next
version (`/kaggle/input/<notebook>/checkpoints/<run>`). `copy_run` copies
such a run folder into the working folder, where `radcap.train.train`
continues it from its `backup/` (or its `best.keras`) as after any
interruption. A run folder holds no absolute paths: its `config.json` names
data, features and checkpoints relative to the working folder, so the run
goes on with the data and feature caches of its new home.

The copy is crash safe: it is written beside the target under a hidden name
and renamed into place once complete, while the target's run-folder lock is
held, so a run folder is either absent or whole, and `radcap train` never
sees half of one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from radcap import runs
from radcap.config import Config
from radcap.files import (
    LOCK_FILE,
    PARTIAL,
    folder_lock,
    fsync_dir,
    kill_point,
    partial_path,
    remove_stale_partials,
)


def copy_run(source: str | Path, root: str | Path, verbose: bool = True) -> Config:
    """Copy the run folder `source` into the working folder `root`, to train on.

    The run lands where its own config puts it, `config.run_dir(root)`
    (`checkpoints/<name>`). When that folder already holds the same run (the
    notebook runs again in the same session), it is kept as it is.

    Args:
        source: A run folder (it holds `config.json`), e.g. a Kaggle input
            `/kaggle/input/<notebook>/checkpoints/<run>`; it is only read.
        root: The working folder.
        verbose: Say what was copied or kept.

    Returns:
        The run's `Config`, read from its `config.json`: train it with
        `radcap.train.train(config, root=root)`.

    Raises:
        RunError: `source` is not a run folder, or the target folder holds
            another run, or the same run with fewer finished epochs.
        LockError: A process is training the target run right now.
    """
    source = Path(source)
    config = _source_config(source)
    run_dir = config.run_dir(root)
    if run_dir.is_dir() and run_dir.resolve() == source.resolve():
        return config  # asked to go on with the run already here
    with folder_lock(run_dir, "run folder"):
        if _holds_files(run_dir):
            _check_same_run(run_dir, source, config, verbose)
            return config
        _copy_into_place(source, run_dir)
    if verbose:
        epochs = _finished_epochs(run_dir)
        print(
            f"Copied run {config.name!r} from {source} to {run_dir} ({epochs} "
            "finished epochs); training it goes on from there."
        )
    return config


def _source_config(source: Path) -> Config:
    """The config of the run folder `source`, or an error that says what to pass."""
    if not source.is_dir():
        raise runs.RunError(
            f"RESUME_FROM: {source} does not exist or is not a folder. Pass the "
            "run folder of an earlier session, e.g. "
            "/kaggle/input/<notebook>/checkpoints/<run> (the one holding "
            f"{runs.CONFIG})."
        )
    if not (source / runs.CONFIG).is_file():
        # A few levels only: an input may also hold a dataset of many files.
        found = sorted(
            p.parent
            for depth in ("*", "*/*", "*/*/*")
            for p in source.glob(f"{depth}/{runs.CONFIG}")
        )[:5]
        hint = (
            " It holds run folders: " + ", ".join(map(str, found)) + "; pass one."
            if found
            else " No run folder lies beneath it either."
        )
        raise runs.RunError(
            f"RESUME_FROM: {source} is not a radcap run folder: it has no "
            f"{runs.CONFIG}.{hint}"
        )
    return runs.load_config(source)


def _holds_files(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything but its lock.

    Taking the lock removed what dead writers left (`folder_lock`).
    """
    return any(p.name != LOCK_FILE for p in run_dir.iterdir())


def _check_same_run(run_dir: Path, source: Path, config: Config, verbose: bool):
    """Keep a target that is the same run at least as far on; refuse otherwise."""
    if not (run_dir / runs.CONFIG).is_file():
        raise runs.RunError(
            f"{run_dir} holds files but no {runs.CONFIG}: it is not a run folder, "
            f"so the run from {source} is not copied over it. Move it away (or "
            "delete it) and run again."
        )
    here = runs.load_config(run_dir).to_dict()
    differ = sorted(
        k for k, v in config.to_dict().items() if k != "epochs" and here.get(k) != v
    )
    if differ:
        raise runs.RunError(
            f"{run_dir} already holds another run (its config differs in "
            f"{', '.join(differ)}), so the run from {source} is not copied over "
            "it. Delete or rename that folder, or resume into another working "
            "folder."
        )
    have, brought = _finished_epochs(run_dir), _finished_epochs(source)
    if have < brought:
        raise runs.RunError(
            f"{run_dir} holds the same run with {have} finished epochs, fewer than "
            f"the {brought} of {source}. Delete {run_dir} to copy the newer one, "
            "or set RESUME_FROM = None to go on with the one here."
        )
    if verbose:
        print(
            f"{run_dir} already holds run {config.name!r} ({have} finished "
            f"epochs, {source} has {brought}); going on with it, nothing copied."
        )


def _finished_epochs(run_dir: Path) -> int:
    history = runs.read_history(run_dir, verbose=False)
    return 0 if history is None else len(history)


def _copy_into_place(source: Path, run_dir: Path) -> None:
    """Copy `source` beside `run_dir`, then rename it into place, lock and all.

    `run_dir` holds only the lock file that the caller holds. The lock file
    moves into the finished copy (the lock stays with the file, so it is
    held throughout), the empty `run_dir` goes, and the copy takes its
    name. A crash before the rename leaves `run_dir` without a run and a
    hidden copy, which the next call removes and makes again.
    """
    # Killed copies' folders: radcap-named, their writers dead.
    remove_stale_partials(run_dir.parent, recursive=False)
    staging = partial_path(run_dir)
    staging.mkdir()
    try:
        _copy_tree(source, staging)
        os.rename(run_dir / LOCK_FILE, staging / LOCK_FILE)
        os.rmdir(run_dir)
        kill_point("copy:rename")  # the worst moment to die: no run_dir at all
        os.rename(staging, run_dir)
    except BaseException:
        if (staging / LOCK_FILE).exists() and not (run_dir / LOCK_FILE).exists():
            run_dir.mkdir(exist_ok=True)
            os.rename(staging / LOCK_FILE, run_dir / LOCK_FILE)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(run_dir.parent)


def _copy_tree(source: Path, dest: Path) -> None:
    """Copy every file but the lock and partial files, each flushed to disk.

    A partial file is what a writer of the earlier session left unfinished
    (its pid means nothing on this machine): never part of the run.

    Contents only, not modes: the input may be read-only, the copy must not.
    """
    for folder, dirs, names in os.walk(source, followlinks=True):
        dirs[:] = [d for d in dirs if not PARTIAL.fullmatch(d)]
        here = dest / Path(folder).relative_to(source)
        here.mkdir(exist_ok=True)
        for name in names:
            if name == LOCK_FILE or PARTIAL.fullmatch(name):
                continue
            shutil.copyfile(Path(folder) / name, here / name)
            with open(here / name, "rb+") as f:
                os.fsync(f.fileno())
            kill_point(f"copy:{name}")
