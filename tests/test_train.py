"""Training: length-bucketed batches, the run folder, resume after an interruption."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from tiny_run import patch_tiny_backbone

from radcap.core.config import preset
from radcap.core.text import Vocabulary
from radcap.data.demo import make_demo
from radcap.data.layouts import load_demo
from radcap.features.cache import extract
from radcap.models import runs
from radcap.training.batches import (
    WIDTHS,
    Batches,
    bucket_widths,
    token_loss,
    token_weights,
)
from radcap.training.callbacks import DivergedError
from radcap.training.train import train


def test_batches_cover_every_caption_once_and_trim_padding_to_few_widths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=50)
    tokens = np.zeros((50, 14), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(3, 9, size=n)
    rows = rng.integers(0, 5, size=50)
    features = rng.normal(size=(5, 4)).astype(np.float16)
    batches = Batches(tokens, rows, {"features": features}, batch_size=8, shuffle=True)
    assert len(batches.widths) == WIDTHS and batches.widths[-1] == lengths.max()
    seen = []
    for index in batches.plan(epoch=0):
        inputs, targets = batches.batch(index)
        width = inputs["tokens"].shape[1] + 1
        # Cut to the narrowest of the split's widths that holds the longest.
        fits = batches.widths[batches.widths >= lengths[index].max()]
        assert width == fits[0]
        np.testing.assert_array_equal(inputs["tokens"], tokens[index, : width - 1])
        np.testing.assert_array_equal(targets, tokens[index, 1:width])
        np.testing.assert_array_equal(
            inputs["features"], features[rows[index]].astype(np.float32)
        )
        seen += index.tolist()
    assert sorted(seen) == list(range(50))
    # The order depends on the epoch only: a resumed run sees the same batches.
    again = Batches(tokens, rows, {"features": features}, 8, True)
    assert [b.tolist() for b in again.plan(3)] == [b.tolist() for b in batches.plan(3)]
    assert [b.tolist() for b in batches.plan(3)] != [
        b.tolist() for b in batches.plan(4)
    ]


def test_bucket_widths_pad_least_among_every_choice():
    lengths = np.array([3, 3, 4, 5, 9, 9, 10, 10, 10, 14])
    # Fewer distinct lengths than widths: every length is a width.
    assert bucket_widths(lengths, 8).tolist() == [3, 4, 5, 9, 10, 14]
    # Three widths: 14 (the longest) and the two that pad least: 5 and 10
    # (padding 2 + 1 + 0 + 4 + 4 + 0 = 11; e.g. 4 and 10 would pad 12).
    assert bucket_widths(lengths, 3).tolist() == [5, 10, 14]
    assert bucket_widths(lengths, 1).tolist() == [14]
    rng = np.random.default_rng(1)
    for _ in range(5):
        drawn = rng.integers(2, 12, 40)
        values = np.unique(drawn)

        def padding(widths, drawn=drawn):
            return (widths[np.searchsorted(widths, drawn)] - drawn).sum()

        best = min(  # every choice of 3 widths that holds the longest
            padding(np.array(sorted({a, b, values[-1]})))
            for a in values
            for b in values
        )
        assert padding(bucket_widths(drawn, 3)) == best


def test_a_filled_batch_has_the_same_loss_and_its_empty_rows_weigh_nothing():
    rng = np.random.default_rng(0)
    tokens = np.zeros((10, 7), np.int32)
    for i, n in enumerate(rng.integers(3, 8, 10)):
        tokens[i, :n] = [1, *rng.integers(4, 9, n - 2), 2]
    features = {"features": rng.normal(size=(10, 3))}
    filled = Batches(tokens, np.arange(10), features, 4, shuffle=True, fill=True)
    plain = Batches(tokens, np.arange(10), features, 4, shuffle=True)
    last = next(index for index in filled.plan(0) if len(index) == 2)
    inputs, targets = filled.batch(last)
    few_inputs, few_targets = plain.batch(last)
    assert inputs["tokens"].shape[0] == inputs["features"].shape[0] == 4
    assert few_inputs["tokens"].shape[0] == 2  # validation keeps the size
    np.testing.assert_array_equal(inputs["features"][:2], few_inputs["features"])
    np.testing.assert_array_equal(targets[:2], few_targets)
    # The empty rows: <start> alone, no target, no weight, zero features.
    np.testing.assert_array_equal(inputs["tokens"][2:, 0], [1, 1])
    assert not inputs["tokens"][2:, 1:].any() and not targets[2:].any()
    assert not inputs["features"][2:].any()
    weights, few_weights = token_weights(targets), token_weights(few_targets)
    assert not weights[2:].any()
    np.testing.assert_array_equal(weights[:2], few_weights)
    logits = rng.normal(size=(*targets.shape, 9)).astype("float32")
    loss = token_loss()
    assert float(loss(targets, logits, weights)) == pytest.approx(
        float(loss(few_targets, logits[:2], few_weights)), rel=1e-6
    )


def test_an_epoch_of_real_roco_captions_meets_few_shapes():
    sample = Path(__file__).parent / "data/roco_captions_sample.tsv"
    table = pd.read_csv(sample, sep="\t")
    vocab = Vocabulary.build(table["caption"], max_len=60)
    tokens = vocab.encode_batch(table["caption"])
    batches = Batches(tokens, np.zeros(len(tokens)), {}, 16, shuffle=True, fill=True)
    shapes = {batches.batch(index)[0]["tokens"].shape for index in batches.plan(0)}
    old = {(len(i), batches.lengths[i].max() - 1) for i in batches.plan(0)}
    assert len(old) > 2 * WIDTHS  # cut to each batch's longest: many shapes
    assert len(shapes) <= WIDTHS and {rows for rows, _ in shapes} == {16}


def test_the_recipe_compiles_with_the_configs_jit_compile():
    from radcap.models.merge import build_captioner
    from radcap.training.recipe import compile_captioner

    config = preset("demo", units=8, embed_dim=4)
    model = build_captioner(config, vocab_size=6)
    for asked, granted in (("on", True), ("off", False), ("auto", False)):
        compile_captioner(model, config.replace(jit_compile=asked))
        assert model.jit_compile is granted, asked  # "auto" is off on a CPU


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone_here():
    """The tiny stand-in for VGG16: training does not depend on its weights."""
    with pytest.MonkeyPatch.context() as patch:
        patch_tiny_backbone(patch)
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_demo(root / "data/demo", n=40, seed=0)
    config = preset(
        "demo",
        demo_size=40,
        epochs=3,
        early_stopping=0,
        units=32,
        embed_dim=16,
        extract_batch_size=8,
        name="tiny",
    )
    dataset = load_demo(root / "data/demo")
    # One backbone pass caches fc2 and the grid too, for the transformer's test.
    for split in ("train", "validation"):
        extract(
            config.replace(decoder="transformer"), dataset.images(split), split, root
        )
    return root, config, dataset


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


class FirstEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


class RaiseTheRate(keras.callbacks.Callback):
    """A learning rate that makes the second epoch diverge."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.optimizer.learning_rate.assign(1e30)


