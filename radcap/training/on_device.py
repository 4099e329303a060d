"""Features gathered on the GPU: the host sends row numbers, not rows.

On a GPU a `roco`-size train step takes milliseconds, and one CPU core
cannot gather and send a batch's 64 rows of 4,096 features (and 64 x 49 x
512 of the grid, with attention) that fast: `bench/bench_pipeline.py`
measures it against what a T4 and an A100 consume. So when training runs on
one GPU and the feature caches take under 40% of the smallest GPU radcap's
users meet (`LIMIT`), the train and validation caches go to the GPU once,
as one table per feature array (`device_tables`); the input pipeline
(`row_dataset`) then carries each batch's feature rows, tokens, targets and
weights, built from TensorFlow operations alone, with no Python per batch;
and the model that `fit` trains (`GatherFeatures`) takes the rows from the
tables on the device before it calls the captioner.

The batches are `Batches.batch`'s: the same captions in the same order,
the same widths, the same empty rows (zero features) and the same weights,
so training ends with the same weights either way (tests/test_on_device.py
trains both on a CPU). Elsewhere (a CPU, several replicas, a TPU, caches
too large, the dual encoder's pair batches) features are gathered on the
host as before (`Batches.dataset`).
"""

from __future__ import annotations

import keras
import numpy as np

from radcap.training.batches import Batches, feature_dtype

# Most bytes of feature tables put on a GPU: under 40% of the 16 GB of the
# smallest GPUs Colab and Kaggle lend (T4, P100). ROCO's fc2 caches take
# 0.6 GB, with the attention grid 4.3 GB (float16).
LIMIT = 6 * 10**9


def feed(model, batches: list[Batches], on_device: bool | None = None):
    """The model `fit` trains and its `(train, validation)` datasets.

    Args:
        model: The compiled captioner.
        batches: `(train, validation)` batches.
        on_device: Gather features on the device; default `gathers_on_device`.

    Returns:
        `(model, datasets)`: `model` itself with `Batches.dataset`s, or a
        `GatherFeatures` around it with `row_dataset`s.
    """
    import tensorflow as tf

    if on_device is None:
        on_device = gathers_on_device(batches)
    tables = None
    if on_device:
        try:
            tables, offsets = device_tables(batches)
        except tf.errors.ResourceExhaustedError:  # a smaller or busy GPU
            tables = None  # `training.json` then says "host"
    if tables is None:
        return model, [b.dataset() for b in batches]
    fitted = GatherFeatures(model, tables)
    fitted.compile(
        optimizer=model.optimizer, loss=model.loss, jit_compile=model.jit_compile
    )
    empty = len(next(iter(tables.values()))) - 1  # the zero row, last
    return fitted, [row_dataset(b, s, empty) for b, s in zip(batches, offsets)]


def gathers_on_device(batches: list[Batches]) -> bool:
    """Whether training should gather these batches' features on the device:
    one GPU (no distribution strategy), plain `Batches`, tables under `LIMIT`."""
    import tensorflow as tf

    if tf.distribute.has_strategy() or not tf.config.list_logical_devices("GPU"):
        return False
    if any(type(b) is not Batches or b.static for b in batches):
        return False
    for name in batches[0].arrays:  # splits of one dtype: the host's batches'
        if len({feature_dtype(b.arrays[name], False) for b in batches}) > 1:
            return False
    return table_bytes(batches) <= LIMIT


def table_bytes(batches: list[Batches]) -> int:
    """Bytes the feature tables of `batches` take (`device_tables`)."""
    total = 0
    for name in batches[0].arrays:
        parts, dtype = _table_parts(batches, name)
        rows = sum(len(a) for a in parts) + 1  # and the zero row
        total += rows * int(np.prod(parts[0].shape[1:])) * dtype.itemsize
    return total


def _table_parts(batches: list[Batches], name: str) -> tuple[list, np.dtype]:
    """The splits' arrays of one feature table, and the dtype the table has."""
    parts = [b.arrays[name] for b in batches]
    return parts, np.result_type(*(feature_dtype(a, False) for a in parts))


