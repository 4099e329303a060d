"""The run folder: the one place that knows its files, checks it and loads it.

Loading imports `radcap.models.merge`, which registers the captioner's Keras
classes.

```
checkpoints/<run>/   config.json   the Config the run was trained with
                     vocab.json    its vocabulary
                     best.keras    the captioner at its best validation loss
                     history.csv   one row per finished epoch
                     training.json written when training ends (its summary)
                     familiarity.npz  the training images' features, in
                                   brief, to flag unfamiliar inputs
                     MODEL_CARD.md what the model is and is for, how it
                                   scored: written by training, rewritten
                                   by evaluation (`radcap.models.card`)
                     metrics.json, report.md, captions_<split>.csv, controls/
                                   written by evaluation
                     evaluation.json  written last by evaluation: the model
                                   and settings it scored, the outputs' digests
                     backup/       resume state while training runs
                     diverged.json where training diverged (epoch, learning
                                   rate), until a rerun finishes an epoch
                     export/       the SavedModel of `radcap export` (its
                                   default place; `--out` puts it elsewhere)
```

A retrieval run (`radcap retrieval`) has the same files with a dual
encoder (`radcap.models.dual`) in `best.keras`, no model card, and
`index.npz`: the embeddings of the dataset's images and captions
(`radcap.retrieval.index`); its `metrics.json` holds a "retrieval" section.

Every module names these files through the constants here, never as string
literals of its own.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd

from radcap.core.config import CONFIG_FILE, Config
from radcap.core.files import remove_stale_partials, write_text
from radcap.core.text import Vocabulary
from radcap.features.familiarity import Familiarity

CONFIG = CONFIG_FILE
VOCAB = "vocab.json"
MODEL = "best.keras"
HISTORY = "history.csv"
TRAINING = "training.json"
FAMILIARITY = "familiarity.npz"
METRICS = "metrics.json"
REPORT = "report.md"
MODEL_CARD = "MODEL_CARD.md"
EVALUATION = "evaluation.json"  # written last: which model the outputs belong to
BACKUP = "backup"
DIVERGED = "diverged.json"
LOGS = "logs"  # TensorBoard
CONTROLS = "controls"
COMPARISON = "comparison.md"
EXPORT = "export"
INDEX = "index.npz"  # a retrieval run's embeddings
DUAL_ENCODER = "DualEncoder"  # the class of a retrieval run's model
REQUIRED = (CONFIG, VOCAB, MODEL)


def captions_file(split: str) -> str:
    """The name of the table of generated captions for `split`."""
    return f"captions_{split}.csv"


def evaluation_outputs(split: str) -> tuple[str, ...]:
    """The files an evaluation of `split` writes, committed as a unit by
    `EVALUATION` (see `radcap.evaluation.evaluate`); the model card among
    them, so that it never shows the scores of an evaluation that did not
    finish."""
    return (METRICS, captions_file(split), REPORT, MODEL_CARD)


class RunError(FileNotFoundError):
    """A folder that is not a usable radcap run folder."""


def resolve(run: str | Path, root: str | Path = ".", config: Config | None = None):
    """The folder `--run` names: a folder as given, else a run name.

    Args:
        run: A path to a run folder, or the name of a run.
        root: The working folder.
        config: Whose `checkpoints_dir` holds named runs; default the
            `Config` default (`checkpoints`).
    """
    path = Path(run)
    if path.is_dir():
        return path
    checkpoints = (config or Config()).checkpoints_dir
    return Path(root) / checkpoints / str(run)


def check(run_dir: str | Path) -> Path:
    """Return `run_dir` as a Path, or say clearly why it is not a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(
            f"Run folder {run_dir} does not exist. Train one first with "
            "`radcap demo` or `radcap train`, or pass the right --run."
        )
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise RunError(
            f"{run_dir} is not a radcap run folder: it lacks {', '.join(missing)}. "
            "A run folder is made by `radcap train` (or `radcap demo`) and holds "
            f"{', '.join(REQUIRED)}."
        )
    return run_dir


def is_trained(run_dir: str | Path) -> bool:
    """Whether training of this run folder has finished (`training.json` exists)."""
    return (Path(run_dir) / TRAINING).is_file()


def load_config(run_dir: str | Path) -> Config:
    """The run's `Config`."""
    return Config.load(Path(run_dir) / CONFIG)


def check_config(run_dir: str | Path, config: Config) -> None:
    """Refuse to train `run_dir` on with a config other than its own.

    Training longer is a fine reason to run again, and another machine may
    train on with other devices or precision (the weights are float32). The
    beam is used only after training, so an unfinished run may change it
    (a beam wider than the vocabulary stops training before it starts). A
    run that diverged (`DIVERGED`) may go on with another learning rate.

    Raises:
        ValueError: The saved config differs in another field.
    """
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return
    saved = Config.load(path).to_dict()
    diff = {k: (saved[k], v) for k, v in config.to_dict().items() if saved[k] != v}
    for field in ("epochs", "precision", "strategy"):
        diff.pop(field, None)
    if not is_trained(run_dir):
        diff.pop("beam", None)
    if (Path(run_dir) / DIVERGED).is_file():
        diff.pop("learning_rate", None)
    if diff:
        lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{run_dir} holds a run made with another config ({lines}). "
            "Use another run name (--run / Config.name), or delete that folder."
        )


def load_vocab(run_dir: str | Path) -> Vocabulary:
    """The run's vocabulary."""
    return Vocabulary.load(Path(run_dir) / VOCAB)


