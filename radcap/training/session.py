"""What a notebook needs from the notebooks before it, found or made here.

Colab gives every notebook its own runtime and Kaggle its own machine, so
notebook 04 may start where notebooks 01 to 03 never ran. `prepare`, one
line in notebooks 02 to 05, looks for what the notebook reads (the dataset,
the feature caches, the trained runs) in this order:

1. the working folder (in Colab it is on Google Drive by default, where the
   earlier notebooks wrote: nothing more to do);
2. on Kaggle, the earlier notebooks' outputs added as inputs
   (`/kaggle/input/<notebook>/`, each the working folder of that notebook).
   Those are read-only: a run folder is copied into the working folder
   (`radcap.training.resume.copy_run`), the demo's images too (small); a
   feature cache is linked file by file (radcap only reads a finished cache;
   a split whose unreadable images will be read again is copied instead);
3. made here, for the demo presets (minutes), with one line that says so.

For ROCO (hours of work) the notebook stops instead with one line that names
the notebook to run first: `MissingStepError`, which IPython and papermill
show as that line, without a traceback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from radcap import data
from radcap.core.config import SPLITS, Config
from radcap.core.files import partial_path
from radcap.core.workspace import in_colab, on_kaggle, place
from radcap.data.download import link_roco
from radcap.data.images import RETRY_NOTE
from radcap.data.roco import find_roco, roco_layout
from radcap.features.backbone import layers_for
from radcap.features.cache import cache_dir, is_cached
from radcap.models import runs
from radcap.training.resume import copy_run
from radcap.training.train import train

# What each stage reads, made by the notebook named.
STAGES = ("features", "train", "evaluate", "retrieval")
NOTEBOOKS = {
    "data": "01_download_data.ipynb",
    "features": "02_extract_features.ipynb",
    "run": "03_train.ipynb",
}


class MissingStepError(RuntimeError):
    """An earlier notebook's output is missing, and it takes too long to make here."""

    def _render_traceback_(self) -> list[str]:
        # IPython (and so papermill and nbclient) shows these lines instead
        # of a traceback: the message is all the user needs.
        return [f"{type(self).__name__}: {self}"]


def prepare(config: Config, root: str | Path, stage: str) -> list[str]:
    """Find or make what a notebook of `stage` reads, in the working folder `root`.

    Args:
        config: The notebook's config (`preset(PRESET, ...)`).
        root: The working folder (`WORKDIR`).
        stage: `"features"` (notebook 02: the dataset), `"train"` (03: the
            dataset and its features), `"evaluate"` (04: those and the run)
            or `"retrieval"` (05: the dataset, its features and the runs of
            a Kaggle input, copied; the notebook trains its own run).

    Returns:
        The lines said, one per thing found elsewhere or made here.

    Raises:
        MissingStepError: Something is missing that only an earlier notebook
            makes in reasonable time (ROCO's data, features or run).
        ValueError: An unknown `stage`.
    """
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}; choose one of {STAGES}.")
    root = Path(root).resolve()  # the lines name whole paths
    inputs = kaggle_inputs()
    notes = [_data(config, root, inputs)]
    if stage != "features":
        splits = SPLITS[:2] if stage == "train" else SPLITS
        notes += [_features(config, root, inputs, splits)]
    if stage == "evaluate":
        notes += _runs(config, root, inputs)
    if stage == "retrieval":
        notes += _copied_runs(config, root, inputs)
    notes = [note for note in notes if note]
    for note in notes:
        print(note, flush=True)
    if stage == "evaluate" and not runs.is_trained(config.run_dir(root)):
        train(config, data.load(config, root), root, verbose=False)
    return notes


def kaggle_inputs() -> list[Path]:
    """The inputs of this Kaggle notebook that hold a radcap working folder.

    An input may sit one or two levels down (`/kaggle/input/<name>/` or
    `/kaggle/input/<kind>/<name>/`); empty outside Kaggle.
    """
    if not on_kaggle() or not place("KAGGLE_INPUT").is_dir():
        return []
    base = place("KAGGLE_INPUT")
    found = []
    for folder in sorted([*base.glob("*"), *base.glob("*/*")]):
        names = ("data", "features", "checkpoints")
        if folder.is_dir() and any((folder / name).is_dir() for name in names):
            found.append(folder)
    return found


