"""The synthetic demo dataset."""

import numpy as np
import pandas as pd
import pytest

from radcap.data.demo import (
    Case,
    finding_sides,
    is_held_out,
    make_demo,
    read_cases,
    render,
)


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


def test_hard_caption_names_both_findings_in_reading_order():
    case = Case(
        "ct", "chest", True, "right", "small", "nodule", 2, "left", "large", "cyst"
    )
    assert case.caption == (
        "axial ct of the chest shows a small nodule in the upper right lung "
        "and a large cyst in the lower left lung"
    )
    assert finding_sides(case) == ["right", "left"]
    assert finding_sides(Case("ct", "chest", True, "left")) == ["left"]
    assert finding_sides(Case("ct", "chest", False)) == []
    assert not case.held_out
    held = Case(
        "mri", "brain", True, "left", "small", "cyst", 2, "left", "large", "nodule"
    )
    assert held.held_out


def test_hard_drawing_puts_each_lesion_in_its_quadrant():
    # Upper right nodule (image upper left) and lower left nodule (image lower right).
    case = Case(
        "ct", "chest", True, "right", "large", "nodule", 2, "left", "large", "nodule"
    )
    bright = render(case, np.random.default_rng(3)) > 230
    quadrants = {
        "upper image-left": bright[:112, :112].sum(),
        "upper image-right": bright[:112, 112:].sum(),
        "lower image-left": bright[112:, :112].sum(),
        "lower image-right": bright[112:, 112:].sum(),
    }
    assert quadrants["upper image-left"] > 300 and quadrants["lower image-right"] > 300
    assert quadrants["upper image-right"] < 20 and quadrants["lower image-left"] < 20


def test_hard_demo_holds_pairings_out_of_training(tmp_path):
    frame = read_cases(make_demo(tmp_path, n=200, seed=0, findings=2).parent)
    held = np.array([is_held_out(row) for _, row in frame.iterrows()])
    assert held.sum() > 10
    assert set(frame.loc[held, "split"]) == {"test"}
    assert (frame.loc[~held, "split"] == "test").any()  # test has the usual share too
    assert frame["lesion"].all() and (frame["findings"] == 2).all()
    # Upper and lower sides vary independently within each region.
    assert len(frame.groupby(["region", "side", "side_2"])) == 12
    # Asking for the one-finding demo in a hard folder makes it again.
    assert make_demo(tmp_path, n=200, seed=0, findings=1)
    assert (read_cases(tmp_path)["findings"] == 1).all()  # regenerated, not kept


def test_side_shares_pair_the_kth_side_word_with_the_kth_lesion():
    from types import SimpleNamespace

    from radcap.core.text import Vocabulary
    from radcap.decoding.search import Result
    from radcap.evaluation.attention import side_shares

    vocab = Vocabulary(["a", "left", "right", "and"], max_len=10)
    ids = {w: vocab.encode(w)[1] for w in ("a", "left", "right", "and")}
    image_left, image_right = np.zeros((7, 7)), np.zeros((7, 7))
    image_left[:, 0] = 1.0  # the patient's right
    image_right[:, 6] = 1.0  # the patient's left
    flat = lambda g: g.ravel()  # noqa: E731
    # Image 1 (two lesions, upper right then lower left): "right and left",
    # looking at the right place for "right", at the wrong one for "left".
    # Image 2 (no lesion): its side word is not counted.
    tokens = [
        [ids["right"], ids["and"], ids["left"], vocab.end_id],
        [ids["a"], ids["left"], vocab.end_id],
    ]
    attention = [
        np.stack(
            [flat(image_left), flat(image_left), flat(image_left), flat(image_left)]
        ),
        np.stack([flat(image_left)] * 3),
    ]
    captioner = SimpleNamespace(
        vocab=vocab,
        search=lambda *a, **k: Result(tokens, np.zeros(2), attention),
    )
    part = SimpleNamespace(
        image_ids=["one", "two"], image_features=lambda: (np.zeros((2, 1)), None)
    )
    cases = pd.DataFrame(
        [
            vars(
                Case(
                    "ct",
                    "chest",
                    True,
                    "right",
                    "small",
                    "cyst",
                    2,
                    "left",
                    "large",
                    "cyst",
                )
            ),
            vars(Case("ct", "chest", False)),
        ],
        index=["one", "two"],
    )
    shares = side_shares(captioner, part, cases)
    assert shares == {
        "words": 2,
        "mean_share": 0.5,
        "median_share": 0.5,
        "share_above_half": 0.5,
    }
