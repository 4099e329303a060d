"""Going on with a run that an earlier session left elsewhere: copy it in.

A Kaggle session ends and its machine is gone; what the notebook version
wrote to `/kaggle/working` comes back as a read-only input of the next
version (`/kaggle/input/<notebook>/checkpoints/<run>`). `copy_run` copies
such a run folder into the working folder, where `radcap.training.train.train`
continues it from its `backup/` (or its `best.keras`) as after any
interruption. A run folder holds no absolute paths: its `config.json` names
data, features and checkpoints relative to the working folder, so the run
goes on with the data and feature caches of its new home.

The copy is crash safe: it is written beside the target under a hidden name
(`radcap.core.files.partial_path`) and swapped into place once complete, while
the target's run-folder lock is held, so a run folder is either absent or
whole, and `radcap train` never sees half of one. The copy holds what the
source folder itself holds: a symbolic link is not followed (it could
point at anything on the machine, or at its own folder) but skipped with a
line that names it, as are other special files and the partial files of
interrupted radcap writes. Wherever the source's config puts the run, it
lands inside the working folder or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
from pathlib import Path

from radcap.core.config import Config
from radcap.core.files import (
    LOCK_FILE,
    PARTIAL,
    folder_lock,
    fsync_dir,
    kill_point,
    partial_path,
    remove_stale_partials,
)
from radcap.core.locks import pause_point, swap_paths
from radcap.models import runs


def copy_run(source: str | Path, root: str | Path, verbose: bool = True) -> Config:
    """Copy the run folder `source` into the working folder `root`, to train on.

    The run lands where its own config puts it, `config.run_dir(root)`
    (`checkpoints/<name>`). When that folder already holds the same run (the
    notebook runs again in the same session), it is kept as it is. Symbolic
    links, other special files and partial files in `source` are not copied:
    each gets a line on stderr that names it and says why.

    Args:
        source: A run folder (it holds `config.json`), e.g. a Kaggle input
            `/kaggle/input/<notebook>/checkpoints/<run>`; it is only read.
        root: The working folder.
        verbose: Say what was copied or kept.

    Returns:
        The run's `Config`, read from its `config.json`: train it with
        `radcap.training.train.train(config, root=root)`.

    Raises:
        RunError: `source` is not a run folder (or its config, vocabulary
            or model is a symbolic link), or its config puts the run outside
            `root`, or the target folder holds another run, or the
            same run with fewer finished epochs.
        LockError: A process is training the target run right now.
    """
    source = Path(source)
    config = _source_config(source)
    run_dir = _target(config, Path(root), source)
    if run_dir.is_dir() and run_dir.resolve() == source.resolve():
        return config  # asked to go on with the run already here
    with folder_lock(run_dir, "run folder"):
        if _holds_files(run_dir):
            _check_same_run(run_dir, source, config, verbose)
            return config
        skipped = _copy_into_place(source, run_dir)
    for line in skipped:  # said even when quiet: never a silent drop
        print(line, file=sys.stderr)
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
    linked = [name for name in runs.REQUIRED if (source / name).is_symlink()]
    if linked:
        # Links are not copied: without them the copy would be no run at all.
        raise runs.RunError(
            f"RESUME_FROM: {source / linked[0]} is a symbolic link (to "
            f"{os.readlink(source / linked[0])}), and the run copy follows no "
            "link. Copy the run folder with its links resolved yourself (cp -rL "
            f"{source} <folder>) and pass the copy."
        )
    return runs.load_config(source)


def _target(config: Config, root: Path, source: Path) -> Path:
    """The run folder in `root`, or an error where the config points outside it.

    A `checkpoints_dir` without `..` that is not absolute stays in `root`
    whatever links the user made there (a `checkpoints` linked to a larger
    disk is theirs to make); any other must lead into `root` itself.
    """
    run_dir = config.run_dir(root)
    home = root.resolve()
    within = Path(config.checkpoints_dir)
    plain = not within.is_absolute() and ".." not in within.parts
    if not plain and not run_dir.resolve().is_relative_to(home):
        raise runs.RunError(
            f"RESUME_FROM: the {runs.CONFIG} of {source} puts the run in "
            f"{run_dir.resolve()} (checkpoints_dir={config.checkpoints_dir!r}), "
            f"outside the working folder {home}, so it is not copied. Copy the "
            f"run folder into {home / 'checkpoints'} yourself and set its "
            'checkpoints_dir to "checkpoints".'
        )
    return run_dir


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


def _copy_into_place(source: Path, run_dir: Path) -> list[str]:
    """Copy `source` beside `run_dir`, then swap it into place; the skip report.

    `run_dir` holds only the lock file that the caller holds. The copy is
    made in a partial folder under a lock of its own, and the two folders
    swap names in one step, so the name `run_dir` always holds a lock that
    this process holds: no other process can take the run folder between
    the two. A crash before the swap leaves `run_dir` without a run and a
    partial folder, which the next call removes.
    """
    remove_stale_partials(run_dir.parent, recursive=False)  # killed copies'
    staging = partial_path(run_dir)
    try:
        with folder_lock(staging, "run folder"):
            skipped = _copy_tree(source, staging)
            pause_point("copy:rename")
            kill_point("copy:rename")  # the worst moment to die: all copied
            _swap(staging, run_dir)
            pause_point("copy:swapped")
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the copy, or the old folder
    fsync_dir(run_dir.parent)
    return skipped


def _swap(staging: Path, run_dir: Path) -> None:
    """Put `staging` in the place of `run_dir`; `staging` then names the old one."""
    try:
        swap_paths(staging, run_dir)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
        # No swap on this system: the old folder goes first, and for a moment
        # there is no run folder (and no lock) at all.
        os.unlink(run_dir / LOCK_FILE)
        os.rmdir(run_dir)
        os.rename(staging, run_dir)
        staging.mkdir()  # for the caller to remove, as after a swap


def _copy_tree(source: Path, dest: Path) -> list[str]:
    """Copy every regular file but the lock, each flushed to disk; the skip report.

    Contents only, not modes: the input may be read-only, the copy must not.
    Links are never followed: a link to a file outside would publish it, a
    link to a folder above would copy it without end.
    """
    skipped = []
    for folder, subfolders, names in os.walk(source):
        here = dest / Path(folder).relative_to(source)
        here.mkdir(exist_ok=True)
        for name in [*subfolders, *names]:
            path = Path(folder) / name
            reason = _not_copied(path)
            if reason:
                skipped.append(f"Not copied: {path}: {reason}.")
                if name in subfolders:
                    subfolders.remove(name)  # os.walk does not go into it
            elif name in names and name != LOCK_FILE:
                shutil.copyfile(path, here / name)
                with open(here / name, "rb+") as f:
                    os.fsync(f.fileno())
                kill_point(f"copy:{name}")
    return skipped


def _not_copied(path: Path) -> str | None:
    """Why `path` is left out of the copy, or None for a file or folder to copy."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return (
            f"a symbolic link (to {os.readlink(path)}); links are not followed, "
            "copy what it points to into the run folder if the run needs it"
        )
    if PARTIAL.fullmatch(path.name):
        # Left by an earlier session's writer: never part of the run.
        return "a partial file of an unfinished radcap write, not part of the run"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file (a device, pipe or socket)"
    return None
