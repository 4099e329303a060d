"""Training: whole captions at once over the cached features, resumable, crash-safe.

`train` reads as its steps: hold the run folder, stop if it is already
trained, prepare the data (vocabulary, splits, statistics), build the
captioner, find where to start, fit, summarise.

After every epoch, in this order: the whole state (weights and optimizer) is
written to `backup/epoch-<n>.keras`, the epoch's row to `history.csv`, and,
when the validation loss improved, that state is copied to `best.keras`;
each write is atomic (`radcap.core.files`). So whenever the process dies, the
history's last epoch has its backup, and a rerun continues from it. A rerun
that finds no usable state starts over and says so. A loss that turns NaN or
infinite stops training before its epoch is written (`radcap.training.callbacks`).

Continuing is exact in what radcap controls (the weights, Adam's state, the
epoch's shuffle), but dropout draws after a resume differ from those of an
uninterrupted run, so a resumed run is equal in distribution, not bit for bit.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pandas as pd

from radcap.core.clock import timed
from radcap.core.config import SPLITS, Config
from radcap.core.devices import resolve_strategy, strategy_name
from radcap.core.files import (
    atomic_path,
    check_free_space,
    folder_lock,
    read_json,
    write_json,
)
from radcap.core.text import Vocabulary
from radcap.data import Dataset
from radcap.data import load as load_dataset
from radcap.features.backbone import shared_extractor
from radcap.features.cache import is_cached
from radcap.features.familiarity import Familiarity
from radcap.features.splits import Split, load_split
from radcap.models import runs
from radcap.models.card import write_card
from radcap.models.merge import feature_stats
from radcap.training.callbacks import Progress, run_callbacks
from radcap.training.on_device import feed
from radcap.training.recipe import CAPTIONER, Recipe, build_optimizer


@dataclasses.dataclass
class Prepared:
    """What training needs from the data: vocabulary, both splits, statistics."""

    vocab: Vocabulary
    train: Split
    validation: Split
    stats: dict


def train(
    config: Config,
    dataset: Dataset | None = None,
    root: str | Path = ".",
    callbacks=(),
    verbose: bool = True,
    recipe: Recipe = CAPTIONER,
) -> dict:
    """Train a captioner into `config.run_dir(root)`, resuming if interrupted.

    Skips work already done: a finished run is not trained again, an
    interrupted one continues from its last finished epoch, and a finished
    one asked for more epochs (`config.epochs`, the one field that may
    change) trains on from its best checkpoint. To retrain from scratch, delete
    the run folder or use another run name. One process at a time may train
    a run folder; a second one gets a `radcap.core.files.LockError`.

    Args:
        config: The run configuration.
        dataset: The loaded manifest; default `radcap.data.load(config, root)`.
        root: Folder that the config's relative paths start from.
        callbacks: Extra Keras callbacks, run after radcap's own.
        verbose: Print what was skipped and where the model went.
        recipe: The model to train and its batches: the captioner by
            default (`radcap.retrieval.train` passes the dual encoder's).

    Returns:
        The contents of `training.json`: epochs run, best epoch and
        validation loss, seconds, captions and images left out.
    """
    run_dir = config.run_dir(root)
    with folder_lock(run_dir, "run folder"):
        summary = _already_trained(run_dir, config, verbose)
        if summary is not None:
            return summary
        config.save(run_dir / runs.CONFIG)
        dataset = dataset if dataset is not None else load_dataset(config, root)
        prepared = _prepare(config, dataset, root, run_dir, verbose)
        strategy = _devices(config, verbose)
        with strategy.scope():  # the model, its optimizer state and the fit
            model = recipe.build(
                config, prepared.vocab.size, prepared.stats, verbose=verbose
            )
            _check_space(run_dir, model)
            initial_epoch, history = _resume(model, run_dir, verbose)
            _after_divergence(model, run_dir, config, verbose)
            started = time.perf_counter()
            batches = _batches(recipe, prepared, config, strategy)
            fitted, datasets = feed(model, batches)
            _fit(
                fitted,
                config,
                [batches[0], *datasets],
                run_dir,
                initial_epoch,
                history,
                callbacks,
                verbose,
            )
        seconds = time.perf_counter() - started
        granted = {  # what this machine gave the config's wishes
            "precision": model.dtype_policy.name,
            "strategy": strategy_name(strategy),
            "replicas": int(strategy.num_replicas_in_sync),
            "jit_compile": "on" if model.jit_compile else "off",
            "features_gathered_on": "device" if fitted is not model else "host",
        }
        if recipe.card:  # before training.json, which ends it
            write_card(run_dir, model, dataset)
        return _finish(run_dir, config, prepared, granted, seconds, verbose)


def _already_trained(run_dir: Path, config: Config, verbose: bool) -> dict | None:
    """The summary of a finished run that needs no more epochs, else None."""
    runs.check_config(run_dir, config)
    path = run_dir / runs.TRAINING
    if not path.exists():
        return None
    summary = read_json(path, "training summary")
    stopped_early = summary["epochs_run"] < summary["epochs"]
    if stopped_early or config.epochs <= summary["epochs_run"]:
        if verbose:
            why = " (early stopping ended it)" if stopped_early else ""
            print(
                f"{run_dir} is already trained: {summary['epochs_run']} epochs{why}; "
                "skipping. To train again from scratch, delete the folder or use "
                "another run name."
            )
        return summary
    # Asked for more epochs: from here the run counts as unfinished, even if
    # this is interrupted; it trains on from best.keras (no backup is kept).
    path.unlink()
    return None


def _prepare(
    config: Config, dataset: Dataset, root, run_dir: Path, verbose: bool
) -> Prepared:
    """The vocabulary (built once, then read back), both splits, the statistics."""
    counts = dataset.counts()["captions"]
    if counts["train"] == 0 or counts["validation"] == 0:
        raise ValueError(
            f"Nothing to train on: the dataset has {counts['train']} train and "
            f"{counts['validation']} validation captions. Check its splits and the "
            "rows it skipped (listed above)."
        )
    vocab_path = run_dir / runs.VOCAB
    if vocab_path.exists():
        vocab = Vocabulary.load(vocab_path)
    else:
        vocab = Vocabulary.build(
            dataset.split("train")["caption"], config.min_count, config.max_len
        )
        if vocab.size == 4:
            captions = dataset.split("train")["caption"]
            words = captions.str.split().str.len().sum()
            raise ValueError(
                f"The vocabulary is empty: no word of the {len(captions)} train "
                f"captions ({words} words) occurs min_count={config.min_count} "
                "times. Lower min_count (--set min_count=...)."
            )
        vocab.save(vocab_path)
    vocab.check_beam(config.beam)  # before training, not at evaluation
    extractor = None
    if not all(is_cached(config, s, root) for s in SPLITS[:2]):
        extractor = shared_extractor(config)  # one backbone for both splits
    train = load_split(config, dataset, "train", root, extractor)
    validation = load_split(config, dataset, "validation", root, extractor)
    if len(train.captions) == 0 or len(validation.captions) == 0:
        raise ValueError(
            f"Nothing to train on: {len(train.captions)} train and "
            f"{len(validation.captions)} validation captions are usable. Check the "
            "dataset's splits and its skip report."
        )
    for split in (train, validation):
        if verbose and len(split.skipped):
            print(
                f"{split.name}: {len(split.skipped)} unreadable images left out "
                f"(listed in the feature cache's {split.name}.skipped.csv)"
            )
    stats = {"fc2": feature_stats(train.features, train.rows)}
    if config.uses_grid:
        stats["grid"] = feature_stats(train.grid, train.rows)
    return Prepared(vocab, train, validation, stats)


def _devices(config: Config, verbose: bool):
    """The `tf.distribute.Strategy` the config's `strategy` gets on this machine."""
    strategy, note = resolve_strategy(config.strategy)
    if verbose and note:
        print(f"note: {note}")
    elif verbose and strategy.num_replicas_in_sync > 1:
        print(
            f"training on {strategy.num_replicas_in_sync} replicas "
            f"({strategy_name(strategy)}); each batch of {config.batch_size} "
            "is split across them"
        )
    return strategy


def _check_space(run_dir: Path, model) -> None:
    """Refuse to start when the disk cannot hold two checkpoints and a backup."""
    # Weights and Adam's two moments, float32, in each of three files at most
    # (the backup, its temporary successor, best.keras), with some slack.
    needed = int(model.count_params() * 4 * 3 * 3 * 1.1) + 10_000_000
    check_free_space(run_dir, needed, "the training checkpoints")


def _resume(model, run_dir: Path, verbose: bool) -> tuple[int, pd.DataFrame | None]:
    """Load the last good state into `model`: `(initial_epoch, history or None)`.

    The state after the history's last epoch is its backup; failing that
    (a run folder from an older radcap, or a damaged file), `best.keras`.
    With neither, the run starts over and says so.
    """
    history = runs.read_history(run_dir, verbose)
    if history is not None:
        last = len(history) - 1
        sources = [runs.backup_path(run_dir, last), run_dir / runs.MODEL]
        source = next((p for p in sources if runs.usable_model_file(p)), None)
        if source is not None:
            build_optimizer(model)  # to load its state
            model.load_weights(source)
            _restore_best(run_dir, history, sources[0])
            if verbose:
                print(f"continuing at epoch {last + 2} from {source}")
            return last + 1, history
        if verbose:
            print(
                f"{run_dir}: no usable checkpoint of epoch {last + 1} is left "
                "(damaged or missing); starting over."
            )
    for stale in (run_dir / runs.HISTORY, run_dir / runs.MODEL):
        stale.unlink(missing_ok=True)
    runs.remove_backups(run_dir)
    runs.remove_logs(run_dir)
    return 0, None


def _after_divergence(model, run_dir: Path, config: Config, verbose: bool) -> None:
    """After a divergence, train on with the config's rate, not the resumed one."""
    path = run_dir / runs.DIVERGED
    if not path.is_file():
        return
    diverged = read_json(path, "divergence record")
    model.optimizer.learning_rate.assign(config.learning_rate)
    if verbose:
        print(
            f"note: this run diverged in epoch {diverged['epoch']} with "
            f"learning_rate={diverged['learning_rate']:g}; it goes on with "
            f"learning_rate={config.learning_rate:g}"
        )


def _restore_best(run_dir: Path, history: pd.DataFrame, last_backup: Path) -> None:
    """Make `best.keras` agree with the history after an interrupted epoch end.

    If the last epoch is the best one, its backup is the best state: the
    process may have died before copying it.
    """
    best = int(history["val_loss"].to_numpy().argmin())
    if best == len(history) - 1 and runs.usable_model_file(last_backup):
        with atomic_path(run_dir / runs.MODEL) as tmp:
            shutil.copyfile(last_backup, tmp)


def _batches(recipe: Recipe, prepared, config: Config, strategy) -> list:
    """The `(train, validation)` batches; static in shape under a TPU, which
    compiles for fixed shapes (every batch full, validation's too)."""
    static = strategy_name(strategy) == "tpu"
    return [
        recipe.batches(split, prepared.vocab, config, split.name == "train", static)
        for split in (prepared.train, prepared.validation)
    ]


@timed("train")
def _fit(model, config, data, run_dir, initial_epoch, history, extra, verbose):
    """Run the epochs from `initial_epoch` to `config.epochs`; `data` is the
    train `Batches` and the `(train, validation)` datasets (`feed`)."""
    train_batches, train_data, val_data = data
    callbacks = run_callbacks(config, run_dir, history, train_batches, extra, verbose)
    try:
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        )
    finally:  # a fit stopped by an error ends no bar; its message needs a line
        for bar in (c for c in callbacks if isinstance(c, Progress)):
            bar.on_train_end()


