"""The synthetic demo dataset."""

import numpy as np
import pandas as pd
import pytest

from radcap.data.demo import Case, make_demo, render


def test_caption_follows_the_case():
    assert Case("ct", "chest", True, "right", "small", "nodule").caption == (
        "axial ct of the chest shows a small nodule in the right lung"
    )
    assert Case("x-ray", "abdomen", False).caption == (
        "frontal x-ray of the abdomen shows no abnormality"
    )


def test_patient_right_is_image_left():
    # In a ct of the chest only the lesion is brighter than 230.
    for side, half in (("right", "left"), ("left", "right")):
        lesion = Case("ct", "chest", True, side, "large", "nodule")
        bright = render(lesion, np.random.default_rng(3)) > 230
        left, right = bright[:, :112].sum(), bright[:, 112:].sum()
        assert (left > 10 * right) if half == "left" else (right > 10 * left)
    assert (
        render(Case("ct", "chest", False), np.random.default_rng(3)) > 230
    ).sum() < 20


def test_deterministic_splits_and_labelled_synthetic(tmp_path):
    csv = make_demo(tmp_path / "a", n=40, seed=5)
    again = make_demo(tmp_path / "b", n=40, seed=5)
    a, b = pd.read_csv(csv), pd.read_csv(again)
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a/images/demo_00007.png").read_bytes() == (
        tmp_path / "b/images/demo_00007.png"
    ).read_bytes()
    assert a["split"].value_counts().to_dict() == {
        "train": 28,
        "validation": 6,
        "test": 6,
    }
    assert "SYNTHETIC" in (tmp_path / "a/README.txt").read_text()
    other = pd.read_csv(make_demo(tmp_path / "c", n=40, seed=6))
    assert not a["caption"].equals(other["caption"])


def test_attributes_are_independent_so_captions_need_the_image(tmp_path):
    frame = pd.read_csv(make_demo(tmp_path, n=300, seed=0))
    # Every attribute varies within each modality: the caption's head alone
    # does not fix its tail.
    lesions = frame[frame["lesion"]]
    for _, group in lesions.groupby(["modality", "region"]):
        assert group["side"].nunique() == 2
    assert frame["caption"].nunique() > 50


def test_lesion_half_share():
    from radcap.evaluation.attention import lesion_half_share

    grid = np.zeros((7, 7))
    grid[2, 1] = 1.0  # image left: the patient's right
    assert lesion_half_share(grid.ravel(), "right") == 1.0
    assert lesion_half_share(grid.ravel(), "left") == 0.0
    middle = np.zeros((7, 7))
    middle[:, 3] = 1.0  # the middle column counts half
    assert lesion_half_share(middle.ravel(), "left") == 0.5
    assert lesion_half_share(np.full(196, 1 / 196), "right") == pytest.approx(0.5)
