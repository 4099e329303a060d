"""The merge-style captioner: an LSTM over the words, the image merged in at every step.

```
features (B, 4096) ─ FeatureNormalization ─ Dropout ─ Dense(units) ─┐ image
tokens (B, T) ─ Embedding ─ Dropout ─ LSTM/GRU ─ (B, T, units) ───────┤ add ─ Dropout
grid (B, R, 512) ─ FeatureNormalization ─ Dense(units) ─ Bahdanau ────┘ context
        ─ Dense(units, relu) ─ Dense(vocab_size) → logits (B, T, vocab_size)
```

The image never enters the recurrence (Tanti et al. 2018), so training runs
on whole captions at once, and the attention context (queried by the LSTM
output) keeps it parallel over time too. Layer names are fixed: decoding
steps the same layers one token at a time (`DecoderStep`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from radcap.config import Config


@keras.saving.register_keras_serializable(package="radcap")
class FeatureNormalization(keras.layers.Layer):
    """Standardise features with fixed statistics and a floored scale.

    Random-weight VGG16 features are nearly collinear across images and many
    dimensions are (almost) constant, so dividing by a per-dimension standard
    deviation would blow those up into noise. The scale is floored at
    `floor` times the mean standard deviation.

    Args:
        mean: Per-feature mean, shape `(dim,)`.
        std: Per-feature standard deviation, shape `(dim,)`.
        floor: Smallest scale, as a share of the mean standard deviation.

    Call arguments:
        inputs: `(..., dim)` features, any float dtype.

    Returns:
        `(..., dim)` float32 `(inputs - mean) / max(std, floor * mean(std))`.
    """

    def __init__(self, mean, std, floor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, np.float32).tolist()
        self.std = np.asarray(std, np.float32).tolist()
        self.floor = float(floor)
        std = np.asarray(self.std, np.float32)
        scale = np.maximum(std, self.floor * float(std.mean()) + 1e-6)
        self._mean = np.asarray(self.mean, np.float32)
        self._inv_scale = (1.0 / scale).astype(np.float32)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return (x - self._mean) * self._inv_scale

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self.mean,
            "std": self.std,
            "floor": self.floor,
        }


@keras.saving.register_keras_serializable(package="radcap")
class BahdanauAttention(keras.layers.Layer):
    """Additive attention (Bahdanau, Cho and Bengio, 2015) over image regions.

    score = vᵀ tanh(W₁ query + W₂ key), softmax over the regions, and the
    context is the weighted sum of the values.

    Args:
        units: Hidden size of the scorer.

    Call arguments:
        query: `(batch, steps, query_dim)`, e.g. the LSTM output at every step.
        keys: `(batch, regions, key_dim)`, e.g. the projected 7x7 grid.
        values: `(batch, regions, value_dim)`; defaults to `keys`.
        return_weights: Also return the attention weights.
        query_mask: Set by Keras from the query's mask; steps are independent,
            so padded steps need no special treatment and the mask is passed on.

    Returns:
        context `(batch, steps, value_dim)`, and with `return_weights` the
        weights `(batch, steps, regions)`, non-negative and summing to 1 over
        the regions.

    Reference:
        Bahdanau, Cho, Bengio. Neural Machine Translation by Jointly Learning
        to Align and Translate. ICLR 2015.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.query_dense = keras.layers.Dense(units, use_bias=False, name="query")
        self.key_dense = keras.layers.Dense(units, name="key")
        self.score_dense = keras.layers.Dense(1, use_bias=False, name="score")
        # The output keeps the query's mask: padded steps stay masked downstream.
        self.supports_masking = True

    def build(self, query_shape, keys_shape, values_shape=None):
        self.query_dense.build(query_shape)
        self.key_dense.build(keys_shape)
        self.score_dense.build((*keys_shape[:-1], self.units))
        self.built = True

    def call(self, query, keys, values=None, return_weights=False, query_mask=None):
        values = keys if values is None else values
        context, weights = self.attend(query, self.project_keys(keys), values)
        return (context, weights) if return_weights else context

    def project_keys(self, keys):
        """`W₂ key` for every region: `(batch, regions, units)`.

        It does not depend on the query, so a decoder stepping one word at a
        time computes it once per image and passes it to `attend`.
        """
        return self.key_dense(keys)

    def attend(self, query, projected_keys, values):
        """Context and weights for `query` over keys already projected.

        Args:
            query: `(batch, steps, query_dim)`.
            projected_keys: `(batch, regions, units)` from `project_keys`.
            values: `(batch, regions, value_dim)`.

        Returns:
            `(context (batch, steps, value_dim), weights (batch, steps, regions))`.
        """
        q = self.query_dense(query)[:, :, None, :]  # (batch, steps, 1, units)
        k = projected_keys[:, None, :, :]  # (batch, 1, regions, units)
        scores = self.score_dense(ops.tanh(q + k))[..., 0]  # (batch, steps, regions)
        weights = ops.softmax(scores, axis=-1)  # (batch, steps, regions)
        context = ops.einsum("bsr,brd->bsd", weights, values)  # (batch, steps, dim)
        return context, weights

    def compute_output_shape(self, query_shape, keys_shape, values_shape=None):
        values_shape = keys_shape if values_shape is None else values_shape
        return (*query_shape[:2], values_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="radcap")
