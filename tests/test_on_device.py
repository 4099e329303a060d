"""Features gathered on the device: the same batches and training as on the host."""

import numpy as np
from test_batches import as_numpy, captions

from radcap.core.config import preset
from radcap.training import on_device
from radcap.training.batches import Batches
from radcap.training.on_device import GatherFeatures, device_tables, feed, row_dataset


def two_splits(rng, grid: bool = True) -> list[Batches]:
    """Train (shuffled, filled) and validation batches over separate caches."""
    splits = []
    for n, images, shuffle in ((45, 9, True), (21, 5, False)):
        arrays = {"features": rng.normal(size=(images, 6)).astype(np.float16)}
        if grid:
            arrays["grid"] = rng.normal(size=(images, 4, 3)).astype(np.float16)
        rows = rng.integers(0, images, n)
        tokens = captions(n, seed=n)
        splits.append(Batches(tokens, rows, arrays, 8, shuffle, seed=3, fill=shuffle))
    return splits


def test_row_batches_gathered_from_the_tables_are_the_generators_batches():
    import keras

    splits = two_splits(np.random.default_rng(1))
    tables, offsets = device_tables(splits)
    assert offsets == [0, 9]
    chunked, _ = device_tables(splits, chunk=40)  # a row or three at a time
    for name, table in tables.items():
        np.testing.assert_array_equal(chunked[name].numpy(), table.numpy(), strict=True)
    assert {k: tuple(v.shape) for k, v in tables.items()} == {
        "features": (15, 6),  # 9 train rows, 5 validation rows, one of zeros
        "grid": (15, 4, 3),
    }
    for batches, offset in zip(splits, offsets):
        data = row_dataset(batches, offset, 14)
        for epoch in (0, 1):
            batches.epoch = epoch  # as the epoch callback sets it
            got = [as_numpy(element) for element in data]
            want = list(batches())
            assert len(got) == len(want) == len(batches) == -(-len(batches.rows) // 8)
            for (inputs, targets, weights), (x, y, w) in zip(got, want):
                for name in ("features", "grid"):
                    taken = keras.ops.take(tables[name], inputs["rows"], axis=0)
                    np.testing.assert_array_equal(
                        keras.ops.convert_to_numpy(taken), x[name], strict=True
                    )
                tokens = inputs["tokens"]
                np.testing.assert_array_equal(tokens, x["tokens"], strict=True)
                np.testing.assert_array_equal(targets, y, strict=True)
                np.testing.assert_array_equal(weights, w, strict=True)
    # The train split's last batch is filled up; its empty rows take the zero row.
    train = splits[0]
    last = [as_numpy(e) for e in row_dataset(train, 0, 14)]
    sizes = [len(e[0]["rows"]) for e in last]
    rows = np.concatenate([e[0]["rows"] for e in last])
    assert sizes == [8] * 6 and (rows == 14).sum() == 3


def test_training_gathering_on_the_device_ends_with_the_same_weights_and_checkpoint(
    tmp_path,
):
    import keras

    from radcap.training.callbacks import EpochSeed
    from radcap.training.recipe import new_captioner

    rng = np.random.default_rng(0)
    splits = []
    for n, images, shuffle in ((40, 6, True), (12, 3, False)):
        arrays = {"features": rng.normal(size=(images, 4096)).astype(np.float16)}
        rows = rng.integers(0, images, n)
        splits.append(Batches(captions(n, n), rows, arrays, 16, shuffle, fill=shuffle))
    stats = {"fc2": (np.zeros(4096, "float32"), np.ones(4096, "float32"))}
    config = preset("demo", units=8, embed_dim=4, seed=0)  # dropout 0.3: seeded
    results = []
    for gather in (False, True):
        model = new_captioner(config, 30, stats, verbose=False)
        fitted, (train, validation) = feed(model, splits, on_device=gather)
        assert isinstance(fitted, GatherFeatures) is gather
        history = fitted.fit(
            train,
            validation_data=validation,
            epochs=2,
            callbacks=[EpochSeed(splits[0])],
            shuffle=False,
            verbose=0,
        ).history
        losses = history["loss"] + history["val_loss"]
        fitted.save(tmp_path / f"{gather}.keras")  # the captioner, either way
        fitted.save_weights(tmp_path / f"{gather}.weights.h5")
        results.append((losses, [w.numpy() for w in model.weights]))
    (host_losses, host), (device_losses, device) = results
    assert host_losses == device_losses and all(np.isfinite(host_losses))
    assert len(host) == len(device) > 5
    for before, now in zip(host, device):
        np.testing.assert_array_equal(before, now)
    loaded = keras.saving.load_model(tmp_path / "True.keras")
    assert type(loaded) is type(model) and loaded.optimizer.iterations == 6
    for saved, trained in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(saved.numpy(), trained.numpy())
    fresh = new_captioner(config, 30, stats, verbose=False)
    fresh.optimizer.build(fresh.trainable_variables)  # to load its state, as resuming
    fresh.load_weights(tmp_path / "True.weights.h5")  # the captioner's layout
    assert fresh.optimizer.iterations == 6
    for saved, trained in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(saved.numpy(), trained.numpy())


def test_features_are_gathered_on_the_host_without_one_gpu(monkeypatch):
    splits = two_splits(np.random.default_rng(2), grid=False)
    assert on_device.gathers_on_device(splits) is False  # this machine: no GPU
    import tensorflow as tf

    gpu = [tf.config.LogicalDevice("/device:GPU:0", "GPU")]
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: gpu)
    assert on_device.gathers_on_device(splits) is True
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():  # replicas: the host
        assert on_device.gathers_on_device(splits) is False
    assert on_device.table_bytes(splits) == (9 + 5 + 1) * 6 * 2  # float16 rows
    monkeypatch.setattr(on_device, "LIMIT", 15 * 6 * 2 - 1)
    assert on_device.gathers_on_device(splits) is False  # too large for the GPU
    monkeypatch.setattr(on_device, "LIMIT", 15 * 6 * 2)
    assert on_device.gathers_on_device(splits) is True
    features = splits[1].arrays["features"]
    splits[1].arrays["features"] = features.astype(np.float32)
    assert on_device.gathers_on_device(splits) is False  # the splits' dtypes differ
    splits[1].arrays["features"] = features
    splits[0].static = True  # a TPU's batches
    assert on_device.gathers_on_device(splits) is False
    splits[0].static = False
    pairs = type("Pairs", (Batches,), {})  # a subclass: other batches
    splits[1].__class__ = pairs
    assert on_device.gathers_on_device(splits) is False
