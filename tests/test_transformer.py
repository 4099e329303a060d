"""The transformer captioner: cached decoding against teacher forcing, saving."""

import keras
import numpy as np
import pytest
from test_model import VOCAB
from test_model import make as make_model

from radcap.core.config import preset
from radcap.decoding.compiled import CompiledStep
from radcap.decoding.search import Rules, beam_search, greedy_search
from radcap.models.transformer import (
    CachedAttention,
    DecoderBlock,
    TransformerCaptioner,
)


def make(seed=0, dropout=0.0):
    """A small transformer and a batch (`test_model.make`'s, with the grid)."""
    return make_model(seed=seed, decoder="transformer", dropout=dropout)


def test_the_config_builds_a_transformer_of_its_sizes():
    model, inputs = make()
    assert isinstance(model, TransformerCaptioner)
    assert (model.units, model.heads, model.depth, model.ff_units) == (32, 4, 2, 64)
    assert model.max_positions == 21  # <start> and the demo's max_len of 20 words
    assert tuple(model(inputs).shape) == (3, 6, VOCAB)
    with pytest.raises(ValueError, match="heads.*a divisor of units=30"):
        preset("demo", decoder="transformer", units=30, heads=4)
    with pytest.raises(ValueError, match="decoder='rnn' is invalid"):
        preset("demo", decoder="rnn")


def test_cached_steps_equal_teacher_forcing():
    model, inputs = make(dropout=0.3)  # dropout is off when decoding
    logits = model(inputs).numpy()
    expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    step = CompiledStep(model)
    state = step.start(inputs["features"], inputs["grid"])
    got = []
    for t in range(inputs["tokens"].shape[1]):
        log_probs, state, weights = step(inputs["tokens"][:, t], state)
        got.append(log_probs)
        # The cache holds one more position per step, for every block.
        assert [s.shape for s in state[:4]] == [(3, 4, t + 1, 8)] * 4
        assert weights.shape == (3, 49)
    real = inputs["tokens"] != 0  # right padding: the causal mask keeps it out
    np.testing.assert_allclose(np.stack(got, 1)[real], expected[real], atol=1e-4)


def test_cross_attention_weights_cover_the_grid_and_the_image_token():
    model, inputs = make()
    carry, memory = model.encode(inputs["features"], inputs["grid"])
    # Each block's keys and values over 49 regions and the fc2 token.
    assert [tuple(m.shape) for m in memory] == [(3, 4, 50, 8)] * 4
    _, carry, weights = model.step(np.array([1, 1, 1], "int32"), carry, memory)
    weights = np.asarray(weights)
    assert weights.shape == (3, 49) and (weights >= 0).all()
    # The rest of each row's weight is on the whole-image token.
    assert (weights.sum(-1) < 1.0).all() and (weights.sum(-1) > 0.5).all()
    # Where a region is matters: moving the same content to another region
    # changes what the model says (the regions carry position embeddings).
    moved = dict(inputs, grid=np.roll(inputs["grid"], 3, axis=1))
    assert not np.allclose(model(inputs).numpy(), model(moved).numpy(), atol=1e-4)


def test_beam_one_equals_greedy_through_the_transformer():
    model, inputs = make(seed=3)
    step = CompiledStep(model)
    kwargs = dict(batch_size=3, start_id=1, end_id=2, max_len=8, rules=Rules((0,)))
    state = step.start(inputs["features"], inputs["grid"])
    greedy = greedy_search(step, state, **kwargs)
    beam = beam_search(
        step, step.start(inputs["features"], inputs["grid"]), beam=1, **kwargs
    )
    assert greedy.tokens == beam.tokens
    np.testing.assert_allclose(greedy.scores, beam.scores, rtol=1e-5)
    for g, b in zip(greedy.attention, beam.attention):
        np.testing.assert_allclose(g, b, atol=1e-6)
    # Wider beams reorder the caches along the batch and still score what they say.
    wide = beam_search(step, state, beam=3, length_penalty=0.0, **kwargs)
    assert (wide.scores >= greedy.scores - 1e-5).all()


def test_save_load_gives_identical_outputs(tmp_path):
    model, inputs = make()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model(inputs).numpy(), loaded(inputs).numpy())
    step, again = CompiledStep(model), CompiledStep(loaded)
    a = greedy_search(step, step.start(inputs["features"], inputs["grid"]), 3, 1, 2, 6)
    b = greedy_search(
        again, again.start(inputs["features"], inputs["grid"]), 3, 1, 2, 6
    )
    assert a.tokens == b.tokens


def test_get_config_round_trips():
    model, inputs = make()
    config = model.get_config()
    clone = TransformerCaptioner.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(model(inputs).numpy(), clone(inputs).numpy())
    for layer in (CachedAttention(16, 2, name="a"), DecoderBlock(16, 2, 24, 0.1)):
        assert type(layer).from_config(layer.get_config()).get_config() == (
            layer.get_config()
        )


def test_causal_self_attention_ignores_later_positions():
    layer = CachedAttention(8, 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    changed = x.copy()
    changed[:, 3:] += 10.0  # later positions changed
    a = layer(x, x, causal=True).numpy()
    b = layer(changed, changed, causal=True).numpy()
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)
    assert not np.allclose(a[:, 3:], b[:, 3:])
