"""The captioners' own layers and the feature statistics.

The contract every decoder keeps (shapes, steps, searching, saving) is in
tests/test_decoders.py.
"""

import numpy as np

from radcap.models.layers import BahdanauAttention, FeatureNormalization
from radcap.models.merge import feature_stats


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
