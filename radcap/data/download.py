"""Getting ROCO: the Kaggle input mount, a local copy, or a download from Kaggle.

Only `download_roco` goes to the network, through the `kaggle` package, which
is imported inside it: importing `kaggle` without credentials exits the program.
Everything else here (finding credentials, checking a folder's layout,
unzipping) works offline.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

from radcap.core.config import preset
from radcap.core.files import write_json
from radcap.core.workspace import in_colab
from radcap.data import roco
from radcap.data.roco import check_roco_layout, find_roco

DATASET = "virajbagal/roco-dataset"
ARCHIVE = "roco-dataset.zip"  # the name the kaggle package downloads to
STAMP = ".complete"  # written once a download is unzipped and checked


class DownloadError(RuntimeError):
    """A download that cannot run or did not finish; the message says what to do."""


def ways_out(dest: str | Path) -> str:
    """The ways to get ROCO when the download cannot run, as one paragraph."""
    return (
        "Ways to fix it: (1) create an API token on kaggle.com (Settings > API > "
        "Create New Token) and save it as ~/.kaggle/kaggle.json (chmod 600); "
        "(2) or set the KAGGLE_USERNAME and KAGGLE_KEY environment variables; "
        f"(3) in a Kaggle notebook, Add Input > {DATASET}: radcap reads it from "
        f"{roco.KAGGLE_INPUT} without downloading; (4) download the archive from "
        f"https://www.kaggle.com/datasets/{DATASET} and unzip it into {dest}; "
        "(5) or run everything offline on the synthetic demo (preset 'demo')."
    )


def _config_dirs() -> list[Path]:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return [home / ".kaggle", xdg]


def kaggle_credentials() -> dict | None:
    """Find Kaggle API credentials the way the `kaggle` package does, offline.

    Looks at the `KAGGLE_USERNAME` and `KAGGLE_KEY` environment variables,
    then `KAGGLE_API_TOKEN`, then `kaggle.json` (or an `access_token` file) in
    `$KAGGLE_CONFIG_DIR`, else in `~/.kaggle` and `~/.config/kaggle`.

    Returns:
        `{"username": str | None, "source": where they were found}`, or None
        when there are none. The key itself is not returned.

    Raises:
        DownloadError: A `kaggle.json` exists but is not valid JSON or lacks
            `username` or `key`.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return {
            "username": os.environ["KAGGLE_USERNAME"],
            "source": "KAGGLE_USERNAME and KAGGLE_KEY",
        }
    if os.environ.get("KAGGLE_API_TOKEN"):
        return {"username": None, "source": "KAGGLE_API_TOKEN"}
    for folder in _config_dirs():
        path = folder / "kaggle.json"
        if path.is_file():
            try:
                values = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                values = None
            if not isinstance(values, dict) or not all(
                values.get(k) for k in ("username", "key")
            ):
                raise DownloadError(
                    f"{path} is not a Kaggle token: expected JSON with 'username' "
                    "and 'key'. Download a new one from kaggle.com (Settings > API "
                    "> Create New Token) and replace the file."
                )
            return {"username": values["username"], "source": str(path)}
        token = folder / "access_token"
        if token.is_file() and token.read_text().strip():
            return {"username": None, "source": str(token)}
    return None


