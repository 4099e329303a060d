"""How training builds, compiles and batches a captioner, for every caller alike.

`radcap.training.train` runs these steps; the benchmarks and the tests that
train or evaluate a captioner call the same functions, so what they measure
or check is the training recipe itself, not a copy of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from radcap.core.config import Config
from radcap.core.devices import resolve_precision
from radcap.core.text import Vocabulary
from radcap.features.splits import Split
from radcap.models.merge import build_captioner
from radcap.training.batches import Batches, token_loss


def new_captioner(
    config: Config,
    vocab_size: int,
    stats: dict | None = None,
    precision: str | None = None,
    verbose: bool = True,
):
    """The captioner training starts from: fresh weights drawn from `config.seed`.

    Args:
        config: The run's config (sizes, `seed`, `learning_rate`, `precision`).
        vocab_size: Number of token ids.
        stats: Normalisation statistics from the train split (see
            `radcap.models.merge.build_captioner`).
        precision: A Keras dtype policy to use as it is; default the config's
            `precision` as this machine can run it
            (`radcap.core.devices.resolve_precision`; a note says when it
            cannot).
        verbose: Print that note.

    Returns:
        The captioner, compiled by `compile_captioner`.
    """
    import keras

    if precision is None:
        precision, note = resolve_precision(config.precision)
        if note and verbose:
            print(f"note: {note}")
    keras.utils.set_random_seed(config.seed)
    model = build_captioner(config, vocab_size, stats, precision)
    return compile_captioner(model, config)


def compile_captioner(model, config: Config):
    """`model` compiled as training compiles it: Adam at the config's
    `learning_rate` and `token_loss`, for `split_batches`' weighted batches,
    with XLA as the config's `jit_compile` says (`model.jit_compile` tells
    what `"auto"` became).

    Returns:
        The same model.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=token_loss(),
        jit_compile=JIT_COMPILE[config.jit_compile],
    )
    build_optimizer(model)
    return model


def build_optimizer(model) -> None:
    """Make the compiled `model`'s optimizer state now (once: a no-op after).

    Keras otherwise makes it while it traces the first training step, and
    TensorFlow traces a function that makes variables twice: the whole step,
    gradients and all, about a second more of every training on a CPU. Call
    it where the model was made (inside its distribution strategy's scope).
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


# `Config.jit_compile` as Keras' `jit_compile`.
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


def split_batches(
    split: Split, vocab: Vocabulary, config: Config, shuffle: bool, static=False
):
    """A split's captions as length-bucketed `Batches` over its feature caches.

    Args:
        split: The split (its captions, feature caches and caption rows).
        vocab: The run's vocabulary.
        config: `batch_size` and `seed`.
        shuffle: Shuffle and fill the last batch up (train), or keep a fixed
            order and the last batch's size (validation; see `Batches`).
        static: Shapes for a TPU: every batch filled up, validation's too.
    """
    arrays = {"features": split.features}
    if split.grid is not None:
        arrays["grid"] = split.grid
    tokens = vocab.encode_batch(split.captions["caption"])
    rows = split.caption_rows()
    return Batches(
        tokens,
        rows,
        arrays,
        config.batch_size,
        shuffle,
        config.seed,
        fill=shuffle,
        static=static,
    )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What `radcap.training.train.train` needs to know of the model it trains.

    The run folder, its lock, resuming, the epoch writer, progress, logs and
    the summary are the same for every model radcap trains; these are not.

    Attributes:
        build: `(config, vocab_size, stats, verbose=...)` → the compiled
            model with fresh weights drawn from `config.seed`.
        batches: `(split, vocab, config, shuffle, static)` → `Batches` (or
            a subclass) whose `dataset()` feeds the model's `fit`; `static`
            asks for a TPU's fixed shapes.
        card: Write the captioner's model card (`radcap.models.card`).
    """

    build: Callable
    batches: Callable
    card: bool = True


# The captioner's recipe, the default of `train`.
CAPTIONER = Recipe(new_captioner, split_batches, card=True)
