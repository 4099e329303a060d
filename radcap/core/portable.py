"""What differs between Linux, macOS and Windows: file locks, reads at an offset.

Linux and macOS lock with `fcntl.flock`; Windows has no `fcntl`, and
there `portalocker` (a dependency of radcap on Windows only) takes the same
non-blocking exclusive and shared locks through the Win32 API. The Linux
path is the one tested; the others are tested here with `fcntl` made
unavailable (tests/test_portable.py), not on Windows itself.
"""

from __future__ import annotations

import os


def try_lock(fd: int, shared: bool = False) -> bool:
    """Lock the open file (or folder) `fd` without waiting: False if another holds it.

    `flock` where there is `fcntl` (Linux, macOS): exclusive or shared, tied
    to this open file, released when it is closed or the process ends. Where
    there is none (Windows), `portalocker` takes the same locks through the
    Win32 API (`LockFileEx`), which the system releases the same way.
    """
    try:
        import fcntl
    except ImportError:
        return _try_portalocker(fd, shared)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _try_portalocker(fd: int, shared: bool) -> bool:
    import portalocker  # a dependency of radcap where there is no fcntl

    flags = portalocker.LockFlags.SHARED if shared else portalocker.LockFlags.EXCLUSIVE
    try:
        portalocker.lock(fd, flags | portalocker.LockFlags.NON_BLOCKING)
    except portalocker.AlreadyLocked:
        return False
    return True


def read_head(fd: int, size: int) -> bytes:
    """The first `size` bytes of open file `fd` (`os.pread` where there is one)."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, size)


def write_head(fd: int, data: bytes) -> None:
    """Make open file `fd` hold just `data` (`os.pwrite` where there is one)."""
    os.ftruncate(fd, 0)
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, 0)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
