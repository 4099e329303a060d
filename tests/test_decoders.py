"""The contract every decoder keeps: shapes, stepping, searching, saving, config.

Each test runs for every decoder (`DECODERS`): the merge model, the merge
model with attention and the transformer. They replace the pairs of tests
that tests/test_model.py and tests/test_transformer.py each wrote for their
own decoder (output shape; steps against teacher forcing; beam 1 against
greedy; save and load; config round trip; encode and step shapes), and
take in the two that were already parametrised over decoders there (right
padding; the compiled search against the eager one).
"""

import keras
import numpy as np
import pytest

from radcap.core.config import preset
from radcap.decoding.compiled import CompiledSearch, CompiledStep
from radcap.decoding.search import Result, Rules, beam_search, greedy_search, search
from radcap.models.merge import build_captioner

VOCAB = 30
DECODERS = {
    "merge": dict(decoder="merge", attention=False),
    "merge+attention": dict(decoder="merge", attention=True),
    "transformer": dict(decoder="transformer", attention=False),
}
# The stepping contract also for a GRU cell, whose carry keeps `c` unchanged.
STEPPED = {
    **DECODERS,
    "merge-gru": dict(decoder="merge", attention=False, cell="gru"),
    "merge-gru+attention": dict(decoder="merge", attention=True, cell="gru"),
}


def make(attention=False, cell="lstm", seed=0, decoder="merge", dropout=0.0):
    """A small seeded captioner and a batch of 3 right-padded captions."""
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


def carry_shapes(model, t: int) -> list[tuple]:
    """The carry's shapes after `t` tokens: an RNN's `(h, c)`, or each
    transformer block's cached keys and values of `t` positions."""
    if model.name == "transformer_captioner":
        return [(3, 4, t, 8)] * 4
    return [(3, 32), (3, 32)]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", STEPPED)
def test_stepping_equals_teacher_forcing(name):
    model, inputs = make(dropout=0.3, **STEPPED[name])  # dropout is off decoding
    logits = model(inputs).numpy()
    assert logits.shape == (3, 6, VOCAB) and logits.dtype == np.float32
    step = CompiledStep(model)
    state = step.start(inputs["features"], inputs.get("grid"))
    got = []
    for t in range(inputs["tokens"].shape[1]):
        log_probs, state, weights = step(inputs["tokens"][:, t], state)
        got.append(log_probs)
        carry = [s.shape for s in state[: len(carry_shapes(model, 0))]]
        assert carry == carry_shapes(model, t + 1)
        assert weights.shape == ((3, 49) if model.uses_grid else (3, 1))
    # Padding is masked in training; the transformer's causal mask keeps
    # right padding out.
    real = inputs["tokens"] != 0
    np.testing.assert_allclose(
        np.stack(got, 1)[real], log_softmax(logits)[real], atol=1e-4
    )


@pytest.mark.parametrize("name", DECODERS)
def test_call_with_cache_in_two_parts_equals_call(name):
    """The one forward pass: a caption's first 3 tokens, then the rest from the
    carry they left, gives the logits of the whole caption at once."""
    model, inputs = make(**DECODERS[name])
    carry, memory = model.encode(inputs["features"], inputs.get("grid"))
    tokens = inputs["tokens"]
    first, carry, _ = model.call_with_cache(tokens[:, :3], memory, carry)
    rest, carry, weights = model.call_with_cache(tokens[:, 3:], memory, carry)
    assert [tuple(c.shape) for c in carry] == carry_shapes(model, 6)
    whole = model(inputs).numpy()
    # Right padding is what a caption ends with, so the first 3 are real.
    np.testing.assert_allclose(first.numpy(), whole[:, :3], atol=1e-5)
    real = tokens[:, 3:] != 0
    np.testing.assert_allclose(rest.numpy()[real], whole[:, 3:][real], atol=1e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_encode_and_step_shapes(name):
    model, inputs = make(**DECODERS[name])
    carry, memory = model.encode(inputs["features"], inputs.get("grid"))
    assert [tuple(x.shape) for x in carry] == carry_shapes(model, 0)
    if model.name == "transformer_captioner":
        # Each block's keys and values over 49 regions and the fc2 token.
        assert [tuple(m.shape) for m in memory] == [(3, 4, 50, 8)] * 4
    elif model.uses_grid:  # the attention keys are projected once per image
        assert [tuple(x.shape) for x in memory] == [(3, 32), (3, 49, 32), (3, 49, 8)]
    else:
        assert [tuple(x.shape) for x in memory] == [(3, 32)]
    if model.name != "transformer_captioner":
        np.testing.assert_array_equal(carry[0].numpy(), 0.0)
    logits, carry, weights = model.step(np.array([1, 1, 1], "int32"), carry, memory)
    assert tuple(logits.shape) == (3, VOCAB)
    assert [tuple(x.shape) for x in carry] == carry_shapes(model, 1)
    assert tuple(weights.shape) == ((3, 49) if model.uses_grid else (3, 1))


@pytest.mark.parametrize("name", DECODERS)
def test_beam_one_equals_greedy(name):
    model, inputs = make(seed=3, **DECODERS[name])
    step = CompiledStep(model)
    kwargs = dict(batch_size=3, start_id=1, end_id=2, max_len=8, rules=Rules((0,)))
    state = step.start(inputs["features"], inputs.get("grid"))
    greedy = greedy_search(step, state, **kwargs)
    beam = beam_search(step, state, beam=1, **kwargs)
    assert greedy.tokens == beam.tokens
    np.testing.assert_allclose(greedy.scores, beam.scores, rtol=1e-5)
    for g, b in zip(greedy.attention, beam.attention):
        np.testing.assert_allclose(g, b, atol=1e-6)
        if DECODERS[name]["attention"]:  # Bahdanau's weights: a distribution
            np.testing.assert_allclose(g.sum(-1), 1.0, atol=1e-5)
    # Wider beams reorder the carry along the batch and still score what they say.
    wide = beam_search(step, state, beam=3, length_penalty=0.0, **kwargs)
    assert (wide.scores >= greedy.scores - 1e-5).all()


@pytest.mark.parametrize("name", DECODERS)
def test_save_load_gives_identical_outputs(name, tmp_path):
    model, inputs = make(**DECODERS[name])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model(inputs).numpy(), loaded(inputs).numpy())
    step, again = CompiledStep(model), CompiledStep(loaded)
    grid = inputs.get("grid")
    a = greedy_search(step, step.start(inputs["features"], grid), 3, 1, 2, 6)
    b = greedy_search(again, again.start(inputs["features"], grid), 3, 1, 2, 6)
    assert a.tokens == b.tokens


@pytest.mark.parametrize("name", DECODERS)
def test_get_config_round_trips(name):
    model, inputs = make(**DECODERS[name])
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert (clone.uses_grid, clone.units, clone.vocab_size) == (
        model.uses_grid,
        32,
        VOCAB,
    )
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(model(inputs).numpy(), clone(inputs).numpy())


@pytest.mark.parametrize("name", DECODERS)
def test_padding_does_not_change_earlier_steps(name):
    # The transformer's causal mask alone keeps right padding out.
    model, inputs = make(**DECODERS[name])
    short = model(inputs).numpy()
    padded = dict(inputs, tokens=np.pad(inputs["tokens"], ((0, 0), (0, 4))))
    np.testing.assert_allclose(model(padded).numpy()[:, :6], short, atol=1e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_the_compiled_search_equals_the_eager_one(name):
    """One search: compiled with the model into a graph, or run step by step."""
    model, inputs = make(seed=4, **DECODERS[name])
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
