"""Training batches: whole captions, grouped by length, features gathered per batch.

TensorFlow is imported only for `Batches.dataset`.

One training example is one caption: inputs `tokens[:-1]`, targets
`tokens[1:]`, padding masked out of the loss. Each target token weighs
1 / (target tokens in its batch), so `token_loss` (a sum) is the batch's
mean per token, exactly, also when replicas each take a part of the batch.
Batches group captions of similar length and are cut to their longest
caption rounded up to one of at most `WIDTHS` widths (`bucket_widths`), so
little time goes into padding and a run meets few shapes: each shape is a
compile where XLA runs (a GPU). For the same reason the train split's last,
smaller batch is filled up with empty rows (`<start>` alone): no target
token, so they weigh nothing. Features are gathered per batch from the (memory-mapped)
cache: nothing is copied per word or per caption.
"""

from __future__ import annotations

import numpy as np

# Most distinct batch widths of a split (`bucket_widths`).
WIDTHS = 8


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
        fill: Fill a smaller last batch up to `batch_size` with empty rows
            (zero weight), so every batch has the same number of rows.
            Training fills; validation does not, because Keras weighs each
            batch's loss by its rows in the epoch's mean.
        widths: Most distinct batch widths (`bucket_widths`).
    """

    def __init__(
        self,
        tokens,
        rows,
        arrays: dict,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        fill: bool = False,
        widths: int = WIDTHS,
    ):
        self.tokens = np.asarray(tokens, np.int32)
        self.rows = np.asarray(rows, np.int64)
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.fill = fill
        self.epoch = 0
        self.lengths = (self.tokens != 0).sum(1)
        self.widths = bucket_widths(self.lengths, widths)

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
        # The input pipeline's shapes are dynamic, so a new shape costs no
        # retracing; but XLA compiles each shape anew (`bucket_width`).
        longest = self.lengths[index].max()
        width = int(self.widths[np.searchsorted(self.widths, longest)])
        size = self.batch_size if self.fill else len(index)
        tokens = np.zeros((size, width), np.int32)
        tokens[: len(index)] = self.tokens[index, :width]
        # An empty row is `<start>` alone: no target token, so no weight, and
        # never an all-padding sequence (which some recurrent kernels refuse).
        tokens[len(index) :, 0] = tokens[0, 0]
        rows = self.rows[index]
        order = np.argsort(rows)  # gather sorted rows from the memory map
        inputs = {}
        for name, array in self.arrays.items():
            gathered = np.zeros((size, *array.shape[1:]), np.float32)
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

    def signature(self) -> tuple:
        """The `tf.TensorSpec`s of what `__call__` yields (a subclass that
        yields other targets says so here)."""
        import tensorflow as tf

        inputs = {
            name: tf.TensorSpec((None, *a.shape[1:]), tf.float32)
            for name, a in self.arrays.items()
        }
        inputs["tokens"] = tf.TensorSpec((None, None), tf.int32)
        targets = tf.TensorSpec((None, None), tf.int32)
        return inputs, targets, tf.TensorSpec((None, None), tf.float32)

    def dataset(self):
        """A `tf.data.Dataset` over this generator, prefetching one batch ahead."""
        import tensorflow as tf

        data = tf.data.Dataset.from_generator(self, output_signature=self.signature())
        # One machine's replicas split each batch; there are no workers to
        # shard the files for (and the rewrite would drop the cardinality).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        data = data.apply(tf.data.experimental.assert_cardinality(len(self)))
        return data.with_options(options).prefetch(2)


def bucket_widths(lengths: np.ndarray, count: int) -> np.ndarray:
    """The `count` (or fewer) batch widths that pad `lengths` least, ascending.

    A batch is as wide as the smallest of them that holds its longest
    caption. Chosen by dynamic programming over the distinct lengths, to
    minimise the padding of every caption rounded up to its width (batches
    group similar lengths, so a batch's width is close to its captions'):
    the same lengths always give the same widths, so a resumed run keeps them.

    Args:
        lengths: Tokens of each caption (`<start>` and `<end>` included).
        count: Most widths.
    """
    values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
    if len(values) <= count:
        return values
    many = np.concatenate([[0], np.cumsum(counts)])
    tokens = np.concatenate([[0], np.cumsum(counts * values)])

    def padding(first: int, last: int) -> int:
        """Padding of the lengths `values[first..last]` rounded up to `values[last]`."""
        rows = many[last + 1] - many[first]
        return int(values[last] * rows - (tokens[last + 1] - tokens[first]))

    # best[j]: least padding of values[0..j], its widest width values[j].
    best = [padding(0, j) for j in range(len(values))]
    links = []  # per added width: the previous width's index, -1 for none
    for _ in range(count - 1):
        link, new = [], []
        for j in range(len(values)):
            cost, previous = best[j], -1
            for i in range(j):
                if best[i] + padding(i + 1, j) < cost:
                    cost, previous = best[i] + padding(i + 1, j), i
            new.append(cost)
            link.append(previous)
        best = new
        links.append(link)
    chosen = [len(values) - 1]
    for link in reversed(links):
        if link[chosen[-1]] >= 0:
            chosen.append(link[chosen[-1]])
    return values[chosen[::-1]]


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
