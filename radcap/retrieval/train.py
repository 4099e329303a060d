"""Training the dual encoder as radcap trains a captioner, then its index.

`train_retrieval` runs `radcap.training.train.train` with the dual
encoder's `Recipe` (`DUAL_ENCODER`): the same run folder and its lock, the
same resume after a kill, epoch writer, divergence stop, progress bar,
TensorBoard logs and `training.json`; only the model and its batches differ.
Then it embeds every split into the run's `index.npz` (once per model
file: a run trained on for more epochs gets a new index).

A batch is a set of (image, caption) pairs, grouped by caption length as
the captioner's are (`radcap.training.batches.Batches`, whose per-epoch
shuffle a resumed run repeats). Its targets are the `(B, B)` matrix of pairs
that belong together: the same cleaned caption or the same image
(`radcap.models.dual.contrastive_loss`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radcap.core.clock import timed
from radcap.core.config import SPLITS, Config, preset
from radcap.core.devices import resolve_precision
from radcap.core.files import file_digest, folder_lock
from radcap.core.text import Vocabulary, clean_caption
from radcap.data import Dataset
from radcap.data import load as load_dataset
from radcap.features.splits import Split, load_split
from radcap.models import runs
from radcap.models.dual import build_dual_encoder, contrastive_loss
from radcap.retrieval.index import Index, embed_features, embed_tokens
from radcap.training.batches import Batches
from radcap.training.recipe import JIT_COMPILE, Recipe, build_optimizer
from radcap.training.train import train

# A dual encoder's batch size unless set otherwise (presets: 32 or 64): a
# contrastive batch's other pairs are its negatives, so more is better.
RETRIEVAL_BATCH = 64


def retrieval_preset(kind: str, /, name: str | None = None, **overrides) -> Config:
    """The config of a preset's dual encoder, as `radcap retrieval` makes it.

    The run is `<kind>-retrieval` unless `name` says otherwise, with batches
    of `RETRIEVAL_BATCH` unless `overrides` set `batch_size`.
    """
    overrides = {"batch_size": RETRIEVAL_BATCH, **overrides}
    return preset(kind, name or f"{kind}-retrieval", **overrides)


class PairBatches(Batches):
    """Batches of `(inputs, targets)`: images and captions, and which belong together.

    Args:
        tokens: `(N, max_len + 2)` int32 encoded captions, 0-padded.
        rows: `(N,)` row of each caption's image in the feature arrays.
        keys: `(N,)` int64, equal for captions that are equal once cleaned.
        arrays: `{"features": (M, 4096)}` plus `{"grid": ...}`.
        batch_size: Pairs per batch (no batch is filled up: an empty row
            would be a negative of every other).
        shuffle: Shuffle (train) or keep a fixed order (validation).
        seed: Shuffling seed (see `Batches`).
    """

    def __init__(self, tokens, rows, keys, arrays, batch_size, shuffle, seed=0):
        super().__init__(tokens, rows, arrays, batch_size, shuffle, seed, fill=False)
        self.keys = np.asarray(keys, np.int64)

    def batch(self, index: np.ndarray):
        """`(inputs, targets)`: the whole captions, and `(B, B)` float32 targets."""
        inputs, _ = super().batch(index)
        width = inputs["tokens"].shape[1] + 1  # the text tower reads `<end>` too
        inputs["tokens"] = self.tokens[index, :width]
        keys, rows = self.keys[index], self.rows[index]
        same = (keys[:, None] == keys[None, :]) | (rows[:, None] == rows[None, :])
        return inputs, same.astype(np.float32)

    def element_spec(self):
        """`(inputs, targets)` as `tf.TensorSpec`s: the targets are `(B, B)`."""
        import tensorflow as tf

        inputs = super().element_spec()[0]
        inputs["tokens"] = tf.TensorSpec((None, None), tf.int32)  # one longer
        return inputs, tf.TensorSpec((None, None), tf.float32)

    def _flat_batch(self, index: np.ndarray) -> list[np.ndarray]:
        inputs, targets = self.batch(index)
        return [*dict(sorted(inputs.items())).values(), targets]


def caption_keys(captions) -> np.ndarray:
    """`(N,)` int64: one number per distinct cleaned caption, first seen first."""
    seen: dict[str, int] = {}
    return np.array(
        [seen.setdefault(clean_caption(c), len(seen)) for c in captions], np.int64
    )


def pair_batches(
    split: Split, vocab: Vocabulary, config: Config, shuffle: bool, static=False
):
    """A split's (image, caption) pairs as `PairBatches` over its feature caches.

    `static` (a TPU) is not followed: a filled-up row would be a negative of
    every other pair, so the last batch keeps its size (one more shape).
    """
    arrays = {"features": split.features}
    if config.uses_grid:
        arrays["grid"] = split.grid
    captions = split.captions["caption"]
    return PairBatches(
        vocab.encode_batch(captions),
        split.caption_rows(),
        caption_keys(captions),
        arrays,
        config.batch_size,
        shuffle,
        config.seed,
    )


def new_dual_encoder(config: Config, vocab_size: int, stats=None, verbose=True):
    """A dual encoder with fresh weights from `config.seed`, compiled for training:
    Adam at `learning_rate`, `contrastive_loss`, XLA as `jit_compile` says."""
    import keras

    precision, note = resolve_precision(config.precision)
    if note and verbose:
        print(f"note: {note}")
    keras.utils.set_random_seed(config.seed)
    model = build_dual_encoder(config, vocab_size, stats, precision)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=contrastive_loss,
        jit_compile=JIT_COMPILE[config.jit_compile],
    )
    build_optimizer(model)
    return model


# The dual encoder's recipe for `radcap.training.train.train`.
DUAL_ENCODER = Recipe(new_dual_encoder, pair_batches, card=False)


def train_retrieval(
    config: Config,
    dataset: Dataset | None = None,
    root: str | Path = ".",
    callbacks=(),
    verbose: bool = True,
) -> dict:
    """Train (or continue) a dual encoder into `config.run_dir(root)`, then index.

    Every guarantee of `radcap.training.train.train` holds (the lock, resume,
    atomic writes, a finished run not trained again); the index of every
    split is written after training, unless the run's index already belongs
    to its model file.

    Args:
        config: The run configuration (`radcap.core.config.preset`).
        dataset: The loaded manifest; default `radcap.data.load(config, root)`.
        root: Folder that the config's relative paths start from.
        callbacks: Extra Keras callbacks.
        verbose: Print progress and where things went.

    Returns:
        The contents of `training.json`.
    """
    dataset = dataset if dataset is not None else load_dataset(config, root)
    summary = train(config, dataset, root, callbacks, verbose, recipe=DUAL_ENCODER)
    run_dir = config.run_dir(root)
    with folder_lock(run_dir, "run folder"):
        path = run_dir / runs.INDEX
        digest = file_digest(run_dir / runs.MODEL)
        if not path.is_file() or Index.load(path).model != digest:
            index = build_index(run_dir, dataset, root, digest)
            index.save(path)
            if verbose:
                print(
                    f"index: {len(index.image_ids)} images, {len(index.captions)} "
                    f"distinct captions: {path}"
                )
    return summary


@timed("index")
def build_index(run_dir: Path, dataset: Dataset, root, digest: str = "") -> Index:
    """Embed every readable image of every split and every distinct caption."""
    config = runs.load_config(run_dir)
    model, vocab = runs.load_model(run_dir), runs.load_vocab(run_dir)
    parts = {key: [] for key in ("ids", "paths", "splits", "own", "images")}
    captions: dict[str, list] = {}  # cleaned caption: [splits, first image]
    for name in SPLITS:
        split = load_split(config, dataset, name, root)
        features, grid = split.image_features()
        paths = dict(
            zip(
                dataset.split(name)["image_id"].astype(str), dataset.split(name)["path"]
            )
        )
        references = split.references()
        parts["ids"] += split.image_ids
        parts["paths"] += [str(paths[i]) for i in split.image_ids]
        parts["splits"] += [name] * len(split.image_ids)
        parts["own"] += [references[i][0] for i in split.image_ids]
        parts["images"].append(embed_features(model, features, grid))
        for image_id, caption in zip(
            split.captions["image_id"], split.captions["caption"]
        ):
            entry = captions.setdefault(clean_caption(caption), [set(), image_id])
            entry[0].add(name)
    texts = list(captions)
    return Index(
        image_ids=np.array(parts["ids"], str),
        paths=np.array(parts["paths"], str),
        splits=np.array(parts["splits"], str),
        image_captions=np.array(parts["own"], str),
        images=np.concatenate(parts["images"]).astype(np.float32),
        captions=np.array(texts, str),
        caption_splits=np.array(
            [[s in captions[t][0] for s in SPLITS] for t in texts], bool
        ).reshape(len(texts), len(SPLITS)),
        caption_images=np.array([captions[t][1] for t in texts], str),
        texts=embed_tokens(model, vocab.encode_batch(texts)).astype(np.float32),
        model=digest,
    )
