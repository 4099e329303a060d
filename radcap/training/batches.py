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

The input pipeline (`Batches.dataset`) is tf.data: a generator yields each
batch's caption indices only (the epoch's plan), and a parallel map gathers
the batches (`tf.numpy_function`, the same `Batches.batch` as the generator),
prefetching as far ahead as tf.data's autotuning finds useful. A float16
cache stays float16 until the model casts it on the device: the same values
(float16 to float32 is exact) at half the bytes to gather and move. On
one GPU training gathers the rows there instead (`radcap.training.on_device`).

Under a TPU (`static=True`) every batch has `batch_size` rows, validation's
too, and the features are float32: the dataset's `element_spec` fixes every
dimension but the width, which takes at most `WIDTHS` values (one compile
each), and is fixed too with `widths=1`.
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
        static: Shapes for a TPU: every batch has `batch_size` rows (filled
            up as `fill` does, validation too) and float32 features.
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
        static: bool = False,
    ):
        self.tokens = np.asarray(tokens, np.int32)
        self.rows = np.asarray(rows, np.int64)
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.fill = fill or static
        self.static = static
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
        """`(inputs, targets)` for the captions `index`.

        Features keep a float16 cache's dtype (float32 for other floats, and
        for a TPU); tokens and targets are `(rows, width - 1)` int32.
        """
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
        inputs = {}
        for name, array in self.arrays.items():
            dtype = feature_dtype(array, self.static)
            inputs[name] = gather_rows(array, rows, size, dtype)
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
        """A `tf.data.Dataset` of `(inputs, targets, weights)`: the same batches
        as the generator, in the same order, gathered by a parallel map."""
        import tensorflow as tf

        specs = self.element_spec()
        flat = tf.nest.flatten(specs)

        def indices():  # read at each epoch's start, as `__call__` does
            yield from self.plan(self.epoch)

        def load(index):
            tensors = tf.numpy_function(
                self._flat_batch, [index], [s.dtype for s in flat], stateful=False
            )
            for tensor, spec in zip(tensors, flat):
                tensor.set_shape(spec.shape)
            return tf.nest.pack_sequence_as(specs, tensors)

        data = tf.data.Dataset.from_generator(
            indices, output_signature=tf.TensorSpec((None,), tf.int64)
        )
        data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return self.finish(data)

    def finish(self, data):
        """`data`, one element per batch, as `fit` takes it: its length known,
        prefetched, and never sharded."""
        import tensorflow as tf

        # One machine's replicas split each batch; there are no workers to
        # shard the files for (and the rewrite would drop the cardinality).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        data = data.apply(tf.data.experimental.assert_cardinality(len(self)))
        return data.with_options(options).prefetch(tf.data.AUTOTUNE)

    def element_spec(self):
        """`(inputs, targets, weights)` as `tf.TensorSpec`s: the dataset's shapes.

        Rows are `batch_size` for a TPU (`static`), else left open even where
        every batch is filled: a fixed batch dimension changes the kernels
        TensorFlow picks on a CPU, and with them the last bits of training's
        results. The width is fixed when the split has one width only.
        """
        import tensorflow as tf

        rows = self.batch_size if self.static else None
        width = int(self.widths[0]) - 1 if len(self.widths) == 1 else None
        signature = {
            name: tf.TensorSpec(
                (rows, *a.shape[1:]), feature_dtype(a, self.static).name
            )
            for name, a in self.arrays.items()
        }
        signature["tokens"] = tf.TensorSpec((rows, width), tf.int32)
        targets = tf.TensorSpec((rows, width), tf.int32)
        return signature, targets, tf.TensorSpec((rows, width), tf.float32)

    def _flat_batch(self, index: np.ndarray) -> list[np.ndarray]:
        """`(inputs, targets, weights)` of `index`, flattened as `tf.nest` does."""
        inputs, targets = self.batch(index)
        inputs = dict(sorted(inputs.items()))  # tf.nest's order: sorted keys
        return [*inputs.values(), targets, token_weights(targets)]


def feature_dtype(array, static: bool):
    """The dtype a batch carries `array`'s rows in: float16 stays (unless for
    a TPU), other floats become float32."""
    if array.dtype == np.float16 and not static:
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def gather_rows(array, rows: np.ndarray, size: int, dtype) -> np.ndarray:
    """`array[rows]` as `dtype`, with zero rows after them up to `size` rows.

    One pass over the rows for a float16 cache kept in float16: each new
    buffer of a batch costs page faults, and converting float16 in NumPy is
    slower than copying it, so both happen as little as possible.

    Args:
        array: `(M, ...)`, numpy or memory-mapped.
        rows: `(n,)` rows to take, in the batch's order, `n <= size`.
        size: Rows of the result.
        dtype: Its dtype.
    """
    gathered = np.asarray(np.take(array, rows, axis=0)).astype(dtype, copy=False)
    if size == len(rows):
        return gathered
    empty = np.zeros((size - len(rows), *array.shape[1:]), dtype)
    return np.concatenate([gathered, empty])


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
