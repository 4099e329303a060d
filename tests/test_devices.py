"""Training precision: what each wish becomes on each machine, and a mixed model."""

import keras
import numpy as np
import pytest

from radcap.core import devices
from radcap.core.config import preset
from radcap.core.devices import resolve_precision
from radcap.decoding.compiled import CompiledSearch
from radcap.decoding.search import Result, Rules


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has `gpus` GPUs of compute capability `capability`."""

    def pretend(gpus=0, tpus=0, capability=(7, 5)):
        monkeypatch.setattr(
            devices, "_accelerators", lambda: (["gpu"] * gpus, ["tpu"] * tpus)
        )
        monkeypatch.setattr(
            devices,
            "_float16_gpus",
            lambda found: bool(found) and capability >= devices.FLOAT16_CAPABILITY,
        )

    return pretend


@pytest.mark.parametrize(
    "asked, found, policy, note",
    [
        ("auto", {}, "float32", None),
        ("auto", {"gpus": 2}, "mixed_float16", None),
        ("auto", {"gpus": 1, "capability": (6, 0)}, "float32", None),
        ("auto", {"tpus": 8}, "mixed_bfloat16", None),
        ("float32", {"gpus": 1}, "float32", None),
        ("mixed_bfloat16", {}, "mixed_bfloat16", None),
        ("mixed_float16", {"gpus": 1}, "mixed_float16", None),
        ("mixed_float16", {}, "float32", "mixed_float16 asked, no GPU found"),
        ("mixed_float16", {"tpus": 8}, "mixed_bfloat16", "8 TPU cores found"),
        ("mixed_float16", {"gpus": 1, "capability": (6, 1)}, "float32", "predates"),
    ],
)
def test_each_wish_on_each_machine(machine, asked, found, policy, note):
    machine(**found)
    got, why = resolve_precision(asked)
    assert got == policy
    assert (why is None) if note is None else (note in why and policy in why)


def test_this_machine_without_a_gpu_really_says_so():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    policy, note = resolve_precision("mixed_float16")
    assert policy == "float32" and "no GPU found" in note
    with pytest.raises(ValueError, match="precision='half' is invalid"):
        resolve_precision("half")
    with pytest.raises(ValueError, match="Config.precision='half' is invalid"):
        preset("demo", precision="half")


def fit_losses(config, precision, inputs, epochs=6):
    """Per-epoch training losses of a fresh captioner, seeded, in `precision`.

    Built and compiled by training's own recipe; `inputs` have no padding, so
    `token_weights` weigh every token of a batch of 8 alike.
    """
    from radcap.training.batches import token_weights
    from radcap.training.recipe import new_captioner

    config = config.replace(learning_rate=3e-3, seed=0)
    model = new_captioner(config, 30, precision=precision)
    targets = np.roll(inputs["tokens"], -1, axis=1)
    weights = np.concatenate([token_weights(targets[i : i + 8]) for i in (0, 8)])
    fit = model.fit(
        inputs, targets, sample_weight=weights, batch_size=8, epochs=epochs, verbose=0
    )
    return model, np.array(fit.history["loss"])


@pytest.mark.parametrize(
    "decoder, attention, epochs", [("merge", True, 6), ("transformer", False, 2)]
)
def test_a_mixed_bfloat16_captioner_trains_like_float32_decodes_and_reloads(
    decoder, attention, epochs, tmp_path
):
    """Merge: against float32 over 6 epochs; the transformer: it learns in 2."""
    config = preset(
        "demo", decoder=decoder, attention=attention, units=32, embed_dim=16
    )
    rng = np.random.default_rng(0)
    inputs = {
        "features": rng.random((16, 4096)).astype("float32"),
        "tokens": rng.integers(3, 12, (16, 6)).astype("int32"),
        "grid": rng.random((16, 49, 512)).astype("float32"),
    }
    model, mixed = fit_losses(config, "mixed_bfloat16", inputs, epochs)
    assert keras.config.dtype_policy().name == "float32"  # the global one is back
    assert model.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)
    assert model(inputs).dtype == "float32"  # the softmax and the loss stay float32
    assert mixed[-1] < (0.8 if epochs > 2 else 0.9) * mixed[0]  # it learns
    if decoder == "merge":  # as float32 does
        _, full = fit_losses(config, "float32", inputs, epochs)
        assert abs(mixed[-1] - full[-1]) < 0.1 * full[-1], (mixed, full)
    settings = dict(start_id=1, end_id=2, max_len=5, beam=3, rules=Rules((0,)))
    search = CompiledSearch(model)
    before = Result.of(search(inputs["features"], inputs["grid"], **settings))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.compute_dtype == "bfloat16"
    again = CompiledSearch(loaded)
    after = Result.of(again(inputs["features"], inputs["grid"], **settings))
    assert after.tokens == before.tokens and len(after.tokens) == 16


TPU_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")


@pytest.mark.parametrize(
    "asked, note",
    [
        ("auto", None),
        ("none", None),
        ("tpu", "strategy tpu asked, no TPU found: training on one device."),
        ("mirrored", "strategy mirrored asked, no GPU found: training on one device."),
    ],
)
def test_each_strategy_on_this_one_device_machine(asked, note, monkeypatch):
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU") or devices._tpu_strategy:
        pytest.skip("this machine has accelerators")
    for name in TPU_HINTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(devices.glob, "glob", lambda pattern: [])
    strategy, why = devices.resolve_strategy(asked)
    assert strategy.num_replicas_in_sync == 1
    assert devices.strategy_name(strategy) == "none"
    assert why == note


def test_a_bad_strategy_is_named():
    with pytest.raises(ValueError, match="strategy='gpu' is invalid"):
        devices.resolve_strategy("gpu")
    with pytest.raises(ValueError, match="Config.strategy='gpu' is invalid"):
        preset("demo", strategy="gpu")
    assert preset("demo", strategy=None).strategy == "none"  # --set strategy=none


def test_a_tpu_that_does_not_start_falls_back_with_its_reason(radcap_processes):
    """A TPU runtime's hint without a TPU: the reason in one line, no traceback.

    In a process of its own (forked: tests/forked.py), whose TensorFlow has
    not started its runtime.
    """
    import os

    code = (
        "from radcap.core.devices import resolve_strategy\n"
        "for asked in ('tpu', 'auto'):\n"
        "    strategy, note = resolve_strategy(asked)\n"
        "    print(strategy.num_replicas_in_sync, note)\n"
    )
    env = {**os.environ, "TPU_NAME": "local", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = radcap_processes.run([], env=env, code=code)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, asked in zip(lines, ("tpu", "auto")):
        assert line.startswith(f"1 strategy {asked} asked, a TPU was found but did")
        assert line.endswith("): training on one device.")
