"""The captioners' own Keras layers: fixed feature normalisation, Bahdanau attention."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops


@contextlib.contextmanager
def dtype_scope(policy):
    """Layers made inside compute in `policy` (e.g. a model's `dtype_policy`).

    A captioner makes its layers in its own policy this way, so that mixed
    precision reaches them when Keras rebuilds the model from its config too.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package="radcap")
class FeatureNormalization(keras.layers.Layer):
    """Standardise features with fixed statistics and a floored scale.

    Random-weight VGG16 features are nearly collinear across images and many
    dimensions are (almost) constant, so dividing by a per-dimension standard
    deviation would blow those up into noise. The scale is floored at
    `floor` times the mean standard deviation. The statistics are weights
    (not trained), so they travel in the model file, not in its config.

    Args:
        dim: Number of features.
        floor: Smallest scale, as a share of the mean standard deviation.

    Call arguments:
        inputs: `(..., dim)` features, any float dtype.

    Returns:
        `(..., dim)` float32 `(inputs - mean) / max(std, floor * mean(std))`;
        mean 0 and std 1 until `set_statistics` is called.
    """

    def __init__(self, dim: int, floor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.floor = float(floor)
        self.mean = self.add_weight(
            shape=(self.dim,), initializer="zeros", trainable=False, name="mean"
        )
        self.inv_scale = self.add_weight(
            shape=(self.dim,), initializer="ones", trainable=False, name="inv_scale"
        )

    def set_statistics(self, mean, std) -> None:
        """Set the mean and standard deviation, each of shape `(dim,)`."""
        mean = np.asarray(mean, np.float32)
        std = np.asarray(std, np.float32)
        if mean.shape != (self.dim,) or std.shape != (self.dim,):
            raise ValueError(
                f"statistics of shapes {mean.shape} and {std.shape} do not fit "
                f"{self.dim} features."
            )
        scale = np.maximum(std, self.floor * float(std.mean()) + 1e-6)
        self.mean.assign(mean)
        self.inv_scale.assign((1.0 / scale).astype(np.float32))

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return (x - self.mean) * self.inv_scale

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "floor": self.floor}


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