def tensorboard_scalars(folder, tag: str) -> dict[int, float]:
    """`{step: value}` of one scalar over every event file in `folder`."""
    import tensorflow as tf

    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def test_interrupted_training_resumes_at_the_next_epoch(tiny, monkeypatch):
    from radcap.training import on_device

    root, config, dataset = tiny
    run_dir = config.run_dir(root)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset, root, callbacks=[StopAfterFirstEpoch()], verbose=False)
    assert (run_dir / "backup").exists() and not (run_dir / "training.json").exists()
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [0]

    # It resumes gathering features as on a GPU: the checkpoints are the same.
    monkeypatch.setattr(on_device, "gathers_on_device", lambda batches: True)
    seen = FirstEpoch()
    summary = train(config, dataset, root, callbacks=[seen], verbose=False)
    assert seen.epochs == [1, 2]  # starts at the second epoch (0-based 1)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    # The plateau schedule logs the rate of every epoch; none has stalled 3 epochs.
    assert history["learning_rate"].tolist() == pytest.approx(
        [config.learning_rate] * 3
    )
    assert summary["epochs_run"] == 3 and not (run_dir / "backup").exists()
    assert summary["jit_compile"] == "off"  # "auto" on a CPU: Keras' choice
    assert summary["features_gathered_on"] == "device"
    best = keras.saving.load_model(run_dir / "best.keras", compile=False)
    assert type(best).__name__ == "MergeCaptioner"  # the captioner, not its feeder
    for name in (
        "config.json",
        "vocab.json",
        "best.keras",
        "history.csv",
        "training.json",
    ):
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "config.json").read_text())["name"] == "tiny"
    # TensorBoard holds each epoch once, the interrupted run's and the resumed
    # run's event files together, with the history's losses.
    for folder, column in (("train", "loss"), ("validation", "val_loss")):
        logged = tensorboard_scalars(run_dir / "logs" / folder, "epoch_loss")
        assert sorted(logged) == [0, 1, 2]
        assert [logged[e] for e in range(3)] == pytest.approx(
            history[column].tolist(), rel=1e-6
        )

    # A finished run is not trained again.
    seen = FirstEpoch()
    train(config, dataset, root, callbacks=[seen], verbose=False)
    assert seen.epochs == []


