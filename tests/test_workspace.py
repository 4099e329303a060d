"""The working folder on each host: a clone, Colab with or without Drive, Kaggle."""

from pathlib import Path

import pytest

from radcap.core import workspace
from radcap.core.workspace import workdir


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A machine with no RADCAP_WORKDIR, not Colab, not Kaggle, in `tmp_path`.

    `host.colab()` and `host.kaggle()` make it one; `host.mounts` counts
    the times Drive was mounted.
    """
    monkeypatch.delenv("RADCAP_WORKDIR", raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(workspace, "DRIVE_MOUNT", tmp_path / "content/drive")
    monkeypatch.setattr(
        workspace, "DRIVE_FOLDER", tmp_path / "content/drive/MyDrive/radcap"
    )
    monkeypatch.setattr(workspace, "KAGGLE_WORKING", tmp_path / "kaggle/working")
    monkeypatch.setattr(workspace, "in_colab", lambda: False)

    class Host:
        mounts = 0

        def colab(self):
            monkeypatch.setattr(workspace, "in_colab", lambda: True)

            def mount():
                Host.mounts += 1
                (tmp_path / "content/drive/MyDrive").mkdir(parents=True, exist_ok=True)

            monkeypatch.setattr(workspace, "mount_drive", mount)

        def kaggle(self):
            monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")

    return Host()


def test_a_notebook_in_a_clone_writes_into_the_clone(host, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    (clone / "radcap").mkdir(parents=True)
    (clone / "notebooks").mkdir()
    monkeypatch.chdir(clone / "notebooks")
    assert workdir().resolve() == clone.resolve()
    assert workdir(tmp_path / "mine") == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()
    monkeypatch.chdir(tmp_path)
    assert workdir() == Path(".")


def test_radcap_workdir_wins_everywhere(host, tmp_path, monkeypatch):
    monkeypatch.setenv("RADCAP_WORKDIR", str(tmp_path / "ci"))
    assert workdir(tmp_path / "mine") == tmp_path / "ci"
    host.colab()
    host.kaggle()
    assert workdir(drive=True, preset="roco") == tmp_path / "ci"
    assert host.mounts == 0 and (tmp_path / "ci").is_dir()


def test_colab_keeps_every_preset_on_drive_unless_drive_is_false(host, tmp_path):
    host.colab()
    assert workdir(preset="demo") == workspace.DRIVE_FOLDER
    assert workspace.DRIVE_FOLDER.is_dir() and host.mounts == 1
    assert workdir(preset="roco") == workspace.DRIVE_FOLDER
    assert workdir(preset="hard") == workspace.DRIVE_FOLDER and host.mounts == 3
    assert workdir(drive=False, preset="demo") == Path(".")
    assert workdir(drive=False, preset="roco") == Path(".")
    assert host.mounts == 3
    # A WORKDIR on Drive is mounted first, whatever DRIVE says.
    mine = workspace.DRIVE_MOUNT / "MyDrive" / "mine"
    assert workdir(mine, drive=False) == mine and host.mounts == 4


def test_the_host_folders_move_with_their_environment_variables(
    host, tmp_path, monkeypatch
):
    monkeypatch.setenv("RADCAP_DRIVE_MOUNT", str(tmp_path / "drive"))
    monkeypatch.setenv("RADCAP_KAGGLE_INPUT", str(tmp_path / "in"))
    monkeypatch.setenv("RADCAP_KAGGLE_WORKING", str(tmp_path / "out"))
    assert workspace.place("KAGGLE_INPUT") == tmp_path / "in"
    assert workspace.drive_folder() == tmp_path / "drive/MyDrive/radcap"
    assert not workspace.on_kaggle()
    (tmp_path / "out").mkdir()
    assert workspace.on_kaggle() and workdir() == tmp_path / "out"


def test_kaggle_writes_into_kaggle_working(host, tmp_path):
    host.kaggle()
    assert workdir(preset="roco") == tmp_path / "kaggle/working"
    assert workdir(tmp_path / "mine") == tmp_path / "mine"  # WORKDIR still wins


def test_drive_outside_colab_warns_and_stays_here(host):
    with pytest.warns(UserWarning, match="DRIVE = True works in Colab only"):
        assert workdir(drive=True, preset="roco") == Path(".")
    assert host.mounts == 0


def test_drive_is_mounted_once(tmp_path, monkeypatch):
    monkeypatch.setattr(workspace, "DRIVE_MOUNT", tmp_path / "drive")
    with pytest.raises(ModuleNotFoundError, match="google"):
        workspace.mount_drive()  # not in Colab: google.colab is missing
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    workspace.mount_drive()  # mounted before: nothing to do