def _finish(
    run_dir: Path, config: Config, prepared: Prepared, granted: dict, seconds, verbose
):
    """Write `training.json`, drop the backups, and say where the model went."""
    history = runs.read_history(run_dir, verbose=False)
    best = int(history["val_loss"].idxmin())
    summary = {
        "epochs": config.epochs,
        "epochs_run": len(history),
        "best_epoch": int(history["epoch"][best]) + 1,
        "best_val_loss": float(history["val_loss"][best]),
        "seconds_last_fit": round(seconds, 1),
        "train_captions": len(prepared.train.captions),
        "validation_captions": len(prepared.validation.captions),
        "vocab_size": prepared.vocab.size,
        **granted,
        "skipped_images": int(
            len(prepared.train.skipped) + len(prepared.validation.skipped)
        ),
    }
    _write_familiarity(run_dir, prepared.train, prepared.validation, config, verbose)
    write_json(run_dir / runs.TRAINING, summary)
    runs.remove_backups(run_dir)
    if verbose:
        print(
            f"best model (epoch {summary['best_epoch']}, val_loss "
            f"{summary['best_val_loss']:.3f}): {run_dir / runs.MODEL}"
        )
    return summary


@timed("familiarity")
def _write_familiarity(
    run_dir: Path, train: Split, validation: Split, config: Config, verbose: bool
) -> Familiarity:
    """Fit the familiarity reference on the cached block means and save it."""
    reference = Familiarity.fit(
        train.block_means,
        validation.image_block_means(),
        rows=train.rows,
        seed=config.seed,
    )
    reference.save(run_dir / runs.FAMILIARITY)
    if verbose:
        print(
            f"familiarity reference: {len(reference.reference)} training images, "
            f"threshold {reference.threshold:.3f} (the {reference.quantile:.0%} "
            f"quantile of {len(validation.image_ids)} validation images)"
        )
    return reference


def add_familiarity(
    run_dir: str | Path, root: str | Path = ".", verbose: bool = True
) -> Familiarity:
    """Give a trained run its familiarity reference, from its cached features.

    Training writes it; this is for runs trained before radcap had it (or
    to recompute it). Nothing is trained again; missing feature caches are
    extracted.

    Args:
        run_dir: The run folder.
        root: Folder that the run config's relative paths start from.
        verbose: Say what was written.
    """
    run_dir = runs.check(run_dir)
    config = runs.load_config(run_dir)
    with folder_lock(run_dir, "run folder"):
        dataset = load_dataset(config, root)
        splits = [load_split(config, dataset, s, root) for s in ("train", "validation")]
        return _write_familiarity(run_dir, *splits, config, verbose)
