"""The familiarity reference on scripted features: calibration, flags, the file."""

import numpy as np
import pytest

from radcap.features.familiarity import Familiarity


def clusters(rng, n, centres, spread=1.0):
    """`n` points around the given centres, in turn."""
    picks = centres[np.arange(n) % len(centres)]
    return (picks + spread * rng.standard_normal(picks.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    dim = 200
    centres = rng.standard_normal((4, dim)) * 6  # four "modalities"
    return {
        "train": clusters(rng, 800, centres),
        "validation": clusters(rng, 400, centres),
        "test": clusters(rng, 400, centres),
        "between": (centres[:2].mean(0) + rng.standard_normal((20, dim))).astype(
            np.float32
        ),
        "far": (rng.standard_normal((20, dim)) * 6).astype(np.float32),
    }


@pytest.fixture(scope="module")
def reference(data):
    return Familiarity.fit(data["train"], data["validation"], dims=16)


def test_threshold_is_the_validation_quantile(reference, data):
    scores = reference.scores(data["validation"])
    assert reference.threshold == pytest.approx(np.quantile(scores, 0.99))
    assert (~reference.familiar(scores)).sum() == 4  # 1% of 400, by construction
    assert reference.validation_median == pytest.approx(np.median(scores))


def test_images_like_the_training_ones_pass_and_others_are_flagged(reference, data):
    assert (~reference.familiar(reference.scores(data["test"]))).mean() <= 0.03
    # Neither cluster's images: halfway between two clusters, or nowhere near.
    assert not reference.familiar(reference.scores(data["between"])).any()
    assert not reference.familiar(reference.scores(data["far"])).any()


def test_a_typical_training_image_scores_about_the_root_of_two(reference, data):
    median = np.median(reference.scores(data["validation"]))
    assert 1.0 < median < 2.0  # both parts about 1 (their training medians)


def test_the_reference_keeps_a_seeded_sample(data):
    small = Familiarity.fit(
        data["train"], data["validation"], dims=8, max_reference=100
    )
    again = Familiarity.fit(
        data["train"], data["validation"], dims=8, max_reference=100
    )
    assert small.reference.shape == (100, 8)
    np.testing.assert_array_equal(small.reference, again.reference)
    assert small.threshold == again.threshold


def test_rows_choose_the_training_images(data):
    rows = np.arange(0, 800, 4)  # only the first cluster
    one = Familiarity.fit(data["train"], data["validation"][::4], rows=rows, dims=8)
    assert len(one.reference) == 200
    others = data["test"][1::4]  # the second cluster
    assert not one.familiar(one.scores(others)).any()


def test_save_and_load_round_trip(reference, data, tmp_path):
    reference.save(tmp_path / "familiarity.npz")
    loaded = Familiarity.load(tmp_path / "familiarity.npz")
    np.testing.assert_array_equal(
        loaded.scores(data["far"]), reference.scores(data["far"])
    )
    assert loaded.threshold == reference.threshold
    assert loaded.neighbours == reference.neighbours


def test_bad_files_and_shapes_get_clear_messages(reference, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(
        ValueError, match="not a readable familiarity.*radcap familiarity"
    ):
        Familiarity.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="lacks.*components"):
        Familiarity.load(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match=r"shape \(2, 7\) do not fit.*\(images, 200\)"):
        reference.scores(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="at least 2 training and 1 validation"):
        Familiarity.fit(np.zeros((1, 5)), np.zeros((3, 5)))
