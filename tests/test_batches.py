"""The input pipeline: the same batches as the generator, static shapes for a TPU."""

import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radcap.core.config import preset
from radcap.core.text import Vocabulary
from radcap.training.batches import WIDTHS, Batches


def captions(n: int, seed: int = 0) -> np.ndarray:
    """`(n, 14)` int32 captions of 3 to 13 tokens: `<start>`, words, `<end>`."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, 14), np.int32)
    for i, length in enumerate(rng.integers(3, 14, n)):
        tokens[i, :length] = [1, *rng.integers(4, 30, length - 2), 2]
    return tokens


def as_numpy(element):
    import tensorflow as tf

    return tf.nest.map_structure(lambda t: t.numpy(), element)


@pytest.mark.parametrize("shuffle", [True, False])
def test_the_dataset_gives_the_generators_batches_in_its_order(shuffle):
    rng = np.random.default_rng(1)
    arrays = {  # a float16 cache, as extraction writes it, and a float32 one
        "features": rng.normal(size=(9, 6)).astype(np.float16),
        "grid": rng.normal(size=(9, 4, 3)).astype(np.float32),
    }
    tokens, rows = captions(45), rng.integers(0, 9, 45)
    batches = Batches(tokens, rows, arrays, 8, shuffle, seed=3, fill=shuffle)
    data = batches.dataset()
    for epoch in (0, 1):
        batches.epoch = epoch  # as the epoch callback sets it
        got = [as_numpy(element) for element in data]
        want = list(batches())
        assert len(got) == len(want) == len(batches) == 6
        for (inputs, targets, weights), (x, y, w) in zip(got, want):
            assert inputs.keys() == x.keys()
            for name in x:
                np.testing.assert_array_equal(inputs[name], x[name], strict=True)
            np.testing.assert_array_equal(targets, y, strict=True)
            np.testing.assert_array_equal(weights, w, strict=True)
    # float16 rows travel as float16: the values of the float32 they stand for.
    first = got[0][0]
    assert first["features"].dtype == np.float16 and first["grid"].dtype == np.float32
    index = batches.plan(1)[0]
    np.testing.assert_array_equal(
        first["features"][: len(index)].astype(np.float32),
        arrays["features"][rows[index]].astype(np.float32),
    )
    # Epochs differ when shuffled; validation keeps its order.
    epoch0 = [b.tolist() for b in batches.plan(0)]
    assert (epoch0 != [b.tolist() for b in batches.plan(1)]) is shuffle


def test_a_model_computes_the_same_loss_from_float16_rows_as_from_float32():
    from radcap.training.recipe import new_captioner

    config = preset("demo", units=8, embed_dim=4, seed=0)
    model = new_captioner(config, 30, verbose=False)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 4096)).astype(np.float16)
    tokens = captions(5)[:, :6]
    loss = []
    for dtype in (np.float16, np.float32):
        inputs = {"features": features.astype(dtype), "tokens": tokens[:, :-1]}
        loss.append(float(model.test_on_batch(inputs, tokens[:, 1:])))
    assert loss[0] == loss[1] and np.isfinite(loss[0])


def float32_generator_dataset(batches: Batches):
    """The pipeline before tf.data: the generator's batches, features as float32."""
    import tensorflow as tf

    def generate():
        for inputs, targets, weights in batches():
            features = {
                k: v.astype(np.float32) for k, v in inputs.items() if k != "tokens"
            }
            yield {**features, "tokens": inputs["tokens"]}, targets, weights

    spec = tf.nest.map_structure(
        lambda s: tf.TensorSpec(
            (None, *s.shape[1:]), s.dtype if s.dtype.is_integer else tf.float32
        ),
        batches.element_spec(),
    )
    data = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return data.apply(tf.data.experimental.assert_cardinality(len(batches)))


