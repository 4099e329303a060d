"""Training batches: whole captions, grouped by length, features gathered per batch.

TensorFlow is imported only for `Batches.dataset`.

One training example is one caption: inputs `tokens[:-1]`, targets
`tokens[1:]`, padding masked out of the loss. Each target token weighs
1 / (target tokens in its batch), so `token_loss` (a sum) is the batch's
mean per token, exactly, also when replicas each take a part of the batch.
Batches group captions of similar length and are cut to their longest
caption, so little time goes into padding. Features are gathered per batch
from the (memory-mapped) cache: nothing is copied per word or per caption.
"""

from __future__ import annotations

import numpy as np


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
        """`(inputs, targets, weights)` per batch; `weights` see `token_weights`."""
        for index in self.plan(self.epoch):
            inputs, targets = self.batch(index)
            yield inputs, targets, token_weights(targets)

    def dataset(self):
        """A `tf.data.Dataset` over this generator, prefetching one batch ahead."""
        import tensorflow as tf

        signature = {
            name: tf.TensorSpec((None, *a.shape[1:]), tf.float32)
            for name, a in self.arrays.items()
        }
        signature["tokens"] = tf.TensorSpec((None, None), tf.int32)
        targets = tf.TensorSpec((None, None), tf.int32)
        weights = tf.TensorSpec((None, None), tf.float32)
        data = tf.data.Dataset.from_generator(
            self, output_signature=(signature, targets, weights)
        )
        # One machine's replicas split each batch; there are no workers to
        # shard the files for (and the rewrite would drop the cardinality).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        data = data.apply(tf.data.experimental.assert_cardinality(len(self)))
        return data.with_options(options).prefetch(2)


def token_weights(targets: np.ndarray) -> np.ndarray:
    """`(B, T)` float32: 1 / (target tokens in the batch) per token, 0 on padding."""
    real = targets != 0
    return (real / max(int(real.sum()), 1)).astype(np.float32)


def token_loss():
    """The training loss: cross-entropy summed over `token_weights`-weighted tokens.

    With `Batches`' weights this is each batch's mean cross-entropy per
    target token. A replica's part of a batch sums its own tokens' share, so
    the replicas' gradients add up to the whole batch's exactly (a mean per
    replica would weigh a replica's tokens by how many it got).
    """
    import keras

    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum", name="token_loss"
    )
