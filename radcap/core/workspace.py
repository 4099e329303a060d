"""The working folder: where data/, features/ and checkpoints/ go, on each host.

A notebook calls `workdir` once, in its setup cell. Colab resets its machine
after a disconnect and everything on its local disk is gone, so there the
working folder can live on Google Drive (`drive`); on Kaggle it is
`/kaggle/working`, whose contents a saved notebook version keeps as its
output (an earlier run comes back from it with `radcap.training.resume.copy_run`).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

ENV = "RADCAP_WORKDIR"  # tests and CI point it at a temporary folder
DRIVE_MOUNT = Path("/content/drive")  # where Colab mounts Google Drive
DRIVE_FOLDER = DRIVE_MOUNT / "MyDrive" / "radcap"
KAGGLE_INPUT = Path("/kaggle/input")  # earlier notebooks' outputs, read-only
KAGGLE_WORKING = Path("/kaggle/working")
# The hosts' folders can be moved (tests stand in for Colab and Kaggle in a
# temporary folder): these environment variables are read at every call.
PLACES = {
    "DRIVE_MOUNT": "RADCAP_DRIVE_MOUNT",
    "KAGGLE_INPUT": "RADCAP_KAGGLE_INPUT",
    "KAGGLE_WORKING": "RADCAP_KAGGLE_WORKING",
}


def place(name: str) -> Path:
    """The host folder `name` ("DRIVE_MOUNT", "KAGGLE_INPUT", "KAGGLE_WORKING").

    Its environment variable in `PLACES` when set, else the module constant.
    """
    return Path(os.environ.get(PLACES[name]) or globals()[name])


def drive_folder() -> Path:
    """The working folder on Google Drive: `DRIVE_FOLDER`, under a moved mount."""
    if os.environ.get(PLACES["DRIVE_MOUNT"]):
        return place("DRIVE_MOUNT") / "MyDrive" / "radcap"
    return DRIVE_FOLDER


def in_colab() -> bool:
    """Whether this Python runs in Google Colab."""
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def on_kaggle() -> bool:
    """Whether this Python runs in a Kaggle notebook."""
    return (
        bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))
        or place("KAGGLE_WORKING").is_dir()
    )


def mount_drive() -> None:
    """Mount Google Drive at `DRIVE_MOUNT` (Colab asks for permission once)."""
    if (place("DRIVE_MOUNT") / "MyDrive").is_dir():  # mounted by an earlier cell
        return
    from google.colab import drive  # only in Colab

    drive.mount(str(place("DRIVE_MOUNT")))


def wants_drive(drive: bool | None, preset: str | None) -> bool:
    """The `DRIVE` parameter resolved: None means Drive whenever in Colab.

    Colab gives every notebook its own runtime and wipes its disk after a
    disconnect: on Drive, what notebook 01 made is there for 02, and so on.
    `DRIVE = False` keeps the folder on the runtime's disk (the demo and
    hard presets then make what they lack; see `radcap.training.session`).
    `preset` is kept for the callers; every preset now gets the same default.
    """
    del preset  # every preset: the notebooks of one preset share the folder
    if drive is None:
        return in_colab()
    if drive and not in_colab():
        warnings.warn(
            "DRIVE = True works in Colab only (Google Drive is mounted through "
            "google.colab); the working folder stays on this machine.",
            stacklevel=3,
        )
        return False
    return bool(drive)


def workdir(
    folder: str | Path | None = None,
    drive: bool | None = None,
    preset: str | None = None,
) -> Path:
    """The folder that a notebook's data/, features/ and checkpoints/ go in.

    In order: the `RADCAP_WORKDIR` environment variable (tests and CI);
    `folder` when given; in Colab with Drive, `DRIVE_FOLDER` on Google Drive
    (which survives a reset of the machine); on Kaggle, `/kaggle/working`
    (kept as the notebook version's output); the repository's root when the
    current folder is the `notebooks/` folder of a clone (so a local Jupyter
    writes where the command-line tools do); else the current folder. Drive
    is mounted first when it is wanted or `folder` lies on it. The folder is
    created.

    Args:
        folder: The notebook's `WORKDIR` parameter; None for the order above.
        drive: The notebook's `DRIVE` parameter: keep the folder on Google
            Drive (Colab only); None: yes in Colab, False: no.
        preset: The notebook's `PRESET` (the default of `drive` is the same
            for every preset).
    """
    if os.environ.get(ENV):
        path = Path(os.environ[ENV])
    else:
        on_drive = wants_drive(drive, preset)
        if on_drive or (in_colab() and _lies_on_drive(folder)):
            mount_drive()
        if folder is not None:
            path = Path(folder)
        elif on_drive:
            path = drive_folder()
        elif on_kaggle():
            path = place("KAGGLE_WORKING")
        elif Path.cwd().name == "notebooks" and (Path.cwd().parent / "radcap").is_dir():
            path = Path.cwd().parent
        else:
            path = Path(".")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lies_on_drive(folder: str | Path | None) -> bool:
    mount = place("DRIVE_MOUNT")
    return folder is not None and Path(folder).absolute().is_relative_to(mount)
