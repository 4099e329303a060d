"""The merge captioner and its layers: shapes, serialization, encode and step."""

import keras
import numpy as np
import pytest

from radcap.core.config import preset
from radcap.decoding.compiled import CompiledStep
from radcap.models.layers import BahdanauAttention, FeatureNormalization
from radcap.models.merge import MergeCaptioner, build_captioner, feature_stats

VOCAB = 30


def make(attention=False, cell="lstm", seed=0, decoder="merge", dropout=0.0):
    config = preset(
        "demo",
        decoder=decoder,
        attention=attention,
        cell=cell,
        dropout=dropout,
        units=32,
        heads=4,
        embed_dim=16,
        attention_units=8,
    )
    rng = np.random.default_rng(seed)
    stats = {
        "fc2": (rng.random(4096), rng.random(4096) + 0.1),
        "grid": (rng.random(512), rng.random(512) + 0.1),
    }
    keras.utils.set_random_seed(seed)
    model = build_captioner(config, VOCAB, stats)
    inputs = {
        "features": rng.random((3, 4096)).astype("float32"),
        "tokens": np.array(
            [[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0], [1, 9, 9, 9, 9, 2]], "int32"
        ),
    }
    if config.uses_grid:
        inputs["grid"] = rng.random((3, 49, 512)).astype("float32")
    return model, inputs


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_output_shape(attention, cell):
    model, inputs = make(attention, cell)
    logits = model(inputs)
    assert tuple(logits.shape) == (3, 6, VOCAB)


@pytest.mark.parametrize("attention", [False, True])
def test_save_load_identical_outputs(tmp_path, attention):
    model, inputs = make(attention)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model(inputs).numpy(), loaded(inputs).numpy())


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stepping_matches_teacher_forcing(attention, cell):
    model, inputs = make(attention, cell)
    logits = model(inputs).numpy()
    expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    step = CompiledStep(model)
    state = step.start(inputs["features"], inputs.get("grid"))
    got = []
    for t in range(inputs["tokens"].shape[1]):
        log_probs, state, weights = step(inputs["tokens"][:, t], state)
        got.append(log_probs)
        assert weights.shape == ((3, 49) if attention else (3, 1))
    real = inputs["tokens"] != 0  # padded steps are masked in training
    np.testing.assert_allclose(np.stack(got, 1)[real], expected[real], atol=1e-4)


@pytest.mark.parametrize("decoder", ["merge", "transformer"])
def test_padding_does_not_change_earlier_steps(decoder):
    # The transformer's causal mask alone keeps right padding out.
    model, inputs = make(decoder=decoder)
    short = model(inputs).numpy()
    padded = dict(inputs, tokens=np.pad(inputs["tokens"], ((0, 0), (0, 4))))
    np.testing.assert_allclose(model(padded).numpy()[:, :6], short, atol=1e-5)


def test_attention_weights_are_a_distribution_per_step():
    layer = BahdanauAttention(8)
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 5, 16)).astype("float32")
    keys = rng.normal(size=(2, 49, 12)).astype("float32")
    context, weights = layer(query, keys, return_weights=True)
    weights = weights.numpy()
    assert context.shape == (2, 5, 12) and weights.shape == (2, 5, 49)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    # The context is the weighted sum of the values.
    np.testing.assert_allclose(
        context.numpy(), np.einsum("bsr,brd->bsd", weights, keys), atol=1e-5
    )


def test_get_config_round_trips():
    layer = BahdanauAttention(7, name="att")
    clone = BahdanauAttention.from_config(layer.get_config())
    assert clone.units == 7 and clone.name == "att"
    norm = FeatureNormalization(2, floor=0.2)
    clone = FeatureNormalization.from_config(norm.get_config())
    assert clone.dim == 2 and clone.floor == 0.2
    norm.set_statistics([1.0, 2.0], [0.5, 0.0])
    clone.set_weights(norm.get_weights())
    x = np.array([[2.0, 2.0]], "float32")
    np.testing.assert_allclose(clone(x).numpy(), norm(x).numpy())
    np.testing.assert_allclose(norm(x).numpy(), [[2.0, 0.0]], atol=1e-5)


