"""Sharing folders between processes, beyond one writer per folder.

`radcap.core.files.folder_lock` gives one process a folder to write into. Here:
readers that share a folder while no one writes it (`read_lock`), a writer
that replaces one path in a folder it does not own (`replace_lock`), a folder
that takes another's place with no moment in which neither exists
(`swap_paths`), and a clear refusal to write where nothing can be written
(`check_writable`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from radcap.core.files import (  # ReadOnlyError: where radcap.cli looks for it
    READ_ONLY_ERRNOS,
    LockError,
    ReadOnlyError,
    open_lock_file,
    partial_path,
    take_lock,
)
from radcap.core.portable import try_lock


def check_writable(folder: str | Path, what: str, remedy: str) -> None:
    """Refuse early, in one line, to write into a folder that cannot be written.

    Tries a real write (a temporary file, removed at once): permission bits
    alone do not tell, a read-only mount or a superuser makes them lie.

    Args:
        folder: The folder (made if needed).
        what: What the folder is, for the message (e.g. "run folder").
        remedy: What to do instead, a sentence for the message.

    Raises:
        ReadOnlyError: The folder is read-only or not writable by this user.
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # A partial's name: what a killed check leaves is removed as a leftover.
        tmp = partial_path(Path(folder) / "writable")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as err:
        if err.errno not in READ_ONLY_ERRNOS:
            raise
        state = "read-only" if err.errno == errno.EROFS else "not writable"
        raise ReadOnlyError(
            err.errno, f"The {what} {folder} is {state} ({err.strerror}). {remedy}"
        ) from None
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def read_lock(folder: str | Path, what: str):
    """Read `folder` while no process writes into it: a shared `folder_lock`.

    Readers share the lock; a writer holding `folder_lock(folder)` makes
    this a `LockError`, and a writer that comes later waits for none of the
    readers but gets a `LockError` itself. A read-only folder whose lock file
    cannot be made is read without a lock: no radcap process can write there.

    Args:
        folder: The folder read (it exists).
        what: What the folder is, for the message (e.g. "run folder").
    """
    folder = Path(folder)
    try:
        fd = open_lock_file(folder, os.O_RDONLY)
    except OSError as err:
        if err.errno not in READ_ONLY_ERRNOS:
            raise
        yield  # read-only here: there is no writer to wait for
        return
    try:
        take_lock(fd, folder, what, shared=True)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def replace_lock(target: str | Path, what: str):
    """Hold the right to replace `target` (a file or folder) in its parent.

    An exclusive OS lock on the parent folder itself, not on a file in it,
    so it works in any folder (a user's own) and leaves nothing behind.
    Writers that replace things in the same folder take turns. Windows opens
    no folder as a file: there the lock is on `.radcap-replace.lock` in it,
    a file that stays.

    Args:
        target: The path that will be replaced; its parent is made if needed.
        what: What is written, for the message (e.g. "export").
    """
    parent = Path(target).parent
    parent.mkdir(parents=True, exist_ok=True)
    if os.name == "nt":
        fd = os.open(parent / ".radcap-replace.lock", os.O_RDWR | os.O_CREAT, 0o644)
    else:
        fd = os.open(parent, os.O_RDONLY)
    try:
        if not try_lock(fd):
            raise LockError(
                f"Another radcap process is writing its {what} into {parent}. "
                "Wait for it to finish (or stop it), then run again; nothing was "
                "changed."
            ) from None
        yield
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2  # renameat2's flag (Linux 3.15 and later)


def swap_paths(a: str | Path, b: str | Path) -> None:
    """Exchange two folders (or files) in one step: each name always exists.

    Raises:
        OSError: The system or the file system cannot swap (errno EINVAL or
            ENOSYS: not Linux, an old kernel, a network file system).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # Windows: no C library to load by no name
        libc = None
    rename = getattr(libc, "renameat2", None)
    if rename is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available here")
    at_cwd = -100  # AT_FDCWD: relative paths are read from the current folder
    if rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


# A test hook like `radcap.core.files.kill_point`: RADCAP_PAUSE_AT="<point>" stops
# there until the test says go, so a second process can act at that very moment.
_PAUSE_ENV = "RADCAP_PAUSE_AT"


def pause_point(point: str) -> None:
    """Wait here when `RADCAP_PAUSE_AT` names this point: a test hook.

    The process prints `paused at <point>` on stdout and goes on when a line
    arrives on its stdin (or stdin closes), so the test waits on the two
    conditions themselves, never on a timer.
    """
    if os.environ.get(_PAUSE_ENV) != point:
        return
    import sys

    print(f"paused at {point}", flush=True)
    sys.stdin.readline()