def device_tables(batches: list[Batches], chunk: int = 2**28) -> tuple[dict, list]:
    """One tensor per feature array on the device: the splits' rows one
    after the other, then one row of zeros (for the empty rows that fill a
    batch up).

    The rows go to the device `chunk` bytes at a time and are joined there,
    so the host never holds a whole table (ROCO's grid is 3.7 GB): making a
    tensor of one NumPy array takes three times its size on the host.

    Returns:
        `(tables, offsets)`: `{name: tensor}` on the GPU (the CPU where there
        is none), and where each split's rows start.
    """
    import tensorflow as tf

    sizes = [len(b.arrays["features"]) for b in batches]
    offsets = [int(s) for s in np.cumsum([0, *sizes[:-1]])]
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    tables = {}
    for name in batches[0].arrays:
        parts, dtype = _table_parts(batches, name)
        row = max(int(np.prod(parts[0].shape[1:])) * dtype.itemsize, 1)
        step = max(chunk // row, 1)
        with tf.device(device):
            pieces = [
                tf.convert_to_tensor(np.asarray(a[s : s + step], dtype))
                for a in parts
                for s in range(0, len(a), step)
            ]
            pieces.append(tf.zeros((1, *parts[0].shape[1:]), dtype.name))
            tables[name] = tf.concat(pieces, 0)
        del pieces
    return tables, offsets


def row_dataset(batches: Batches, offset: int, empty: int):
    """`Batches.dataset`'s batches with feature rows (`"rows"`) in place of
    features: rows of the `device_tables` (`offset` added; `empty` for the
    rows that fill a batch up).

    Each epoch's plan is worked out in NumPy at once: every batch's caption
    indices (a blank caption, `<start>` alone, filling it up), its width and
    its count of target tokens. Per batch, TensorFlow operations only take
    the tokens and rows and weigh the targets (`token_weights`, to the bit).
    """
    import tensorflow as tf

    size, blank = batches.batch_size, len(batches.tokens)
    lengths = np.append(batches.lengths, 1)  # the blank caption, last
    targets_of = np.append((batches.tokens[:, 1:] != 0).sum(1), 0)

    def plans():  # read at each epoch's start, as `Batches.dataset` does
        plan = batches.plan(batches.epoch)
        index = np.full((len(plan), size), blank, np.int64)
        for i, part in enumerate(plan):
            index[i, : len(part)] = part
        rows = [size if batches.fill else len(part) for part in plan]
        longest = lengths[index].max(1)
        widths = batches.widths[np.searchsorted(batches.widths, longest)]
        targets = np.maximum(targets_of[index].sum(1), 1).astype(np.float64)
        yield index, np.asarray(rows, np.int32), widths.astype(np.int32), targets

    start = np.zeros((1, batches.tokens.shape[1]), np.int32)
    start[0, 0] = batches.tokens[0, 0] if blank else 0
    tokens = tf.constant(np.concatenate([batches.tokens, start]))
    feature_rows = tf.constant(np.append(batches.rows + offset, empty))

    def load(index, rows, width, targets):
        index = index[:rows]
        taken = tf.gather(tokens, index)[:, :width]
        real = tf.cast(taken[:, 1:] != 0, tf.float64)
        inputs = {"rows": tf.gather(feature_rows, index), "tokens": taken[:, :-1]}
        return inputs, taken[:, 1:], tf.cast(real / targets, tf.float32)

    signature = [tf.TensorSpec((None, size), tf.int64)]
    signature += [tf.TensorSpec((None,), t) for t in (tf.int32, tf.int32, tf.float64)]
    data = tf.data.Dataset.from_generator(plans, output_signature=tuple(signature))
    data = data.unbatch().map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return batches.finish(data)


class GatherFeatures(keras.Model):
    """`model` fed by row numbers: takes the rows of `tables` on the device.

    `fit` trains it in `model`'s place; the weights and the optimizer are
    `model`'s, and saving it (whole or its weights) saves `model`, so a
    checkpoint is the captioner's own, whichever way its features were
    gathered.

    Args:
        model: The compiled captioner.
        tables: `{name: tensor}` from `device_tables`.
    """

    def __init__(self, model, tables: dict):
        super().__init__(name=f"{model.name}_gathering")
        self.captioner = model
        self._names = sorted(tables)
        self._tables = [tables[name] for name in self._names]

    def call(self, inputs, training=None):
        rows = inputs["rows"]
        features = {
            name: keras.ops.take(table, rows, axis=0)
            for name, table in zip(self._names, self._tables)
        }
        return self.captioner(
            {**features, "tokens": inputs["tokens"]}, training=training
        )

    def save(self, *args, **kwargs):
        return self.captioner.save(*args, **kwargs)

    def save_weights(self, *args, **kwargs):
        return self.captioner.save_weights(*args, **kwargs)

    def load_weights(self, *args, **kwargs):
        return self.captioner.load_weights(*args, **kwargs)