def test_training_over_the_dataset_ends_with_the_same_weights_as_before():
    from radcap.training.recipe import new_captioner

    rng = np.random.default_rng(0)
    arrays = {"features": rng.normal(size=(6, 4096)).astype(np.float16)}
    batches = Batches(captions(40), rng.integers(0, 6, 40), arrays, 16, True, fill=True)
    stats = {"fc2": (np.zeros(4096, "float32"), np.ones(4096, "float32"))}
    config = preset("demo", units=8, embed_dim=4, seed=0)  # dropout 0.3: seeded
    weights = []
    for make in (float32_generator_dataset, Batches.dataset):
        model = new_captioner(config, 30, stats, verbose=False)
        for epoch in (0, 1):
            batches.epoch = epoch
            model.fit(make(batches), shuffle=False, verbose=0)
        weights.append([w.numpy() for w in model.weights])
    assert len(weights[0]) == len(weights[1]) > 5
    for before, now in zip(*weights):
        np.testing.assert_array_equal(before, now)


def roco_tokens() -> np.ndarray:
    sample = Path(__file__).parent / "data/roco_captions_sample.tsv"
    table = pd.read_csv(sample, sep="\t")
    return Vocabulary.build(table["caption"], max_len=60).encode_batch(table["caption"])


@pytest.mark.parametrize("shuffle", [True, False])
def test_tpu_batches_have_static_shapes_and_few_of_them(shuffle):
    tokens = roco_tokens()  # 300 real captions, 16 a batch: a smaller last batch
    rng = np.random.default_rng(0)
    arrays = {
        "features": rng.normal(size=(7, 5)).astype(np.float16),
        "grid": rng.normal(size=(7, 4, 3)).astype(np.float16),
    }
    rows = rng.integers(0, 7, len(tokens))
    static = Batches(tokens, rows, arrays, 16, shuffle, static=True)
    inputs, targets, weights = static.dataset().element_spec
    for spec in (*inputs.values(), targets, weights):
        assert spec.shape[0] == 16  # every batch, validation's last one too
    assert inputs["features"].shape == (16, 5) and inputs["grid"].shape == (16, 4, 3)
    assert {s.dtype.name for s in inputs.values()} == {"float32", "int32"}
    shapes = set()
    for x, y, w in static.dataset():
        shapes.add(tuple(x["tokens"].shape))
        assert x["tokens"].shape == y.shape == w.shape and x["grid"].shape[0] == 16
    assert len(shapes) <= WIDTHS and {rows for rows, _ in shapes} == {16}
    assert len(static) * 16 > len(tokens)  # so the last batch was filled up

    # One width: every dimension of every tensor is fixed.
    one = Batches(tokens, rows, arrays, 16, shuffle, static=True, widths=1)
    specs = one.dataset().element_spec
    import tensorflow as tf

    assert all(s.shape.is_fully_defined() for s in tf.nest.flatten(specs))
    assert specs[1].shape == (16, int(one.lengths.max()) - 1)
    # Elsewhere the rows stay open, filled or not: as radcap 0.4 gave them, so
    # TensorFlow picks the same kernels and training the same last bits.
    plain = Batches(tokens, rows, arrays, 16, shuffle, fill=shuffle)
    assert plain.dataset().element_spec[1].shape.as_list() == [None, None]


SPLIT_NAMES = ("train", "validation")


@pytest.mark.parametrize("granted", ["tpu", "none"])
def test_training_gives_fit_static_batches_under_a_tpu(monkeypatch, tmp_path, granted):
    from radcap.training import train as training

    rng = np.random.default_rng(0)
    arrays = {"features": rng.normal(size=(4, 3)).astype(np.float16)}

    def split_batches(split, vocab, config, shuffle, static=False):
        tokens = captions(20, seed=int(shuffle))
        rows = rng.integers(0, 4, 20)
        return Batches(tokens, rows, arrays, 8, shuffle, fill=shuffle, static=static)

    monkeypatch.setattr(training, "strategy_name", lambda strategy: granted)
    config = preset("demo", epochs=1)
    train_split = types.SimpleNamespace(name="train")
    validation = types.SimpleNamespace(name="validation")
    prepared = types.SimpleNamespace(
        train=train_split, validation=validation, vocab=None
    )
    recipe = training.Recipe(build=None, batches=split_batches)
    batches = training._batches(recipe, prepared, config, strategy=None)
    seen = dict(zip(("train", "validation"), batches))
    seen = {k: b.dataset().element_spec[1].shape[0] for k, b in seen.items()}
    rows = 8 if granted == "tpu" else None
    assert seen == {"train": rows, "validation": rows}