@pytest.mark.parametrize("attention", [False, True])
def test_captioner_config_round_trips(attention):
    model, inputs = make(attention)
    config = model.get_config()
    clone = MergeCaptioner.from_config(config)
    assert clone.get_config() == config
    assert (clone.attention, clone.units, clone.vocab_size) == (attention, 32, VOCAB)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(model(inputs).numpy(), clone(inputs).numpy())


def test_encode_projects_attention_keys_once_per_image():
    model, inputs = make(attention=True)
    carry, memory = model.encode(inputs["features"], inputs["grid"])
    assert [tuple(x.shape) for x in carry] == [(3, 32), (3, 32)]
    assert [tuple(x.shape) for x in memory] == [(3, 32), (3, 49, 32), (3, 49, 8)]
    np.testing.assert_array_equal(carry[0].numpy(), 0.0)
    logits, carry, weights = model.step(np.array([1, 1, 1], "int32"), carry, memory)
    assert tuple(logits.shape) == (3, VOCAB) and tuple(weights.shape) == (3, 49)


def test_feature_normalization_floors_the_scale():
    # mean std = 0.5; the constant second feature is scaled by 0.1 * 0.5, not by 0.
    norm = FeatureNormalization(2, floor=0.1)
    norm.set_statistics([0.0, 3.0], [1.0, 0.0])
    out = norm(np.array([[2.0, 3.1]], "float32")).numpy()
    np.testing.assert_allclose(out, [[2.0, 0.1 / 0.05]], rtol=1e-4)


def test_feature_stats_chunks_match_numpy():
    x = np.random.default_rng(0).normal(size=(50, 3, 4)).astype("float16")
    mean, std = feature_stats(x, np.arange(0, 50, 2), chunk=7)
    flat = x[::2].astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-4)


@pytest.mark.parametrize("attention", [False, True])
def test_beam_one_equals_greedy_through_the_model(attention):
    from radcap.decoding.search import beam_search, greedy_search

    model, inputs = make(attention, seed=3)
    step = CompiledStep(model)
    state = step.start(inputs["features"], inputs.get("grid"))
    kwargs = dict(batch_size=3, start_id=1, end_id=2, max_len=8)
    greedy = greedy_search(step, state, **kwargs)
    beam = beam_search(step, state, beam=1, **kwargs)
    assert greedy.tokens == beam.tokens
    np.testing.assert_allclose(greedy.scores, beam.scores, rtol=1e-5)
    for g, b in zip(greedy.attention, beam.attention):
        np.testing.assert_allclose(g, b, atol=1e-6)
        if attention:
            np.testing.assert_allclose(g.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "decoder, attention", [("merge", False), ("merge", True), ("transformer", False)]
)
def test_the_compiled_search_equals_the_eager_one(decoder, attention):
    """One search: compiled with the model into a graph, or run step by step."""
    from radcap.decoding.compiled import CompiledSearch
    from radcap.decoding.search import Result, Rules, search

    model, inputs = make(attention, seed=4, decoder=decoder)
    step = CompiledStep(model)
    state = step.start(inputs["features"], inputs.get("grid"))
    compiled = CompiledSearch(model)
    for beam in (1, 3):
        settings = dict(
            start_id=1,
            end_id=2,
            max_len=7,
            beam=beam,
            length_penalty=0.5,
            rules=Rules((0,)),
        )
        eager = Result.of(search(step, state, 3, **settings))
        graph = Result.of(compiled(inputs["features"], inputs.get("grid"), **settings))
        assert graph.tokens == eager.tokens
        assert max(map(len, graph.tokens)) > 1
        np.testing.assert_allclose(graph.scores, eager.scores, rtol=1e-5)
        for g, e in zip(graph.attention, eager.attention):
            np.testing.assert_allclose(g, e, atol=1e-5)
    # Another batch size runs the same graph; each image decodes on its own.
    grid = inputs.get("grid")
    two = Result.of(
        compiled(inputs["features"][:2], None if grid is None else grid[:2], **settings)
    )
    assert two.tokens == graph.tokens[:2]