def test_a_run_folder_with_another_config_is_refused(tiny):
    root, config, dataset = tiny
    train(config, dataset, root, verbose=False)
    with pytest.raises(ValueError, match="another config.*units: saved 32, now 64"):
        train(config.replace(units=64), dataset, root, verbose=False)
    # Another machine's devices or precision are no other run: it goes on.
    other = config.replace(precision="mixed_bfloat16", strategy="none")
    assert train(other, dataset, root, verbose=False)["epochs_run"] == 3


def test_a_finished_run_asked_for_more_epochs_trains_on(tiny):
    root, config, dataset = tiny
    config = config.replace(name="longer")
    run_dir = config.run_dir(root)
    train(config, dataset, root, verbose=False)
    first = pd.read_csv(run_dir / "history.csv")

    seen = FirstEpoch()
    summary = train(config.replace(epochs=5), dataset, root, callbacks=[seen])
    assert seen.epochs == [3, 4]
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(history.head(3), first)  # the log is kept
    assert summary["epochs"] == 5 and summary["epochs_run"] == 5
    assert summary["best_val_loss"] == pytest.approx(history["val_loss"].min())
    # The first epoch trained on starts from the best weights, not from scratch.
    assert history["val_loss"][3] < first["val_loss"][0]

    # Fewer epochs than were run: nothing to do.
    seen = FirstEpoch()
    train(config.replace(epochs=4), dataset, root, callbacks=[seen], verbose=False)
    assert seen.epochs == []


def test_early_stopping_counts_the_epochs_before_a_resume():
    from radcap.training.callbacks import EarlyStopping

    history = pd.DataFrame({"epoch": [0, 1, 2, 3], "val_loss": [1.0, 0.5, 0.6, 0.7]})
    stopper = EarlyStopping(history, monitor="val_loss", patience=3)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    stopper.set_model(model)
    stopper.on_train_begin()
    assert stopper.best == 0.5 and stopper.wait == 2
    model.stop_training = False
    stopper.on_epoch_end(4, {"val_loss": 0.8})  # third epoch without a better loss
    assert model.stop_training


def test_the_learning_rate_halves_on_a_plateau(tiny):
    root, config, dataset = tiny
    # A rate too small to move the loss: every epoch after the first stalls.
    config = config.replace(
        name="plateau", learning_rate=1e-9, lr_patience=1, epochs=4, early_stopping=0
    )
    train(config, dataset, root, verbose=False)
    rates = pd.read_csv(config.run_dir(root) / "history.csv")["learning_rate"]
    assert rates[0] == pytest.approx(1e-9)
    assert rates.iloc[-1] < rates[0]  # halved at least once
    assert rates.iloc[-1] >= 1e-11 * 0.999  # never below learning_rate / 100


def test_an_empty_vocabulary_is_refused_with_the_counts(tiny):
    root, config, dataset = tiny
    config = config.replace(name="novocab", min_count=10_000)
    with pytest.raises(ValueError) as err:
        train(config, dataset, root, verbose=False)
    message = str(err.value)
    assert "vocabulary is empty" in message and "min_count=10000" in message
    assert f"the {len(dataset.split('train'))} train captions" in message


def test_the_transformer_trains_and_captions_from_its_run_folder(tiny):
    from radcap.decoding.captioner import Captioner
    from radcap.models.transformer import TransformerCaptioner

    # Resume, early stopping and the run folder are the decoder-blind code
    # tested above; this checks that the transformer goes through them.
    root, config, dataset = tiny
    config = config.replace(name="tiny-transformer", decoder="transformer", heads=4)
    seen = FirstEpoch()
    summary = train(config, dataset, root, callbacks=[seen], verbose=False)
    assert seen.epochs == [0, 1, 2] and summary["epochs_run"] == 3
    history = pd.read_csv(config.run_dir(root) / "history.csv")
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]  # it learns

    captioner = Captioner.load(config.run_dir(root))
    assert isinstance(captioner.model, TransformerCaptioner) and captioner.uses_grid
    images = dataset.images("test")["path"].tolist()[:2]
    for result in captioner.describe(images):
        assert result.error is None and result.words
        assert result.attention.shape == (len(result.words), 49)


