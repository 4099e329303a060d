"""Training: whole captions at once over the cached features, resumable.

One training example is one caption: inputs `tokens[:-1]`, targets
`tokens[1:]`, padding masked out of the loss. Batches group captions of
similar length and are cut to their longest caption, so little time goes
into padding. Features are gathered per batch from the (memory-mapped)
cache: nothing is copied per word or per caption.

A run folder `checkpoints/<run>/` ends up with config.json, vocab.json,
best.keras (lowest validation loss), history.csv and training.json; while
training, `backup/` holds the last finished epoch, so an interrupted run
continues from there when started again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radcap.config import Config
from radcap.text import Vocabulary


class Batches:
    """Length-bucketed batches of `(inputs, targets)` for one split, as a generator.

    Args:
        tokens: `(N, max_len + 2)` int32 encoded captions, 0-padded.
        rows: `(N,)` row of each caption's image in the feature arrays.
        arrays: `{"features": (M, 4096)}` plus `{"grid": (M, R, 512)}`,
            numpy or memory-mapped.
        batch_size: Captions per batch.
        shuffle: Shuffle (train) or keep a fixed order (validation).
        seed: Shuffling seed; the order of epoch `e` depends on `seed + e` only,
            so a resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(
        self, tokens, rows, arrays: dict, batch_size: int, shuffle: bool, seed: int = 0
    ):
        self.tokens = np.asarray(tokens, np.int32)
        self.rows = np.asarray(rows, np.int64)
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.lengths = (self.tokens != 0).sum(1)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Caption indices of each batch of one epoch."""
        n, bs = len(self.tokens), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[s : s + bs] for s in range(0, n, bs)]
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(n)
        # Sort by length inside chunks of 50 batches: similar lengths, still random.
        chunk = bs * 50
        batches = []
        for s in range(0, n, chunk):
            part = order[s : s + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + bs] for i in range(0, len(part), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch(self, index: np.ndarray):
        """`(inputs, targets)` for the captions `index`."""
        # Cut to the longest caption. The input pipeline's shapes are dynamic, so
        # new widths cost no retracing, only a slower first step at each width.
        width = int(self.lengths[index].max())
        tokens = self.tokens[index, :width]
        rows = self.rows[index]
        order = np.argsort(rows)  # gather sorted rows from the memory map
        inputs = {}
        for name, array in self.arrays.items():
            gathered = np.empty((len(rows), *array.shape[1:]), np.float32)
            gathered[order] = array[rows[order]]
            inputs[name] = gathered
        inputs["tokens"] = tokens[:, :-1]
        return inputs, tokens[:, 1:]

    def __len__(self) -> int:
        return -(-len(self.tokens) // self.batch_size)

    def __call__(self):
        for index in self.plan(self.epoch):
            yield self.batch(index)

    def dataset(self):
        """A `tf.data.Dataset` over this generator, prefetching one batch ahead."""
        import tensorflow as tf

        signature = {
            name: tf.TensorSpec((None, *a.shape[1:]), tf.float32)
            for name, a in self.arrays.items()
        }
        signature["tokens"] = tf.TensorSpec((None, None), tf.int32)
        data = tf.data.Dataset.from_generator(
            self, output_signature=(signature, tf.TensorSpec((None, None), tf.int32))
        )
        return data.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(
            2
        )


def _callback_classes():
    import keras

    class EpochSeed(keras.callbacks.Callback):
        """Tells the train batches which epoch starts (for its shuffle seed)."""

        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def on_epoch_begin(self, epoch, logs=None):
            self.batches.epoch = epoch

    class Progress(keras.callbacks.Callback):
        """A tqdm bar over epochs with the latest losses."""

        def __init__(self, epochs):
            super().__init__()
            self.epochs = epochs
            self.bar = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.bar is None:
                self.bar = tqdm(
                    total=self.epochs, initial=epoch, desc="training", unit="epoch"
                )

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix(
                {k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "val_loss")}
            )
            self.bar.update(1)

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.close()

    class EarlyStopping(keras.callbacks.EarlyStopping):
        """Early stopping that also counts the epochs before a resume.

        Args:
            history: The run's `history.csv` so far, or None.
        """

        def __init__(self, history, **kwargs):
            super().__init__(**kwargs)
            self.history = history

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.history is not None:
                losses = self.history["val_loss"].to_numpy()
                self.best = float(losses.min())
                self.wait = len(losses) - 1 - int(losses.argmin())

    return EpochSeed, Progress, EarlyStopping


def split_data(
    config: Config,
    dataset,
    split: str,
    vocab: Vocabulary,
    root: str | Path = ".",
    extractor=None,
) -> dict:
    """Cached features and encoded captions of one split.

    Images whose file could not be decoded are left out here, and listed.

    Returns:
        `{"tokens", "rows", "arrays", "skipped", "image_ids"}`.
    """
    from radcap.features import extract

    images = dataset.images(split)
    cached = extract(config, images, split, root, extractor=extractor)
    fc2 = cached[config.layer]
    failed = set(fc2.skipped["image_id"].astype(str))
    rows = dataset.split(split)
    rows = rows[~rows["image_id"].astype(str).isin(failed)]
    arrays = {"features": fc2.array}
    if config.attention:
        arrays["grid"] = cached[config.grid_layer].array
    return {
        "tokens": vocab.encode_batch(rows["caption"]),
        "rows": fc2.rows(rows["image_id"].astype(str)),
        "arrays": arrays,
        "skipped": fc2.skipped,
        "image_ids": rows["image_id"].astype(str).tolist(),
    }


def _check_config(run_dir: Path, config: Config) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = Config.load(path).to_dict()
    diff = {k: (saved[k], v) for k, v in config.to_dict().items() if saved.get(k) != v}
    diff.pop("epochs", None)  # training longer is a fine reason to run again
    if diff:
        lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{run_dir} holds a run made with another config ({lines}). "
            "Use another run name (--run / Config.name), or delete that folder."
        )


def train(
    config: Config,
    dataset=None,
    root: str | Path = ".",
    callbacks=(),
    verbose: bool = True,
) -> dict:
    """Train a captioner into `config.run_dir(root)`, resuming if interrupted.

    Skips work already done: a finished run is not trained again, an
    interrupted one continues from its last finished epoch, and a finished
    one asked for more epochs (`config.epochs`, the one field that may
    change) trains on from its best checkpoint. To retrain from scratch,
    delete the run folder or use another run name.

    Args:
        config: The run configuration.
        dataset: A `radcap.datasets.Dataset`; default
            `radcap.datasets.load(config, root)`.
        root: Folder that the config's relative paths start from.
        callbacks: Extra Keras callbacks, run after radcap's own.
        verbose: Print what was skipped and where the model went.

    Returns:
        The contents of `training.json`: epochs run, best epoch and
        validation loss, seconds, captions and images left out.
    """
    import keras

    from radcap.features import Extractor, is_cached
    from radcap.model import build_model, feature_stats

    run_dir = config.run_dir(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    summary_path = run_dir / "training.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        stopped_early = summary["epochs_run"] < summary["epochs"]
        if stopped_early or config.epochs <= summary["epochs_run"]:
            if verbose:
                why = " (early stopping ended it)" if stopped_early else ""
                print(
                    f"{run_dir} is already trained: {summary['epochs_run']} "
                    f"epochs{why}; skipping. To train again from scratch, delete "
                    "the folder or use another run name."
                )
            return summary
        # Asked for more epochs: train on from the best checkpoint (below).
        # From here the run counts as unfinished, even if this is interrupted.
        summary_path.unlink()
    config.save(run_dir / "config.json")

    if dataset is None:
        from radcap import datasets

        dataset = datasets.load(config, root)
    vocab_path = run_dir / "vocab.json"
    if vocab_path.exists():
        vocab = Vocabulary.load(vocab_path)
    else:
        vocab = Vocabulary.build(
            dataset.split("train")["caption"], config.min_count, config.max_len
        )
        vocab.save(vocab_path)
    extractor = None
    if not all(is_cached(config, s, root) for s in ("train", "validation")):
        extractor = Extractor(config)  # one backbone for both splits
    train_data = split_data(config, dataset, "train", vocab, root, extractor)
    val_data = split_data(config, dataset, "validation", vocab, root, extractor)
    if len(train_data["tokens"]) == 0 or len(val_data["tokens"]) == 0:
        raise ValueError(
            f"Nothing to train on: {len(train_data['tokens'])} train and "
            f"{len(val_data['tokens'])} validation captions are usable. Check the "
            "dataset's splits and its skip report."
        )
    for name, data in (("train", train_data), ("validation", val_data)):
        if verbose and len(data["skipped"]):
            print(
                f"{name}: {len(data['skipped'])} unreadable images left out "
                f"(listed in the feature cache's {name}.skipped.csv)"
            )

    used = np.unique(train_data["rows"])
    stats = {"fc2": feature_stats(train_data["arrays"]["features"], used)}
    if config.attention:
        stats["grid"] = feature_stats(train_data["arrays"]["grid"], used)

    keras.utils.set_random_seed(config.seed)
    model = build_model(config, vocab.size, stats)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        ),
    )
    train_batches = Batches(
        train_data["tokens"],
        train_data["rows"],
        train_data["arrays"],
        config.batch_size,
        True,
        config.seed,
    )
    val_batches = Batches(
        val_data["tokens"],
        val_data["rows"],
        val_data["arrays"],
        config.batch_size,
        False,
    )

    # Where to start: BackupAndRestore picks up an interrupted epoch loop from
    # backup/; without one, a run with finished epochs (trained on with more
    # epochs, or stopped between its checkpoint and its backup) continues from
    # best.keras (weights and Adam's state); anything else starts fresh.
    history_path = run_dir / "history.csv"
    backup_dir = run_dir / "backup"
    history = pd.read_csv(history_path) if history_path.exists() else None
    if history is not None and not ("val_loss" in history and len(history)):
        history = None
    initial_epoch = 0
    if history is not None and not backup_dir.exists():
        if (run_dir / "best.keras").exists():
            model.optimizer.build(model.trainable_variables)  # to load its state
            model.load_weights(run_dir / "best.keras")
            initial_epoch = int(history["epoch"].max()) + 1
            if verbose:
                print(
                    f"continuing from {run_dir / 'best.keras'} at epoch "
                    f"{initial_epoch + 1}"
                )
        else:
            history = None
    if history is None and history_path.exists():
        history_path.unlink()  # a fresh start: no stale epochs in the log
    best_so_far = None if history is None else float(history["val_loss"].min())

    EpochSeed, Progress, EarlyStopping = _callback_classes()
    callback_list = [EpochSeed(train_batches)]
    if config.lr_patience:  # before the logger, which then records the rate
        callback_list.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=config.lr_factor,
                patience=config.lr_patience,
                min_lr=config.learning_rate / 100,
            )
        )
    callback_list += [
        keras.callbacks.ModelCheckpoint(
            run_dir / "best.keras",
            monitor="val_loss",
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.BackupAndRestore(backup_dir),
    ]
    if config.early_stopping:
        callback_list.append(
            EarlyStopping(history, monitor="val_loss", patience=config.early_stopping)
        )
    if verbose:
        callback_list.append(Progress(config.epochs))
    callback_list += list(callbacks)

    started = time.perf_counter()
    model.fit(
        train_batches.dataset(),
        validation_data=val_batches.dataset(),
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callback_list,
        shuffle=False,
        verbose=0,
    )
    seconds = time.perf_counter() - started

    history = pd.read_csv(history_path)
    best = int(history["val_loss"].idxmin())
    summary = {
        "epochs": config.epochs,
        "epochs_run": int(history["epoch"].max()) + 1,
        "best_epoch": int(history["epoch"][best]) + 1,
        "best_val_loss": float(history["val_loss"][best]),
        "seconds_last_fit": round(seconds, 1),
        "train_captions": len(train_data["tokens"]),
        "validation_captions": len(val_data["tokens"]),
        "vocab_size": vocab.size,
        "skipped_images": int(len(train_data["skipped"]) + len(val_data["skipped"])),
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(backup_dir, ignore_errors=True)
    if verbose:
        print(
            f"best model (epoch {summary['best_epoch']}, val_loss "
            f"{summary['best_val_loss']:.3f}): {run_dir / 'best.keras'}"
        )
    return summary