def _data(config: Config, root: Path, inputs: list[Path]) -> str | None:
    dest = config.dataset_dir(root)
    if config.source == "demo":
        if dest.is_dir():
            return None
        for folder in inputs:
            source = config.dataset_dir(folder)
            if source.is_dir():
                _copy_tree(source, dest)
                return f"Copied the {config.dataset} images from {source} to {dest}."
        return (
            f"No {config.dataset} data in {dest} ({NOTEBOOKS['data']} did not "
            "run with this working folder): drawing it here (seconds)."
        )
    if config.source != "roco" or _holds_roco(dest) or find_roco() is not None:
        return None
    for folder in inputs:
        source = config.dataset_dir(folder)
        if _holds_roco(source):
            link_roco(source, dest)
            return f"{dest} points at ROCO in {source}."
    raise MissingStepError(_first("data", f"ROCO in {dest}"))


def _features(config: Config, root: Path, inputs: list[Path], splits) -> str | None:
    if all(is_cached(config, split, root) for split in splits):
        return None
    for folder in inputs:
        if all(is_cached(config, split, folder) for split in splits):
            for layer in layers_for(config):
                source = cache_dir(config, layer, folder)
                _link_cache(source, cache_dir(config, layer, root))
            return f"Reading the feature caches of {source.parent} (linked here)."
    if config.source != "demo":
        raise MissingStepError(
            _first("features", f"features of {', '.join(splits)} in {root}")
        )
    return (
        f"No features in {cache_dir(config, 'fc2', root).parent} "
        f"({NOTEBOOKS['features']} did not run with this working folder): "
        "they are extracted here (minutes)."
    )


def _runs(config: Config, root: Path, inputs: list[Path]) -> list[str]:
    """Trained runs of this dataset in the inputs, copied here; the one asked for."""
    notes = _copied_runs(config, root, inputs)
    run_dir = config.run_dir(root)
    if runs.is_trained(run_dir):
        return notes
    if config.source != "demo":
        raise MissingStepError(_first("run", f"trained run in {run_dir}"))
    return [
        *notes,
        f"No trained run in {run_dir} ({NOTEBOOKS['run']} did not run with "
        "this working folder): training it here with the preset's settings "
        "(minutes).",
    ]


def _copied_runs(config: Config, root: Path, inputs: list[Path]) -> list[str]:
    """The trained runs of this dataset in the inputs, copied here (a line each)."""
    notes = []
    for folder in inputs:
        for source in sorted(config.run_dir(folder).parent.glob("*")):
            if not runs.is_trained(source):
                continue
            found = runs.load_config(source)
            if found.dataset == config.dataset and not runs.is_trained(
                found.run_dir(root)
            ):
                copy_run(source, root, verbose=False)
                notes.append(f"Copied run {found.name!r} from {source}.")
    return notes


def _first(step: str, what: str) -> str:
    """The line that names the notebook to run first, and how, on this host."""
    if in_colab():
        how = (
            "with DRIVE left on (its default), so that it writes to Google "
            "Drive, where this notebook looks"
        )
    elif on_kaggle():
        how = "and add its output to this notebook as an input (Add Input > Your Work)"
    else:
        how = "with the same WORKDIR"
    return f"No {what}: run {NOTEBOOKS[step]} first (PRESET = 'roco') {how}."


def _holds_roco(folder: Path) -> bool:
    try:
        roco_layout(folder)
    except FileNotFoundError:
        return False
    return True


def _copy_tree(source: Path, dest: Path) -> None:
    """Copy `source` to `dest` whole or not at all (links are not followed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    shutil.copytree(source, partial, symlinks=True)
    os.replace(partial, dest)


def _link_cache(source: Path, dest: Path) -> None:
    """Link a finished cache's files into `dest`, a folder of this session's.

    Writes into `dest` (a lock, a new split) replace a link, never write
    through it; only a split read again in place (`RETRY_NOTE`) is copied.
    """
    dest.mkdir(parents=True, exist_ok=True)
    again = {
        path.name.split(".")[0]
        for path in source.glob("*.skipped.csv")
        if RETRY_NOTE in path.read_text()
    }
    for path in sorted(source.iterdir()):
        target = dest / path.name
        if not path.is_file() or "partial" in path.name or os.path.lexists(target):
            continue
        if path.suffix == ".npy" and path.stem in again:
            shutil.copyfile(path, target)
        else:
            target.symlink_to(path.resolve())
