"""The backbone's batches: a short batch is padded to a power of two, no further."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from tiny_run import tiny_backbone

from radcap.core.config import preset
from radcap.features import backbone


@pytest.mark.parametrize(
    "n, size", [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (17, 32), (32, 32), (40, 32)]
)
def test_a_short_batch_is_padded_to_the_next_power_of_two(n, size):
    assert backbone.padded_size(n, 32) == size


def test_three_images_run_the_backbone_on_four_and_keep_their_features(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(backbone, "build_backbone", tiny_backbone)
    extractor = backbone.Extractor(preset("demo", extract_batch_size=32))
    seen = []
    forward = extractor.forward

    def recording(batch):
        seen.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(extractor, "forward", recording)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((32, 32), 60 * i + 20, np.uint8)).save(paths[-1])
    got = []
    extractor.run(paths, lambda start, outputs, errors: got.append(outputs))
    assert seen == [4]
    with ThreadPoolExecutor(1) as pool:
        last, _ = extractor.read_batch(paths[2:], pool)
    alone = forward(last)  # the third image in a batch of its own
    for batch_output, single in zip(got[0], alone):
        assert batch_output.shape[0] == 3
        np.testing.assert_allclose(batch_output[2:], single, rtol=1e-5, atol=1e-6)