class MergeImage(keras.layers.Layer):
    """Add a per-image vector to every time step: `(B, T, D) + (B, D)`.

    Passes the word mask through, so padding stays masked in the loss.
    """

    def call(self, sequence, image, mask=None):
        return sequence + ops.expand_dims(image, 1)

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask


def build_model(
    config: Config, vocab_size: int, stats: dict | None = None
) -> keras.Model:
    """The training model: (features[, grid], tokens) → next-word logits.

    Args:
        config: Sizes (`embed_dim`, `units`, `attention_units`), `dropout`,
            `cell`, `attention`.
        vocab_size: Number of token ids.
        stats: Normalisation statistics from the train split:
            `{"fc2": (mean, std)}` plus `{"grid": (mean, std)}` with attention.
            None puts mean 0 and std 1, enough for a summary or a shape check.

    Returns:
        A functional `keras.Model` with inputs `features` `(B, 4096)`,
        optionally `grid` `(B, R, 512)`, and `tokens` `(B, T)` int32 (0 is
        padding), and output logits `(B, T, vocab_size)` float32.
    """
    if stats is None:
        from radcap.features import FEATURE_SHAPES

        stats = {
            name: (
                np.zeros(FEATURE_SHAPES[layer][-1]),
                np.ones(FEATURE_SHAPES[layer][-1]),
            )
            for name, layer in (("fc2", config.layer), ("grid", config.grid_layer))
        }
    mean, std = stats["fc2"]
    features = keras.Input((len(mean),), name="features")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    inputs = {"features": features, "tokens": tokens}

    image = FeatureNormalization(mean, std, name="fc2_norm")(features)
    image = keras.layers.Dropout(config.dropout, name="image_dropout")(image)
    image = keras.layers.Dense(config.units, activation="relu", name="image_proj")(
        image
    )

    words = keras.layers.Embedding(
        vocab_size, config.embed_dim, mask_zero=True, name="embedding"
    )(tokens)  # (B, T, embed_dim)
    words = keras.layers.Dropout(config.dropout, name="word_dropout")(words)
    rnn = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[config.cell]
    seq = rnn(config.units, return_sequences=True, name="rnn")(words)  # (B, T, units)
    merged = MergeImage(name="merge")(seq, image)  # (B, T, units)

    if config.attention:
        gmean, gstd = stats["grid"]
        grid = keras.Input((None, len(gmean)), name="grid")
        inputs["grid"] = grid
        regions = FeatureNormalization(gmean, gstd, name="grid_norm")(grid)
        regions = keras.layers.Dense(config.units, activation="relu", name="grid_proj")(
            regions
        )  # (B, R, units)
        context = BahdanauAttention(config.attention_units, name="attention")(
            seq, regions
        )  # (B, T, units)
        merged = keras.layers.Add(name="merge_context")([merged, context])

    x = keras.layers.Dropout(config.dropout, name="merge_dropout")(merged)
    x = keras.layers.Dense(config.units, activation="relu", name="head")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)  # (B, T, vocab_size)
    return keras.Model(inputs, logits, name="merge_captioner")


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


