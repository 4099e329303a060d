"""A captioner's `encode` and `step`, and the search over them, compiled.

TensorFlow and Keras are imported when first used.

`CompiledSearch` is how radcap decodes: the captioner's `encode` and the
search of `radcap.decoding.search` in one graph per search setting (for
`Captioner`, the evaluation, and inside the export's SavedModel).
`CompiledStep` is one decoding step at a time, for checks of the step
itself and for search code that runs eagerly.
"""

from __future__ import annotations

import numpy as np

from radcap.decoding.search import Decoded, search


class CompiledStep:
    """A captioner's `encode` and `step`, compiled, as the searches' step function.

    Works for any Keras captioner with a `uses_grid` flag, `encode(features,
    grid)` returning `(carry, memory)` and `step(tokens, carry, memory)`
    returning `(logits, carry, attention)`. The search state is the tuple
    `(*carry, *memory)`; the memory entries come back as the very objects
    they were, so beam search never reorders them (see the module docstring).

    Args:
        model: The captioner, e.g. a `radcap.models.merge.MergeCaptioner`.
    """

    def __init__(self, model):
        import tensorflow as tf
        from keras import ops

        self.model = model
        self.uses_grid = bool(model.uses_grid)

        def encode(features, grid):
            return model.encode(features, grid)

        def step(tokens, carry, memory):
            logits, carry, weights = model.step(tokens, carry, memory)
            return ops.log_softmax(logits, axis=-1), carry, weights

        self._encode = tf.function(encode, reduce_retracing=True, autograph=False)
        self._step = tf.function(step, reduce_retracing=True, autograph=False)
        self._carry = None

    def start(self, features: np.ndarray, grid: np.ndarray | None = None) -> tuple:
        """The initial search state of a batch of images, as NumPy arrays.

        Args:
            features: `(B, feature_dim)` whole-image features.
            grid: `(B, R, grid_dim)` grid features, for attention models.
        """
        features = np.asarray(features, np.float32)
        if self.uses_grid:
            if grid is None:
                raise ValueError(
                    "This model uses attention: pass the grid features too."
                )
            grid = np.asarray(grid, np.float32)
        else:
            grid = None
        carry, memory = self._encode(features, grid)
        self._carry = len(carry)
        return tuple(np.asarray(x) for x in (*carry, *memory))

    def __call__(self, tokens: np.ndarray, state: tuple):
        """Advance by one token: `(log_probs (B, V), new_state, attention (B, R))`."""
        carry, memory = state[: self._carry], state[self._carry :]
        log_probs, carry, weights = self._step(
            np.asarray(tokens, np.int32), carry, memory
        )
        return (
            np.asarray(log_probs),
            (*(np.asarray(x) for x in carry), *memory),
            np.asarray(weights),
        )


class CompiledSearch:
    """A captioner's `encode` and the search, compiled into one graph.

    `decode` is the search over a captioner, in TensorFlow operations: the
    export (`radcap.serving.export`) puts it in its SavedModel. Calling the object
    runs it compiled (one graph per search setting, any batch size) on NumPy
    arrays. Works for any Keras captioner with a `uses_grid` flag,
    `feature_dim` (and `grid_dim` when it attends), `encode(features, grid)`
    returning `(carry, memory)` and `step(tokens, carry, memory)` returning
    `(logits, carry, attention)`.

    Args:
        model: The captioner, e.g. a `radcap.models.merge.MergeCaptioner`.
    """

    def __init__(self, model):
        self.model = model
        self.uses_grid = bool(model.uses_grid)
        self._compiled = {}

    def decode(self, features, grid=None, **settings) -> Decoded:
        """The search over a batch of images, as TensorFlow operations.

        Args:
            features: `(B, feature_dim)` float32 whole-image features.
            grid: `(B, R, grid_dim)` grid features, for attention models.
            **settings: `start_id`, `end_id`, `max_len`, `beam`,
                `length_penalty` and `rules`, as for `search`.
        """
        import tensorflow as tf
        from keras import ops

        model = self.model
        carry, memory = model.encode(features, grid if self.uses_grid else None)
        carry, memory = tuple(carry), tuple(memory)
        n = len(carry)

        def step(tokens, state):
            logits, carry, weights = model.step(tokens, state[:n], state[n:])
            return ops.log_softmax(logits, axis=-1), (*carry, *state[n:]), weights

        return search(step, (*carry, *memory), tf.shape(features)[0], **settings)

    def __call__(self, features, grid=None, **settings) -> Decoded:
        """`decode`, compiled, on NumPy arrays; returns NumPy arrays."""
        import tensorflow as tf

        key = tuple(sorted(settings.items()))
        if key not in self._compiled:
            spec = [tf.TensorSpec([None, self.model.feature_dim], tf.float32)]
            if self.uses_grid:
                spec.append(
                    tf.TensorSpec([None, None, self.model.grid_dim], tf.float32)
                )
            self._compiled[key] = tf.function(
                lambda features, *grid: self.decode(features, *grid, **settings),
                input_signature=spec,
                autograph=False,
            )
        inputs = [np.asarray(features, np.float32)]
        if self.uses_grid:
            if grid is None:
                raise ValueError(
                    "This model uses attention: pass the grid features too."
                )
            inputs.append(np.asarray(grid, np.float32))
        return Decoded(*(np.asarray(x) for x in self._compiled[key](*inputs)))
