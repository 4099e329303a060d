"""The transformer captioner: its sizes, cross-attention and attention layers.

The contract every decoder keeps (cached steps against teacher forcing,
searching, saving) is in tests/test_decoders.py.
"""

import numpy as np
import pytest
from test_decoders import VOCAB
from test_decoders import make as make_model

from radcap.core.config import preset
from radcap.models.transformer import (
    CachedAttention,
    DecoderBlock,
    TransformerCaptioner,
)


def make(seed=0, dropout=0.0):
    """A small transformer and a batch (`test_decoders.make`'s, with the grid)."""
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


def test_cross_attention_weights_cover_the_grid_and_the_image_token():
    model, inputs = make()
    carry, memory = model.encode(inputs["features"], inputs["grid"])
    _, carry, weights = model.step(np.array([1, 1, 1], "int32"), carry, memory)
    weights = np.asarray(weights)
    assert weights.shape == (3, 49) and (weights >= 0).all()
    # The rest of each row's weight is on the whole-image token.
    assert (weights.sum(-1) < 1.0).all() and (weights.sum(-1) > 0.5).all()
    # Where a region is matters: moving the same content to another region
    # changes what the model says (the regions carry position embeddings).
    moved = dict(inputs, grid=np.roll(inputs["grid"], 3, axis=1))
    assert not np.allclose(model(inputs).numpy(), model(moved).numpy(), atol=1e-4)


def test_the_layers_config_round_trips():
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
