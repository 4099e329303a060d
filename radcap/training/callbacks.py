"""The Keras callbacks of a training run: epoch seeds, divergence, the epoch writer,
progress, logs.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import keras
from tqdm.auto import tqdm

from radcap.core.files import atomic_path, kill_point, write_json
from radcap.models import runs


class EpochSeed(keras.callbacks.Callback):
    """Tells the train batches which epoch starts (for its shuffle seed)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        kill_point(f"epoch-{self.batches.epoch}-batch-{batch}")


class DivergedError(ValueError):
    """Training's loss became NaN or infinite (see `Divergence`)."""


class Divergence(keras.callbacks.Callback):
    """Stops training when a loss is no longer finite, before the epoch is written.

    The diverged epoch leaves no backup and no history row, so a rerun goes
    on from the last good epoch (or starts over when there is none). The run
    folder records the divergence (`radcap.models.runs.DIVERGED`), which lets that
    rerun change the learning rate.

    Args:
        run_dir: The run folder.
        learning_rate: The config's learning rate, the likeliest cause.
    """

    def __init__(self, run_dir: Path, learning_rate: float):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.learning_rate = learning_rate
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, ("loss",))

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, ("loss", "val_loss"))

    def _check(self, logs, keys) -> None:
        for key in keys:
            value = float((logs or {}).get(key, 0.0))
            if not math.isfinite(value):
                self._stop(key, value)

    def _stop(self, key: str, value: float):
        names = {"loss": "training loss", "val_loss": "validation loss"}
        epoch, rate = self.epoch + 1, self.learning_rate
        record = {"epoch": epoch, "learning_rate": rate}
        write_json(self.run_dir / runs.DIVERGED, record)
        lower = min(rate / 10, 1e-3)
        rerun = (
            f"it goes on from epoch {epoch - 1}, the last good one."
            if epoch > 1
            else "no epoch finished before it, so the rerun starts over."
        )
        raise DivergedError(
            f"Training diverged in epoch {epoch}: the {names[key]} became {value}. The "
            f"likeliest cause is learning_rate={rate:g}, too high: lower it (e.g. "
            f"--set learning_rate={lower:g}) and run again with the same run name; "
            + rerun
        )


class EpochWriter(keras.callbacks.Callback):
    """Writes a finished epoch into the run folder: backup, history, best model.

    In this order, each write atomic: the whole state (weights and optimizer)
    to `backup/epoch-<n>.keras`, the history with the new row, then, if the
    validation loss improved, a copy of the backup as `best.keras`. Older
    backups are removed last. See `radcap.training.train` for why this order.

    Args:
        run_dir: The run folder.
        history: The epochs finished before this fit (a DataFrame), or None.
    """

    def __init__(self, run_dir: Path, history=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.rows = [] if history is None else history.to_dict("records")
        self.best = min((r["val_loss"] for r in self.rows), default=float("inf"))

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        backup = runs.backup_path(self.run_dir, epoch)
        with atomic_path(backup) as tmp:
            self.model.save(tmp)
        self.rows.append({"epoch": epoch, **logs})
        runs.write_history(self.run_dir, self.rows)
        if logs["val_loss"] < self.best:
            self.best = logs["val_loss"]
            with atomic_path(self.run_dir / runs.MODEL) as tmp:
                shutil.copyfile(backup, tmp)
        for old in backup.parent.glob("epoch-*.keras"):
            if old != backup:
                old.unlink(missing_ok=True)
        # A good epoch after a divergence: the backup holds the new rate.
        (self.run_dir / runs.DIVERGED).unlink(missing_ok=True)


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


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """The plateau schedule, with its counts carried over a resume.

    Keras counts the epochs without improvement afresh in every `fit`; this
    one first replays the history's validation losses and rates, so that a
    resumed run lowers the rate when the uninterrupted one would. The rate
    itself comes back with the optimizer's state.

    Args:
        history: The run's `history.csv` so far, or None.
    """

    def __init__(self, history, **kwargs):
        super().__init__(mode="min", **kwargs)
        self.history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.history is None:
            return
        rates = self.history["learning_rate"].tolist()
        for epoch, current in enumerate(self.history["val_loss"].tolist()):
            if self.cooldown_counter > 0:
                self.cooldown_counter -= 1
                self.wait = 0
            if self.best is None or current < self.best - abs(self.min_delta):
                self.best, self.wait = current, 0
            elif self.cooldown_counter <= 0:
                self.wait += 1
                lowered = epoch > 0 and rates[epoch] < rates[epoch - 1]
                if self.wait >= self.patience and lowered:
                    self.cooldown_counter, self.wait = self.cooldown, 0


def run_callbacks(config, run_dir: Path, history, batches, extra, verbose) -> list:
    """The callbacks of a training run, in order, then `extra` (the caller's)."""
    # Divergence first: a diverged epoch must reach no other callback.
    found = [EpochSeed(batches), Divergence(run_dir, config.learning_rate)]
    if config.lr_patience:  # before the writer, which then records the rate
        found.append(
            ReduceLROnPlateau(
                history,
                monitor="val_loss",
                factor=config.lr_factor,
                patience=config.lr_patience,
                min_lr=config.learning_rate / 100,
            )
        )
    found.append(EpochWriter(run_dir, history))
    if config.early_stopping:
        found.append(
            EarlyStopping(history, monitor="val_loss", patience=config.early_stopping)
        )
    if importlib.util.find_spec("tensorboard") is not None:
        logs = str(run_dir / runs.LOGS)  # one point per epoch, no graph
        found.append(keras.callbacks.TensorBoard(logs, write_graph=False))
    elif verbose:
        print("note: TensorBoard is not installed; no logs/ (pip install tensorboard)")
    if verbose:
        found.append(Progress(config.epochs))
    return found + list(extra)
