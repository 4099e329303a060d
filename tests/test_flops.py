"""The benches' FLOP count (bench/flops.py) agrees with the captioner's weights."""

import pytest

from radcap.core.config import preset
from radcap.models.merge import build_captioner


@pytest.fixture
def flops(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import flops

    return flops


def kernel(layer) -> int:
    """Weights of a layer's matrices (no biases): multiply-adds per row it maps."""
    return sum(w.numpy().size for w in layer.weights if len(w.shape) == 2)


@pytest.mark.parametrize("attention", [False, True])
def test_the_flop_count_is_twice_the_weights_each_position_and_image_meets(
    flops, attention
):
    config = preset(
        "demo", embed_dim=4, units=8, attention_units=6, attention=attention
    )
    model = build_captioner(config, vocab_size=30)
    sizes = dict(
        vocab_size=30, embed_dim=4, units=8, attention=attention, attention_units=6
    )
    regions, grid = 49, 512
    per_position = kernel(model.rnn) + kernel(model.head) + kernel(model.logits)
    per_image = kernel(model.image_proj)
    assert kernel(model.image_proj) == 4096 * 8
    if attention:
        per_position += kernel(model.bahdanau.query_dense)
        # The scores and the context are products with the regions, not weights.
        per_position += regions * 6 + regions * 8
        per_image += regions * (
            kernel(model.grid_proj) + kernel(model.bahdanau.key_dense)
        )
    assert flops.forward_flops(1, 0, **sizes) == 2 * per_position
    assert flops.forward_flops(0, 1, **sizes) == 2 * per_image
    assert flops.train_step_flops(config, 30, 5, 7) == 3 * (
        2 * per_position * 35 + 2 * per_image * 5
    )
    assert grid == model.grid_dim
