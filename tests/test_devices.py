"""Training precision: what each wish becomes on each machine, and a mixed model."""

import keras
import numpy as np
import pytest

from radcap import devices
from radcap.compiled import CompiledSearch
from radcap.config import preset
from radcap.devices import resolve_precision
from radcap.generate import Result, Rules


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
    """Per-epoch training losses of a fresh captioner, seeded, in `precision`."""
    from radcap.model import build_captioner

    keras.utils.set_random_seed(0)
    model = build_captioner(config, 30, precision=precision)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    targets = np.roll(inputs["tokens"], -1, axis=1)
    fit = model.fit(inputs, targets, batch_size=8, epochs=epochs, verbose=0)
    return model, np.array(fit.history["loss"])


@pytest.mark.parametrize(
    "decoder, attention", [("merge", True), ("transformer", False)]
)
def test_a_mixed_bfloat16_captioner_trains_like_float32_decodes_and_reloads(
    decoder, attention, tmp_path
):
    config = preset(
        "demo", decoder=decoder, attention=attention, units=32, embed_dim=16
    )
    rng = np.random.default_rng(0)
    inputs = {
        "features": rng.random((16, 4096)).astype("float32"),
        "tokens": rng.integers(3, 12, (16, 6)).astype("int32"),
        "grid": rng.random((16, 49, 512)).astype("float32"),
    }
    _, full = fit_losses(config, "float32", inputs)
    model, mixed = fit_losses(config, "mixed_bfloat16", inputs)
    assert keras.config.dtype_policy().name == "float32"  # the global one is back
    assert model.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)
    assert model(inputs).dtype == "float32"  # the softmax and the loss stay float32
    assert mixed[-1] < 0.8 * mixed[0]  # it learns, about as float32 does
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
