"""Folder locks where there is no `fcntl` (Windows), tested on Linux.

`fcntl`, `os.pread`, `os.pwrite` and `os.O_NOFOLLOW` are made unavailable, as
on Windows, so `radcap.core.portable` goes through `portalocker` and reads and
writes the lock file at an offset with seek and read. On Linux portalocker
locks with `flock` too, so the outcomes are those of the `fcntl` path; the
Win32 locks themselves are not tested here (no Windows machine).
"""

import os
import sys

import pytest

from radcap.core import files, locks, portable

portalocker = pytest.importorskip(
    "portalocker", reason="portalocker is in the test extra: pip install -e '.[test]'"
)

IN_USE = (
    "The run folder {} is in use by another radcap process (pid {}){}. Wait for "
    "it to finish (or stop it), then run again; nothing was changed."
)


@pytest.fixture
def windows_like(monkeypatch):
    """No fcntl, pread, pwrite nor O_NOFOLLOW; returns the portalocker calls."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` fails
    for name in ("pread", "pwrite", "O_NOFOLLOW", "O_NONBLOCK"):
        monkeypatch.delattr(os, name)
    calls = []
    lock = portalocker.lock
    monkeypatch.setattr(
        portalocker, "lock", lambda fd, flags: (calls.append(flags), lock(fd, flags))
    )
    return calls


def test_without_fcntl_a_second_writer_is_told_who_holds_the_folder(
    tmp_path, windows_like
):
    folder = tmp_path / "run"
    flags = portalocker.LockFlags
    exclusive, shared = (
        flags.EXCLUSIVE | flags.NON_BLOCKING,
        flags.SHARED | flags.NON_BLOCKING,
    )
    with files.folder_lock(folder, "run folder"):
        assert (folder / files.LOCK_FILE).read_text() == str(os.getpid())
        with pytest.raises(files.LockError) as err:
            with files.folder_lock(folder, "run folder"):
                pytest.fail("a second writer got the folder")
        assert str(err.value) == IN_USE.format(folder, os.getpid(), "")
        with pytest.raises(files.LockError) as err:
            with locks.read_lock(folder, "run folder"):
                pytest.fail("a reader got a folder being written")
        writes = ", which writes into it"
        assert str(err.value) == IN_USE.format(folder, os.getpid(), writes)
    assert windows_like == [exclusive, exclusive, shared]
    with files.folder_lock(folder, "run folder"):  # released on leaving
        pass


def test_without_fcntl_readers_share_and_keep_writers_out(tmp_path, windows_like):
    folder = tmp_path / "run"
    folder.mkdir()
    with locks.read_lock(folder, "run folder"), locks.read_lock(folder, "run folder"):
        with pytest.raises(files.LockError, match="in use by another radcap"):
            with files.folder_lock(folder, "run folder"):
                pytest.fail("a writer got a folder being read")
    with locks.replace_lock(tmp_path / "out", "export"):
        with pytest.raises(files.LockError, match="writing its export into"):
            with locks.replace_lock(tmp_path / "other", "export"):
                pass
    assert len(windows_like) == 5


def test_without_o_nofollow_a_linked_lock_file_is_still_refused(tmp_path, windows_like):
    folder, target = tmp_path / "run", tmp_path / "notes.txt"
    folder.mkdir()
    target.write_text("user data")
    (folder / files.LOCK_FILE).symlink_to(target)
    with pytest.raises(files.LockError, match=r"\.radcap\.lock is a symbolic link"):
        with files.folder_lock(folder, "run folder"):
            pass
    assert target.read_text() == "user data"


def test_reads_and_writes_at_the_start_without_pread(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "pread")
    monkeypatch.delattr(os, "pwrite")
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"a much longer text")
        portable.write_head(fd, b"1234")
        assert portable.read_head(fd, 64) == b"1234"
    finally:
        os.close(fd)


def test_on_windows_the_app_server_starts_with_no_step_before(monkeypatch):
    from radcap.serving import server

    # subprocess refuses a preexec_fn on Windows (ValueError): none is given.
    with monkeypatch.context() as windows:  # undone before pytest reports
        windows.setattr(server.os, "name", "nt")
        step = server._end_with(os.getpid())
    assert step is None
