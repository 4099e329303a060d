"""The merge-style captioner: an LSTM over the words, the image merged in at every step.

```
features (B, 4096) ─ FeatureNormalization ─ Dropout ─ Dense(units) ─┐ image
tokens (B, T) ─ Embedding ─ Dropout ─ LSTM/GRU ─ (B, T, units) ───────┤ add ─ Dropout
grid (B, R, 512) ─ FeatureNormalization ─ Dense(units) ─ Bahdanau ────┘ context
        ─ Dense(units, relu) ─ Dense(vocab_size) → logits (B, T, vocab_size)
```

The image never enters the recurrence (Tanti et al. 2018), so training runs
on whole captions at once, and the attention context (queried by the LSTM
output) keeps it parallel over time too. The forward pass is written once,
in `MergeCaptioner.call_with_cache`: `call` runs it over whole captions
(teacher forcing), `step` one token at a time from the recurrent state, for
the searches in `radcap.decoding.search`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from radcap.core.config import Config
from radcap.features.backbone import FEATURE_SHAPES, GRID_SHAPES, LAYER
from radcap.models.layers import BahdanauAttention, FeatureNormalization, dtype_scope
from radcap.models.transformer import TransformerCaptioner


@keras.saving.register_keras_serializable(package="radcap")
class MergeCaptioner(keras.Model):
    """Merge decoder (Tanti et al.), optionally with Bahdanau attention.

    Every sublayer is an attribute and is built in the constructor, so a
    model loaded from its config is ready for its weights.

    Args:
        vocab_size: Number of token ids (0 is padding).
        embed_dim: Word embedding size.
        units: Recurrent units, also the size of the image projection.
        dropout: Dropout on embeddings, image projection and merge output.
        cell: `"lstm"` or `"gru"`.
        attention: Attend over grid regions (then inputs include `grid`).
        attention_units: Hidden size of the attention scorer.
        feature_dim: Width of the whole-image features (4096 for `fc2`).
        grid_dim: Width of a grid region's features (512 for VGG16).

    Call arguments:
        inputs: `{"features": (B, feature_dim), "tokens": (B, T) int32}`
            plus `"grid": (B, R, grid_dim)` with attention; token 0 is
            padding and is masked.
        training: Dropout on when True.

    Returns:
        Next-token logits `(B, T, vocab_size)` float32.

    Reference:
        Tanti, Gatt, Camilleri. Where to put the image in an image caption
        generator. Natural Language Engineering, 2018.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        units: int = 512,
        dropout: float = 0.3,
        cell: str = "lstm",
        attention: bool = False,
        attention_units: int = 256,
        feature_dim: int = FEATURE_SHAPES[LAYER][0],
        grid_dim: int = 512,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.embed_dim = int(embed_dim)
        self.units = int(units)
        self.dropout = float(dropout)
        self.cell = cell
        self.attention = bool(attention)
        self.attention_units = int(attention_units)
        self.feature_dim = int(feature_dim)
        self.grid_dim = int(grid_dim)
        with dtype_scope(self.dtype_policy):  # mixed precision reaches them
            # Created in the order of the data flow: with a fixed seed, the same
            # initial weights and dropout streams as every radcap version since 0.1.
            self.fc2_norm = FeatureNormalization(feature_dim, name="fc2_norm")
            self.image_dropout = keras.layers.Dropout(dropout, name="image_dropout")
            self.image_proj = keras.layers.Dense(
                units, activation="relu", name="image_proj"
            )
            self.embedding = keras.layers.Embedding(
                vocab_size, embed_dim, mask_zero=True, name="embedding"
            )
            self.word_dropout = keras.layers.Dropout(dropout, name="word_dropout")
            rnn = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
            self.rnn = rnn(units, return_sequences=True, name="rnn")
            if self.attention:
                self.grid_norm = FeatureNormalization(grid_dim, name="grid_norm")
                self.grid_proj = keras.layers.Dense(
                    units, activation="relu", name="grid_proj"
                )
                self.bahdanau = BahdanauAttention(attention_units, name="attention")
            self.merge_dropout = keras.layers.Dropout(dropout, name="merge_dropout")
            self.head = keras.layers.Dense(units, activation="relu", name="head")
            # float32 under mixed precision too: the softmax and the loss need it.
            self.logits = keras.layers.Dense(vocab_size, name="logits", dtype="float32")
        self._build_layers()

    def _build_layers(self) -> None:
        self.image_proj.build((None, self.feature_dim))
        self.embedding.build((None, None))
        self.rnn.build((None, None, self.embed_dim))
        if self.attention:
            self.grid_proj.build((None, None, self.grid_dim))
            self.bahdanau.build((None, None, self.units), (None, None, self.units))
        self.head.build((None, None, self.units))
        self.logits.build((None, None, self.units))
        self.built = True

    def set_statistics(self, stats: dict) -> None:
        """Normalisation statistics from the train split.

        Args:
            stats: `{"fc2": (mean, std)}` plus `{"grid": (mean, std)}` with
                attention.
        """
        self.fc2_norm.set_statistics(*stats["fc2"])
        if self.attention:
            self.grid_norm.set_statistics(*stats["grid"])

    def call(self, inputs, training=False):
        memory = self._memory(inputs["features"], inputs.get("grid"), training)
        return self.call_with_cache(inputs["tokens"], memory, training=training)[0]

    def call_with_cache(self, tokens, memory, carry=None, training=False):
        """The decoder over `tokens`, from the recurrent state `carry`.

        The forward pass, written once: `call` runs it over whole captions
        (the RNN layer, padding masked), `step` over one token from the
        state the tokens before it left (the RNN's cell).

        Args:
            tokens: `(B, T)` int32; with a carry, T is known when tracing.
            memory: From `encode`.
            carry: `(h, c)` from `encode` or the previous step; None when
                `tokens` are whole captions.
            training: Dropout on when True.

        Returns:
            `(logits (B, T, vocab_size), carry, attention)`: the carry after
            the last token (None without one), the attention `(B, T, R)`
            (None without an attention layer).
        """
        words = self.word_dropout(self.embedding(tokens), training=training)
        if carry is None:
            mask = ops.not_equal(tokens, 0)  # (B, T)
            seq = self.rnn(words, mask=mask, training=training)  # (B, T, units)
        else:
            seq, carry = self._cell_steps(words, carry)
        merged = seq + memory[0][:, None, :]  # (B, T, units)
        weights = None
        if self.attention:
            _, regions, keys = memory
            context, weights = self.bahdanau.attend(seq, keys, regions)
            merged = merged + context  # (B, T, units)
        return self._predict(merged, training), carry, weights

    def _cell_steps(self, words, carry):
        """The RNN's cell over `words` `(B, T, embed_dim)` from `carry`."""
        lstm = isinstance(self.rnn, keras.layers.LSTM)
        h, c = carry
        outputs = []
        for t in range(words.shape[1]):
            out, states = self.rnn.cell(words[:, t], [h, c] if lstm else [h])
            h, c = states[0], states[1] if lstm else c
            outputs.append(out)  # (B, units)
        return ops.stack(outputs, axis=1), (h, c)

    def _memory(self, features, grid=None, training=False):
        x = self.image_dropout(self.fc2_norm(features), training=training)
        memory = (self.image_proj(x),)  # (B, units)
        if self.attention:
            regions = self.grid_proj(self.grid_norm(grid))  # (B, R, units)
            memory += (regions, self.bahdanau.project_keys(regions))
        return memory

    def _predict(self, merged, training=False):
        x = self.merge_dropout(merged, training=training)
        return self.logits(self.head(x))  # (..., vocab_size)

    def encode(self, features, grid=None):
        """The per-image state a decoding starts from.

        Args:
            features: `(B, feature_dim)` float.
            grid: `(B, R, grid_dim)` float, for attention models.

        Returns:
            `(carry, memory)`: `carry` is the recurrent state, zeros at first
            (`(h, c)` of `(B, units)` each; a GRU carries `c` unchanged),
            reordered along the batch by beam search; `memory` is what does
            not change over a caption: `(image (B, units),)` plus
            `(regions (B, R, units), keys (B, R, attention_units))` with
            attention, the keys projected once per image.
        """
        zeros = ops.zeros((ops.shape(features)[0], self.units), self.compute_dtype)
        return (zeros, zeros), self._memory(features, grid)

    def step(self, tokens, carry, memory):
        """Advance every sequence by one token.

        Args:
            tokens: `(B,)` int32, the last token of each sequence.
            carry: `(h, c)` from `encode` or the previous step.
            memory: From `encode`.

        Returns:
            `(logits (B, vocab_size), carry, attention (B, R))`; attention is
            `(B, 1)` zeros without an attention layer.
        """
        logits, carry, weights = self.call_with_cache(tokens[:, None], memory, carry)
        if weights is None:
            weights = ops.zeros((ops.shape(tokens)[0], 1))
        else:
            weights = ops.cast(weights[:, 0], "float32")  # (B, R)
        return logits[:, 0], carry, weights

    @property
    def uses_grid(self) -> bool:
        """Whether `encode` reads the grid: with Bahdanau `attention` only."""
        return self.attention

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
            "units": self.units,
            "dropout": self.dropout,
            "cell": self.cell,
            "attention": self.attention,
            "attention_units": self.attention_units,
            "feature_dim": self.feature_dim,
            "grid_dim": self.grid_dim,
        }