def link_roco(found: str | Path, dest: str | Path) -> Path:
    """Make `dest` (the dataset folder the `roco` preset reads) point at `found`.

    Lets later steps read a copy that lives elsewhere (the Kaggle mount, a
    folder of yours) without copying gigabytes. A link or an empty folder at
    `dest` is replaced; a folder with files in it is left alone.

    Returns:
        `dest`.

    Raises:
        DownloadError: `dest` is a non-empty folder of its own.
    """
    found, dest = Path(found).resolve(), Path(dest)
    if dest.resolve() == found:
        return dest
    if dest.is_symlink():
        dest.unlink()
    elif dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    elif dest.exists():
        raise DownloadError(
            f"{dest} already holds files that are not a complete ROCO copy, so it "
            f"cannot point at {found}. Move {dest} away (or delete it), or use it "
            "as the ROCO folder."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(found, target_is_directory=True)
    return dest


def unzip(archive: str | Path, dest: str | Path) -> int:
    """Unpack a zip archive into `dest`, refusing members that would land outside.

    Returns:
        The number of members unpacked.

    Raises:
        DownloadError: The archive is damaged (an interrupted download) or
            holds paths outside `dest`.
    """
    dest = os.path.abspath(dest)
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
            for name in names:
                target = os.path.abspath(os.path.join(dest, name))
                if os.path.commonpath([dest, target]) != dest:
                    raise DownloadError(
                        f"{archive} holds {name!r}, which would land outside "
                        f"{dest}: refusing to unzip it."
                    )
            zipped.extractall(dest)
    except zipfile.BadZipFile as err:
        raise DownloadError(
            f"{archive} is not a complete zip archive ({err}), probably an "
            "interrupted download: delete it and download again."
        ) from None
    return len(names)


def _kaggle_api():
    """An authenticated `KaggleApi`; the import exits without credentials."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
    except ImportError:
        raise DownloadError(
            "The kaggle package is not installed: pip install kaggle."
        ) from None
    except (Exception, SystemExit) as err:
        raise DownloadError(
            f"Kaggle did not accept the credentials ({err!r}). "
            + ways_out("the dataset folder")
        ) from None
    return api


def download_roco(
    dest: str | Path, force: bool = False, kaggle_input: str | Path | None = None
) -> Path:
    """Download ROCO from Kaggle into `dest`, unzip it and check the layout.

    Idempotent: a complete copy (with its `.complete` stamp) is not fetched
    again, and inside a Kaggle notebook with the dataset attached the mounted
    input is returned instead of downloading.

    Args:
        dest: Target folder; the data lands in `dest/all_data`.
        force: Download again even if a complete copy exists.
        kaggle_input: The Kaggle input mount to use; default `KAGGLE_INPUT`.

    Returns:
        The folder holding ROCO (`dest`, or the Kaggle mount).

    Raises:
        DownloadError: No credentials, a failed download or an incomplete
            archive; the message says how to fix it.
    """
    dest = Path(dest)
    if not force:
        if (dest / STAMP).is_file() and not check_roco_layout(dest):
            return dest
        mounted = find_roco(kaggle_input=kaggle_input)
        if mounted is not None:
            return mounted
    if kaggle_credentials() is None:
        raise DownloadError(
            f"No Kaggle API credentials found, so {DATASET} cannot be downloaded "
            f"into {dest}. " + ways_out(dest)
        )
    api = _kaggle_api()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        api.dataset_download_files(DATASET, path=str(dest), force=force, quiet=False)
    except Exception as err:  # network and HTTP errors come in many types
        raise DownloadError(
            f"Downloading {DATASET} into {dest} failed ({err}). Check the internet "
            "connection, then run the same command again."
        ) from err
    archive = dest / ARCHIVE
    if archive.is_file():
        unzip(archive, dest)
        archive.unlink()
    missing = check_roco_layout(dest)
    if missing:
        raise DownloadError(
            f"{dest} is incomplete after the download; missing: {missing}. "
            "Run again with force=True (radcap download roco --force)."
        )
    stamp = {"dataset": DATASET, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(dest / STAMP, stamp)
    return dest


def ask_for_kaggle_token(kind: str, roco_dir: str | Path | None = None) -> bool:
    """In Colab, ask for `kaggle.json` when ROCO is wanted and nothing else has it.

    Does nothing (and returns False) outside Colab, for the demo, when ROCO
    is already on this machine, or when credentials exist.

    Returns:
        Whether a token was uploaded and saved as `~/.kaggle/kaggle.json`.
    """
    if not (kind == "roco" and in_colab()):
        return False
    if find_roco(roco_dir) is not None or kaggle_credentials() is not None:
        return False
    from google.colab import files

    print("Upload kaggle.json (kaggle.com > Settings > API > Create New Token):")
    uploaded = files.upload()
    if not uploaded:
        return False
    token = Path.home() / ".kaggle" / "kaggle.json"
    token.parent.mkdir(exist_ok=True)
    token.write_bytes(next(iter(uploaded.values())))
    token.chmod(0o600)
    return True


def prepare_dataset(kind: str, root: str | Path = ".", roco_dir=None):
    """The dataset notebook 01 goes on with, found or fetched, and why.

    For `"roco"`, in this order: the Kaggle input mount, `roco_dir`, a copy
    downloaded before into the dataset folder, a download when Kaggle
    credentials exist. The dataset folder (`data/roco`) is then made to
    point at the copy found, so later steps read it without copying. With
    none of these, it falls back to the demo and says how to get ROCO.

    Args:
        kind: The preset asked for, `"demo"`, `"hard"` or `"roco"`.
        root: The working folder.
        roco_dir: A folder that already holds ROCO, if any.

    Returns:
        `(config, message)`: the preset to go on with and a few lines saying
        where the data comes from.
    """
    config = preset(kind)
    dest = config.dataset_dir(root)
    found = find_roco(roco_dir)  # the Kaggle input first, then roco_dir
    if kind != "roco":
        if found is not None:
            return config, (
                f"Using the demo, but ROCO is available in {found}: set PRESET = "
                "'roco' in every notebook to use it."
            )
        return config, (
            f"PRESET = {kind!r}: using the synthetic {'hard ' * (kind == 'hard')}demo "
            "dataset (drawn offline the first time). Set PRESET = 'roco' for the "
            "real ROCO dataset."
        )
    if found is None and dest.is_dir() and not check_roco_layout(dest):
        found = dest  # downloaded by an earlier run
    if found is None and kaggle_credentials() is not None:
        found = download_roco(dest)
    if found is None:
        return preset("demo"), (
            "ROCO was not found: no Kaggle input, no ROCO_DIR, no earlier download "
            "and no Kaggle credentials.\n" + ways_out(dest) + "\n\nGoing on with "
            "the synthetic demo. Keep PRESET = 'demo' in notebooks 02-04 until "
            "ROCO is here."
        )
    link_roco(found, dest)
    return config, f"ROCO found in {found}; {dest} points at it."