def test_the_plateau_schedule_after_a_resume_lowers_the_rate_when_one_run_would():
    """A run cut after any epoch lowers the rate at the epoch the whole run does."""
    from radcap.training.callbacks import ReduceLROnPlateau

    losses = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.85, 0.99, 0.99, 0.99, 0.99]

    def schedule(history, epochs):
        """Per-epoch rates of `fit`-like calls over `epochs`, after `history`."""
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
        if history is not None:
            model.optimizer.learning_rate = history["learning_rate"].iloc[-1]
        callback = ReduceLROnPlateau(history, factor=0.5, patience=2, cooldown=1)
        callback.set_model(model)
        callback.on_train_begin()
        rates = []
        for epoch in epochs:
            callback.on_epoch_end(epoch, {"val_loss": losses[epoch]})
            rates.append(float(model.optimizer.learning_rate))
        return rates

    whole = schedule(None, range(len(losses)))
    # patience 2, cooldown 1: lowered at epochs 3, 5, 8 and 10 (0-based)
    assert whole == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.0625]
    for cut in range(1, len(losses)):
        before = pd.DataFrame({"val_loss": losses[:cut], "learning_rate": whole[:cut]})
        assert schedule(before, range(cut, len(losses))) == whole[cut:], cut


def test_a_diverged_loss_stops_training_and_a_lower_rate_goes_on_from_the_last_good(
    tiny,
):
    root, config, dataset = tiny
    config = config.replace(name="diverges", learning_rate=1e30, epochs=2)
    run_dir = config.run_dir(root)
    with pytest.raises(DivergedError) as err:
        train(config, dataset, root, verbose=False)
    message = str(err.value)
    assert message.startswith("Training diverged in epoch 1: the ")
    assert message.endswith(
        "The likeliest cause is learning_rate=1e+30, too high: lower it (e.g. "
        "--set learning_rate=0.001) and run again with the same run name; no epoch "
        "finished before it, so the rerun starts over."
    )
    for name in ("history.csv", "best.keras", "backup"):
        assert not (run_dir / name).exists()

    # The rerun may change the learning rate; this one diverges in epoch 2.
    config = config.replace(learning_rate=2e-3)
    with pytest.raises(DivergedError) as err:
        train(config, dataset, root, callbacks=[RaiseTheRate()], verbose=False)
    assert str(err.value).startswith("Training diverged in epoch 2: the ")
    assert str(err.value).endswith(
        "learning_rate=0.002, too high: lower it (e.g. --set learning_rate=0.0002) "
        "and run again with the same run name; it goes on from epoch 1, the last "
        "good one."
    )
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [0]
    assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all()
    assert [p.name for p in (run_dir / "backup").iterdir()] == ["epoch-0.keras"]

    # The backup holds the rate that diverged; the rerun trains on with its own.
    seen = FirstEpoch()
    summary = train(config.replace(learning_rate=1e-3), dataset, root, callbacks=[seen])
    assert seen.epochs == [1] and summary["epochs_run"] == 2
    history = pd.read_csv(run_dir / "history.csv")
    assert history["learning_rate"].tolist() == pytest.approx([2e-3, 1e-3])
    assert not (run_dir / runs.DIVERGED).exists()
    # Without a divergence, another learning rate is another run.
    with pytest.raises(ValueError, match="learning_rate: saved 0.001, now 0.002"):
        train(config, dataset, root, verbose=False)


def test_a_beam_wider_than_the_vocabulary_is_refused_before_training(tiny):
    root, config, dataset = tiny
    config = config.replace(name="wide", beam=1000)
    run_dir = config.run_dir(root)
    with pytest.raises(ValueError) as err:
        train(config, dataset, root, verbose=False)
    size = Vocabulary.load(run_dir / "vocab.json").size
    assert str(err.value) == (
        f"beam=1000 is wider than the vocabulary: it has {size} tokens, so the "
        f"largest beam is {size}. Use a beam of {size} or less."
    )
    assert not (run_dir / "history.csv").exists()
    runs.check_config(run_dir, config.replace(beam=size))  # the rerun may fix it
