"""Plots: each returns a Figure with the expected panels, data drawn as given."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radcap import plots

matplotlib.use("Agg")


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(5):
        pixels = np.full((60, 90), 40 * i, np.uint8)  # 90 wide, 60 high
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_plot_history_draws_both_losses_and_marks_the_best_epoch(tmp_path):
    pd.DataFrame(
        {
            "epoch": range(5),
            "loss": [2.0, 1.5, 1.2, 1.0, 0.9],
            "val_loss": [2.1, 1.6, 1.4, 1.45, 1.5],
        }
    ).to_csv(tmp_path / "history.csv", index=False)
    fig = plots.plot_history(tmp_path)
    (ax,) = fig.axes
    train, val, best = ax.lines
    np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(val.get_ydata(), [2.1, 1.6, 1.4, 1.45, 1.5])
    assert best.get_label() == "best epoch 3"
    with pytest.raises(FileNotFoundError, match="train the run first"):
        plots.plot_history(tmp_path / "nothing")


def test_show_images_one_panel_per_image(images):
    fig = plots.show_images(images, [f"caption {i}" for i in range(5)], ncols=2)
    assert len(fig.axes) == 5  # a 3 x 2 grid without its empty cell
    assert [ax.get_title(loc="left") for ax in fig.axes][:2] == [
        "caption 0",
        "caption 1",
    ]
    shown = fig.axes[1].images[0].get_array()
    assert shown.shape == (60, 90)  # aspect kept
    assert shown.max() == pytest.approx(40 / 255)
    with pytest.raises(ValueError, match="5 images but 4 captions"):
        plots.show_images(images, ["a"] * 4)


def test_show_samples_shows_references_and_every_generated_caption(images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    paths = [*images[:2], broken]
    fig = plots.show_samples(
        paths,
        [["ref a", "ref b"], "ref c", "ref d"],
        {"greedy": ["gen 1", "gen 2", "gen 3"], "beam-3": ["b 1", "b 2", "b 3"]},
    )
    assert len(fig.axes) == 3
    title = fig.axes[0].get_title(loc="left")
    assert title == "reference: ref a | ref b\ngreedy: gen 1\nbeam-3: b 1"
    assert not fig.axes[2].images and "unreadable" in fig.axes[2].texts[0].get_text()
    fig = plots.show_samples(images, ["r"] * 5, ["g"] * 5, ncols=5)
    assert len(fig.axes) == 5
    assert fig.axes[4].get_title(loc="left") == "reference: r\ngenerated: g"
    with pytest.raises(ValueError, match="3 images but 2 greedy"):
        plots.show_samples(paths, ["r"] * 3, {"greedy": ["g"] * 2})


@pytest.mark.parametrize("side", [7, 14])
def test_plot_attention_one_panel_per_word_with_the_map_upsampled(images, side):
    words = ["axial", "ct", "of", "the", "chest", "shows"]
    attention = np.full((len(words), side * side), 0.1 / (side * side - 1))
    attention[:, 0] = 0.9  # everything on the top-left region
    fig = plots.plot_attention(images[1], words, attention, title="a title")
    assert len(fig.axes) == len(words)
    assert [ax.get_title() for ax in fig.axes] == words
    assert fig.get_suptitle() == "a title"
    background, overlay = fig.axes[0].images
    heat = np.asarray(overlay.get_array())
    assert background.get_array().shape == heat.shape == (224, 224)
    cell = 224 // side
    assert heat[: cell // 2, : cell // 2].min() > heat[cell * 2 :, cell * 2 :].max()


def test_plot_attention_refuses_a_model_without_attention(images):
    with pytest.raises(ValueError, match="1 regions.*attention=True"):
        plots.plot_attention(images[0], ["a", "b"], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="a row for each of the 3 words"):
        plots.plot_attention(images[0], ["a", "b", "c"], np.zeros((2, 49)))


def test_caption_length_histogram_by_hand():
    captions = ["a b", "a b c d", "a", "a, b, c, d, e, f."]  # 2, 4, 1, 6 words
    fig = plots.caption_length_histogram(captions, max_len=3)
    (ax,) = fig.axes
    assert sum(patch.get_height() for patch in ax.patches) == 4
    assert ax.get_legend().get_title().get_text() == "50.0% of captions are cut"
    assert ax.get_title() == "4 captions, median 3 words"


def test_read_image_scales_16_bit_by_its_range(tmp_path):
    pixels = np.array([[1000, 3000], [2000, 5000]], np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    np.testing.assert_allclose(
        plots.read_image(tmp_path / "deep.png"), [[0, 0.5], [0.25, 1]]
    )


def test_plot_features_separates_what_the_captions_tell_apart():
    rng = np.random.default_rng(0)
    # Two groups 10 apart along one direction, noise 0.1 elsewhere.
    direction = rng.normal(size=64)
    direction /= np.linalg.norm(direction)
    a = rng.normal(scale=0.1, size=(20, 64)) + 5 * direction
    b = rng.normal(scale=0.1, size=(10, 64)) - 5 * direction
    captions = ["axial ct of the chest"] * 20 + ["frontal x-ray of the hand"] * 9
    captions += ["one rare caption"]
    fig = plots.plot_features(np.vstack([a, b]), captions, groups=2)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["axial ct (20)", "frontal x-ray (9)", "other (1)"]
    # The first component holds the groups apart: every point of one on one side.
    first = [c.get_offsets()[:, 0] for c in ax.collections]
    assert max(first[0]) < min(first[1]) or min(first[0]) > max(first[1])
    with pytest.raises(ValueError, match="one caption per row"):
        plots.plot_features(a, captions)
