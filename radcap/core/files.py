"""Files that survive a crash: atomic writes, one writer per folder, free space.

Every file radcap writes goes through here. A write lands in a temporary file
in the same folder, is flushed to disk, and is then renamed over the target,
so a reader sees the old file or the new one, never half of one: a kill, a
power cut or a full disk in the middle leaves the previous version intact.
A folder that one process writes into (a run folder, a feature cache) is
held with an OS file lock, which the kernel releases when the process dies,
so a crash never leaves a stale lock behind: `flock` where there is `fcntl`
(Linux, macOS), the Win32 file locks through `portalocker` where there is not
(Windows).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from radcap.core.portable import read_head, try_lock, write_head

# The lock file of a folder that radcap writes into. Its name is radcap's own,
# so a user's file is never truncated or overwritten by taking the lock;
# `.lock` files of earlier radcap versions are left alone (never deleted).
LOCK_FILE = ".radcap.lock"
# Every temporary file or folder radcap writes (`partial_path`) is named
# "." + target name + ".radcap-partial-" + writer's pid + "-" + 8 random hex
# digits + the target's suffix, if any (writers such as Keras check it). Only
# names that match this in full are ever removed as leftovers.
PARTIAL = re.compile(
    r"\.(?P<target>.+)\.radcap-partial-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}"
    r"(?P<suffix>\.[^.]+)?"
)
# Tests kill a process at a chosen moment: RADCAP_KILL_AT="<point>" or
# "<point>@<n>" (the n-th time it is reached). Points: "write:<file name>"
# (a file written, not yet renamed into place), "epoch-<e>-batch-<b>",
# "copy:<file name>" and "copy:rename" (radcap.training.resume.copy_run).
_KILL_ENV = "RADCAP_KILL_AT"
_reached: dict[str, int] = {}


class LockError(RuntimeError):
    """Another process is writing into the same folder (or its lock is a link)."""


class ReadOnlyError(OSError):
    """A folder that radcap must write into cannot be written (read-only)."""


# What a write into a read-only mount or a folder not ours fails with.
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class DiskFullError(OSError):
    """Not enough free space for a write; the message says how much and where."""


def _umask() -> int:
    """The process's umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def kill_point(point: str) -> None:
    """Die here (SIGKILL) when `RADCAP_KILL_AT` names this point: a test hook."""
    wanted = os.environ.get(_KILL_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(nth or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def disk_full_message(path: str | Path, needed: int | None = None) -> str:
    """The message for a write that ran out of space at `path`."""
    folder = Path(path).parent if not Path(path).is_dir() else Path(path)
    try:
        free = shutil.disk_usage(_existing(folder)).free
    except OSError:
        free = None
    need = f" It needs about {needed / 1e6:.0f} MB;" if needed else ""
    have = f" {free / 1e6:.0f} MB are free there." if free is not None else ""
    return (
        f"The disk is full: could not write {path}.{need}{have} Free some space "
        "(or point the folder elsewhere), then run the same command again: it "
        "continues where it stopped."
    )


def partial_path(target: str | Path) -> Path:
    """A fresh name beside `target` to write it under until it is complete.

    The name matches `PARTIAL` and records this process's id, so that
    `remove_stale_partials` can tell what a killed writer left from a user's
    file (never removed) and from what a live writer is writing.

    Args:
        target: The file or folder that will be written.

    Returns:
        `.<target name>.radcap-partial-<pid>-<8 hex digits><target suffix>`,
        in `target`'s folder, at most 255 bytes (a long target name is cut);
        nothing is created.
    """
    target = Path(target)
    suffix = target.suffix if len(target.suffix) <= 16 else ""
    tail = f".radcap-partial-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    # A name the file system takes (255 bytes): a long target's name is cut.
    name = target.name.encode()[: 254 - len(tail)].decode(errors="ignore")
    return target.with_name(f".{name}{tail}")


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (in doubt: yes, so nothing of it is removed)."""
    if pid == os.getpid() or os.name == "nt":
        return True  # Windows' os.kill(pid, 0) sends a Ctrl-C: never asked there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False  # no process can have this id
    except OSError:
        return True  # PermissionError: it exists, under another user
    return True


def remove_stale_partials(folder: str | Path, recursive: bool = True) -> list[str]:
    """Remove what killed radcap writers left in `folder`: nothing else.

    Removes the files and folders whose name matches `PARTIAL` in full and
    whose writer (the pid in the name) is no longer running. A user's file
    never matches; a live writer's partial is left to it. Symbolic links are
    neither followed nor removed.

    Args:
        folder: The folder to clean (need not exist).
        recursive: Also clean its subfolders.

    Returns:
        The names removed.
    """
    removed = []
    for top, dirs, names in os.walk(folder):  # followlinks=False
        for name in [*dirs, *names]:
            path = Path(top) / name
            match = PARTIAL.fullmatch(name)
            if not match or path.is_symlink() or _alive(int(match["pid"])):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(name)
        # A partial folder's contents are its writer's: never walked into.
        dirs[:] = [d for d in dirs if recursive and not PARTIAL.fullmatch(d)]
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """A temporary path to write to; renamed over `path` when the block succeeds.

    For writers that want a file name (Keras' `model.save`, `DataFrame.to_csv`).
    The temporary file is `partial_path(path)` (it keeps `path`'s suffix,
    which some writers check, e.g. `.keras`). On any error it is removed and
    `path` is left as it was.

    Raises:
        DiskFullError: The disk filled up during the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # a writer may have made it private
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        _remove(tmp)
        if err.errno == errno.ENOSPC or "No space left" in str(err):
            raise DiskFullError(errno.ENOSPC, disk_full_message(path)) from None
        raise
    except BaseException:
        _remove(tmp)
        raise


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, value) -> None:
    """Write `value` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path, what: str = "file"):
    """Read a JSON file; a damaged one raises an error that names it.

    Args:
        path: The file.
        what: What the file is, for the message (e.g. "vocabulary").

    Raises:
        ValueError: The file is empty or not valid JSON.
    """
    path = Path(path)
    text = path.read_bytes()
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        state = "empty (0 bytes)" if not text else f"not valid JSON ({err})"
        raise ValueError(
            f"The {what} {path} is {state}. It was damaged, probably by an "
            "interrupted write: delete it, and the step that writes it makes it "
            "again."
        ) from None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse to start a write of `needed` bytes that the disk cannot hold.

    Args:
        folder: Where the bytes go (need not exist yet).
        needed: Bytes that will be written.
        what: What is written, for the message.

    Raises:
        DiskFullError: Less than `needed` bytes are free there.
    """
    free = shutil.disk_usage(_existing(Path(folder))).free
    if free < needed:
        raise DiskFullError(
            errno.ENOSPC,
            f"Not enough disk space for {what} in {folder}: it needs about "
            f"{needed / 1e6:.0f} MB and {free / 1e6:.0f} MB are free. Free some "
            "space or point the folder elsewhere, then run the same command again.",
        )


def open_lock_file(folder: Path, mode: int) -> int:
    """Open (or make) `folder`'s lock file; never through a link, nor anything else.

    A link named `LOCK_FILE` (a folder copied with `cp -rs`, or one planted)
    would make taking the lock truncate and overwrite whatever it points to;
    a folder or a named pipe of that name is no file to lock.

    Raises:
        LockError: `LOCK_FILE` in `folder` is not a regular file.
    """
    path = folder / LOCK_FILE
    # Windows has neither flag: there a link is looked for before the open.
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    flags = mode | os.O_CREAT | nofollow | getattr(os, "O_NONBLOCK", 0)  # a pipe
    try:
        if not nofollow and path.is_symlink():
            raise OSError(errno.ELOOP, "a symbolic link", str(path))
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o644)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.EISDIR):
            raise
    else:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
    kind = "not a file"
    if path.is_symlink():
        kind = f"a symbolic link (to {os.readlink(path)})"
    raise LockError(
        f"{path} is {kind}, not radcap's lock file, and radcap writes no file "
        f"through a link or over anything else. Move it away (mv {path} <name>), "
        "then run again; nothing was changed."
    )