def build_captioner(
    config: Config,
    vocab_size: int,
    stats: dict | None = None,
    precision: str = "float32",
) -> MergeCaptioner | TransformerCaptioner:
    """The captioner a config describes.

    Args:
        config: `decoder`; sizes (`embed_dim`, `units`, `attention_units`;
            `heads`, `decoder_layers` and `max_len` for the transformer),
            `dropout`, `cell`, `attention`, `grid_layer`.
        vocab_size: Number of token ids.
        stats: Normalisation statistics from the train split (see
            `MergeCaptioner.set_statistics`); None keeps mean 0 and std 1,
            enough for a summary or a shape check.
        precision: The Keras dtype policy of its layers (`float32`,
            `mixed_float16`, `mixed_bfloat16`; see `radcap.core.devices`). The
            logits are float32 always.
    """
    model = _build(config, vocab_size, precision)
    if stats is not None:
        model.set_statistics(stats)
    return model


def _build(config: Config, vocab_size: int, precision: str):
    if config.decoder == "transformer":
        regions, grid_dim = GRID_SHAPES[config.grid_layer]
        return TransformerCaptioner(
            vocab_size,
            units=config.units,
            heads=config.heads,
            depth=config.decoder_layers,
            dropout=config.dropout,
            max_positions=config.max_len + 1,  # <start> and up to max_len words
            grid_dim=grid_dim,
            regions=regions,
            dtype=precision,
            name="transformer_captioner",
        )
    return MergeCaptioner(
        vocab_size,
        embed_dim=config.embed_dim,
        units=config.units,
        dropout=config.dropout,
        cell=config.cell,
        attention=config.attention,
        attention_units=config.attention_units,
        grid_dim=GRID_SHAPES[config.grid_layer][-1],
        dtype=precision,
        name="merge_captioner",
    )


def feature_stats(
    array: np.ndarray, rows: np.ndarray | None = None, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the last axis' features, in chunks (memory-mapped input).

    Args:
        array: `(N, dim)` or `(N, regions, dim)` features.
        rows: Rows to use (e.g. train images that decoded); default all.
    """
    rows = np.arange(len(array)) if rows is None else np.asarray(rows)
    total = np.zeros(array.shape[-1], np.float64)
    total_sq = np.zeros(array.shape[-1], np.float64)
    count = 0
    for s in range(0, len(rows), chunk):
        x = np.asarray(array[np.sort(rows[s : s + chunk])], np.float64)
        x = x.reshape(-1, x.shape[-1])
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += len(x)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)