class DecoderStep:
    """The trained layers, stepped one token at a time with carried state.

    `start(features, grid)` projects the images (and the attention keys)
    once; `__call__(tokens, state)` advances every sequence by one token.
    Both are compiled; the state is a tuple of `(B, ...)` arrays that search
    code may reorder along the batch axis.

    Args:
        model: A model made by `build_model` (trained or loaded).
    """

    def __init__(self, model: keras.Model):
        import tensorflow as tf

        names = {layer.name for layer in model.layers}
        self.attention = "attention" in names
        self.model = model
        get = model.get_layer
        self.cell = get("rnn").cell
        self.is_lstm = isinstance(get("rnn"), keras.layers.LSTM)
        self.units = get("rnn").units

        def start(features, grid):
            image = get("image_proj")(get("fc2_norm")(features))  # (B, units)
            if not self.attention:
                empty = ops.zeros((ops.shape(features)[0], 1, 1))
                return image, empty, empty
            regions = get("grid_proj")(get("grid_norm")(grid))  # (B, R, units)
            keys = get("attention").project_keys(regions)  # (B, R, attention_units)
            return image, regions, keys

        def step(tokens, h, c, image, regions, keys):
            # A lookup, not the layer: the layer would attach a padding mask.
            x = ops.take(get("embedding").embeddings, tokens, axis=0)  # (B, embed_dim)
            states = [h, c] if self.is_lstm else [h]
            out, new = self.cell(x, states, training=False)  # (B, units)
            merged = out + image
            if self.attention:
                context, weights = get("attention").attend(
                    out[:, None, :], keys, regions
                )  # (B, 1, units), (B, 1, R)
                merged = merged + context[:, 0]
                weights = weights[:, 0]  # (B, R)
            else:
                weights = ops.zeros((ops.shape(tokens)[0], 1))
            logits = get("logits")(get("head")(merged))  # (B, vocab_size)
            log_probs = ops.log_softmax(logits, axis=-1)
            c_new = new[1] if self.is_lstm else h
            return log_probs, new[0], c_new, weights

        self._start = tf.function(start, reduce_retracing=True)
        self._step = tf.function(step, reduce_retracing=True)

    def start(self, features: np.ndarray, grid: np.ndarray | None = None):
        """Initial state for a batch: `(h, c, image, regions, keys)` arrays."""
        features = np.asarray(features, np.float32)
        if self.attention:
            if grid is None:
                raise ValueError(
                    "This model uses attention: pass the grid features too."
                )
            grid = np.asarray(grid, np.float32)
        else:
            grid = np.zeros((len(features), 1, 1), np.float32)
        image, regions, keys = self._start(features, grid)
        zeros = np.zeros((len(features), self.units), np.float32)
        return (
            zeros,
            zeros.copy(),
            np.asarray(image),
            np.asarray(regions),
            np.asarray(keys),
        )

    def __call__(self, tokens: np.ndarray, state):
        """Advance by one token.

        Args:
            tokens: `(B,)` int32 last tokens.
            state: `(h, c, image, regions, keys)` from `start` or the previous step.

        Returns:
            `(log_probs (B, vocab_size), new_state, attention (B, R))`.
        """
        h, c, *image = state
        log_probs, h, c, weights = self._step(
            np.asarray(tokens, np.int32), h, c, *image
        )
        return (
            np.asarray(log_probs),
            (np.asarray(h), np.asarray(c), *image),
            np.asarray(weights),
        )