def take_lock(fd: int, folder: Path, what: str, shared: bool = False) -> None:
    """Lock the open lock file `fd` of `folder`, or a `LockError` naming its holder.

    Exclusive for a writer (`folder_lock`), shared for readers
    (`radcap.core.locks.read_lock`); never waits.
    """
    if not try_lock(fd, shared):
        try:
            holder = read_head(fd, 64).decode(errors="replace").strip() or "?"
        except OSError:  # Windows: the holder's lock covers the bytes read
            holder = "?"
        writes = ", which writes into it" if shared else ""
        raise LockError(
            f"The {what} {folder} is in use by another radcap process (pid "
            f"{holder}){writes}. Wait for it to finish (or stop it), then run "
            "again; nothing was changed."
        ) from None


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str):
    """Hold `folder` for this process: a second writer gets a clear `LockError`.

    The lock is an OS lock (`flock`) on `folder/.radcap.lock` (`LOCK_FILE`),
    released by the kernel when the process ends, however it ends. The file
    records the holder's process id for the message. Once held, what killed
    writers left in the folder is removed (`remove_stale_partials`).

    Args:
        folder: The folder written into (made if needed).
        what: What the folder is, for the message (e.g. "run folder").

    Raises:
        LockError: Another process holds the folder.
        ReadOnlyError: The folder cannot be written (a read-only mount).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = open_lock_file(folder, os.O_RDWR)
    except OSError as err:
        if err.errno not in READ_ONLY_ERRNOS:
            raise
        state = "read-only" if err.errno == errno.EROFS else "not writable"
        raise ReadOnlyError(
            err.errno,
            f"The {what} {folder} is {state} ({err.strerror}), and radcap writes "
            "into it. Copy it into a writable folder (a run folder: "
            "radcap.training.resume.copy_run) and run again with the copy.",
        ) from None
    try:
        take_lock(fd, folder, what)
        write_head(fd, str(os.getpid()).encode())
        remove_stale_partials(folder)
        yield
    finally:
        os.close(fd)  # closing releases the lock