def familiarity_hint(run_dir: str | Path) -> str:
    """What to run when a run folder has no familiarity reference."""
    return (
        f"{Path(run_dir) / FAMILIARITY} is missing (a run trained before radcap "
        "had it): familiarity is unknown. Add it from the cached features with "
        f"`radcap familiarity --run {run_dir}` (no retraining)."
    )


def load_familiarity(run_dir: str | Path) -> Familiarity | None:
    """The run's familiarity reference, or None when it has none."""
    path = Path(run_dir) / FAMILIARITY
    return Familiarity.load(path) if path.is_file() else None


def _model_class(path: Path) -> str:
    """The class name recorded in a `.keras` file, or a reason it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise RunError(
            f"{path} is damaged ({type(err).__name__}: {err}), probably by an "
            "interrupted write. Train the run again: delete the folder and run "
            "`radcap train` with the same settings."
        ) from None
    return str(config.get("class_name"))


def load_model(run_dir: str | Path):
    """The run's captioner (`best.keras`), ready for `radcap.decoding.search`.

    Raises:
        RunError: The file is damaged, or was written by radcap 0.1, whose
            model file cannot be read by this version; the message says how
            to train the run again.
    """
    import keras

    import radcap.models.dual  # noqa: F401  (registers the dual encoder's classes)
    import radcap.models.merge  # noqa: F401  (registers the captioner's classes)

    path = Path(run_dir) / MODEL
    if path.stat().st_size == 0:
        raise RunError(
            f"{path} is empty (0 bytes): it was being written when the process "
            "stopped. Run `radcap train` for this run again to continue it."
        )
    if _model_class(path) == "Functional":
        name = Path(run_dir).name
        raise RunError(
            f"{path} was written by radcap 0.1, whose model file this version "
            "cannot read. Train the run again with this version, under a new "
            f"name: `radcap train --config {Path(run_dir) / CONFIG} --run "
            f"{name}-v2` (or delete {run_dir} and run the same `radcap train` or "
            "`radcap demo` as before). The feature caches are reused, so only "
            "the training runs again."
        )
    return keras.saving.load_model(path, compile=False)


def is_retrieval_run(run_dir: str | Path) -> bool:
    """Whether `run_dir`'s model is a dual encoder (a `radcap retrieval` run);
    False for a missing or damaged model file (`load_model` says what it is)."""
    try:
        return _model_class(Path(run_dir) / MODEL) == DUAL_ENCODER
    except RunError:
        return False


def finished_runs(run_dir: str | Path, retrieval: bool) -> list[Path]:
    """The finished runs beside `run_dir` made from the same features, by name.

    Same features: the same `dataset`, `weights` and `features_dir`. A
    finished retrieval run also has its `INDEX`; `retrieval` picks those
    (else the captioners). Damaged run folders are passed over.

    Args:
        run_dir: A run folder; its siblings are searched (not itself).
        retrieval: Retrieval runs, or captioner runs.
    """
    config = load_config(run_dir)
    same = ("dataset", "weights", "features_dir")
    found = []
    for other in sorted(Path(run_dir).parent.iterdir()):
        if other == Path(run_dir) or not is_trained(other):
            continue
        try:
            theirs = load_config(other)
            kind = is_retrieval_run(other)
        except (OSError, ValueError, RunError):
            continue
        agree = all(getattr(theirs, k) == getattr(config, k) for k in same)
        if agree and kind == retrieval and (not retrieval or (other / INDEX).is_file()):
            found.append(other)
    return found


def backup_path(run_dir: str | Path, epoch: int) -> Path:
    """The resume state after `epoch` (0-based) while training runs."""
    return Path(run_dir) / BACKUP / f"epoch-{epoch}.keras"


def remove_backups(run_dir: str | Path) -> None:
    """Remove the resume states in `backup/`, and the folder once it is empty.

    Only radcap's own files go: a file of yours in `backup/` stays (and so
    does the folder).
    """
    folder = Path(run_dir) / BACKUP
    for path in folder.glob("epoch-*.keras"):
        path.unlink(missing_ok=True)
    remove_stale_partials(folder)
    _remove_if_empty(folder)


def remove_logs(run_dir: str | Path) -> None:
    """Remove TensorBoard's event files from `logs/`, and its folders once empty.

    TensorBoard writes `logs/<train|validation>/events.out.tfevents.*`; a
    file of yours in `logs/` stays (and so do the folders that hold it).
    """
    folder = Path(run_dir) / LOGS
    for path in folder.glob("*/events.out.tfevents.*"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
    for sub in folder.glob("*"):
        _remove_if_empty(sub)
    _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()


def usable_model_file(path: str | Path) -> bool:
    """Whether a `.keras` file is complete: a readable zip that holds the weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            return "model.weights.h5" in names and archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def read_history(run_dir: Path, verbose: bool = True) -> pd.DataFrame | None:
    """The finished epochs in `history.csv`, or None when there are none.

    A file that is empty or damaged (written by an older radcap that was
    interrupted) counts as none, with a message.
    """
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return None
    try:
        history = pd.read_csv(path)
        ok = {"epoch", "val_loss"} <= set(history) and len(history) > 0
        ok = ok and history["epoch"].tolist() == list(range(len(history)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        ok = False
    if not ok:
        if verbose:
            print(f"{path} holds no usable epochs (an interrupted run); ignoring it.")
        return None
    return history


def write_history(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite `history.csv` with every finished epoch, atomically."""
    frame = pd.DataFrame(rows)
    frame = frame[["epoch", *sorted(c for c in frame.columns if c != "epoch")]]
    write_text(Path(run_dir) / HISTORY, frame.to_csv(index=False))
