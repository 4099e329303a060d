"""Figures for the notebooks: training curves, images with captions, attention maps.

matplotlib is imported when a figure is drawn, so that importing radcap never
sets up a plotting backend.

Every function returns a `matplotlib.figure.Figure` and changes no global
matplotlib setting. The figure is closed in pyplot before it is returned, so a
notebook shows it once, as the value of the cell; elsewhere use
`fig.savefig(path)`.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.text import clean_caption
from radcap.data.dicom import DicomError, is_dicom, read_dicom
from radcap.data.images import MAX_PIXELS, load_image
from radcap.models import runs

PANEL = 3.2  # inches per image panel


def _figure(nrows: int, ncols: int, n: int, width: float, height: float):
    """A figure with `n` axes on an `nrows` x `ncols` grid (unused cells removed)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    plt.close(fig)  # the caller's notebook shows the returned figure once
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    return fig, list(axes[:n])


def _grid(n: int, ncols: int) -> tuple[int, int]:
    if n == 0:
        raise ValueError("Nothing to show: no images given.")
    ncols = max(1, min(int(ncols), n))
    return math.ceil(n / ncols), ncols


def _wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or "(empty)"


def read_image(path: str | Path, max_side: int = 512, frame="middle") -> np.ndarray:
    """An image file for display, aspect kept: `(H, W)` or `(H, W, 3)` in [0, 1].

    16-bit and float images are scaled by their own min..max range; DICOM
    files are shown with their own window (`radcap.data.dicom`; `frame` is the
    frame of a multi-frame file).

    Raises:
        OSError: The file cannot be read as an image.
    """
    from PIL import Image

    if is_dicom(path):
        try:
            pixels = read_dicom(path, frame, MAX_PIXELS)
        except DicomError as err:
            raise OSError(str(err)) from None
        img = Image.fromarray(pixels)
        img.thumbnail((max_side, max_side))
        return np.asarray(img, np.float32) / 255.0
    with Image.open(path) as img:
        img.draft(img.mode, (max_side, max_side))  # JPEGs decode at reduced size
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            img = img.convert("F")
        elif img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        img.thumbnail((max_side, max_side))
        arr = np.asarray(img, np.float32)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return arr / 255.0


def _show(ax, path, title: str, fontsize: float = 8) -> None:
    try:
        pixels = read_image(path)
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
    except OSError as err:
        ax.text(0.5, 0.5, _wrap(f"unreadable: {err}", 30), ha="center", va="center")
    ax.set_title(title, fontsize=fontsize, loc="left")
    ax.axis("off")


def plot_history(run_dir: str | Path):
    """Training and validation loss per epoch from a run's `history.csv`.

    Args:
        run_dir: A run folder made by `radcap.training.train.train`.

    Returns:
        A Figure with one axes; the best validation epoch is marked.
    """
    path = Path(run_dir) / runs.HISTORY
    if not path.is_file():
        raise FileNotFoundError(
            f"No {path}: train the run first (radcap.training.train.train or "
            "`radcap train`)."
        )
    history = pd.read_csv(path)
    if history.empty or "loss" not in history:
        raise ValueError(f"{path} holds no finished epoch yet.")
    epochs = np.arange(1, len(history) + 1)
    fig, (ax,) = _figure(1, 1, 1, 6, 3.6)
    ax.plot(epochs, history["loss"], marker=".", label="train loss")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], marker=".", label="validation loss")
        best = int(np.argmin(history["val_loss"].to_numpy()))
        ax.axvline(epochs[best], color="gray", ls=":", label=f"best epoch {best + 1}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked cross-entropy")
    ax.set_title(Path(run_dir).name)
    ax.legend()
    fig.tight_layout()
    return fig


def caption_length_histogram(captions, max_len: int | None = None, bins: int = 30):
    """Histogram of words per caption, with the model's `max_len` cut marked.

    Args:
        captions: Caption strings (counted after `clean_caption`).
        max_len: Words kept per caption; captions past the line are cut.
        bins: Most histogram bins.

    Returns:
        A Figure with one axes.
    """
    lengths = np.array([len(clean_caption(c).split()) for c in captions])
    if len(lengths) == 0:
        raise ValueError("No captions given: nothing to count.")
    fig, (ax,) = _figure(1, 1, 1, 6, 3.6)
    edges = np.arange(lengths.min(), lengths.max() + 2) - 0.5
    if len(edges) > bins + 1:
        edges = bins
    ax.hist(lengths, bins=edges, color="steelblue")
    if max_len is not None:
        cut = float((lengths > max_len).mean())
        ax.axvline(max_len, color="crimson", ls="--", label=f"max_len={max_len}")
        ax.legend(title=f"{cut:.1%} of captions are cut")
    ax.set_xlabel("words per caption")
    ax.set_ylabel("captions")
    ax.set_title(f"{len(lengths)} captions, median {np.median(lengths):g} words")
    fig.tight_layout()
    return fig


def plot_features(features, captions, groups: int = 8, words: int = 2):
    """The cached features in two dimensions (PCA), coloured by caption openings.

    Images whose captions open alike (on the demo: the view and modality,
    "axial ct", "frontal x-ray") sit together when the features carry what
    the captions say: a first look at whether a decoder can learn from them.

    Args:
        features: `(n, d)` features of n images (e.g. a `FeatureCache.array`).
        captions: One caption per row of `features`.
        groups: Colours for the most common openings; the rest are "other".
        words: Words of each caption's opening.

    Returns:
        A Figure with one axes.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(captions) or len(x) < 3:
        raise ValueError(
            f"Need (n, d) features with n >= 3 and one caption per row; got "
            f"shape {x.shape} and {len(captions)} captions."
        )
    x = x - x.mean(0)
    _, _, axes = np.linalg.svd(x, full_matrices=False)
    points = x @ axes[:2].T
    opening = pd.Series([" ".join(clean_caption(c).split()[:words]) for c in captions])
    common = opening.value_counts().index[:groups]
    opening = opening.where(opening.isin(common), "other")
    fig, (ax,) = _figure(1, 1, 1, 6, 4.4)
    for name in [*common, "other"]:
        chosen = (opening == name).to_numpy()
        if chosen.any():
            ax.scatter(*points[chosen].T, s=10, label=f"{name} ({chosen.sum()})")
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second")
    ax.set_title(f"{len(x)} images' features, by the captions' first {words} words")
    ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    return fig


def show_images(paths, captions, ncols: int = 4):
    """A grid of images, each titled with its caption.

    Args:
        paths: Image files.
        captions: One caption per image.
        ncols: Images per row.

    Returns:
        A Figure with one axes per image.
    """
    paths, captions = list(paths), list(captions)
    if len(paths) != len(captions):
        raise ValueError(f"{len(paths)} images but {len(captions)} captions.")
    nrows, ncols = _grid(len(paths), ncols)
    fig, axes = _figure(nrows, ncols, len(paths), PANEL * ncols, PANEL * 1.3 * nrows)
    for ax, path, caption in zip(axes, paths, captions):
        _show(ax, path, _wrap(caption))
    fig.tight_layout()
    return fig


def show_samples(paths, references, generated, ncols: int = 3):
    """Images with their reference and generated captions.

    Args:
        paths: Image files.
        references: Per image a reference caption, or a list of them.
        generated: Per image a generated caption, or `{label: captions}` to
            show several (e.g. greedy, beam-3, nearest neighbour).
        ncols: Images per row.

    Returns:
        A Figure with one axes per image.
    """
    paths, references = list(paths), list(references)
    if not isinstance(generated, dict):
        generated = {"generated": generated}
    generated = {k: list(v) for k, v in generated.items()}
    for name, texts in [("references", references), *generated.items()]:
        if len(texts) != len(paths):
            raise ValueError(f"{len(paths)} images but {len(texts)} {name}.")
    nrows, ncols = _grid(len(paths), ncols)
    lines = 1 + len(generated)
    fig, axes = _figure(
        nrows, ncols, len(paths), PANEL * 1.3 * ncols, (PANEL + 0.5 * lines) * nrows
    )
    for i, (ax, path) in enumerate(zip(axes, paths)):
        ref = references[i]
        ref = ref if isinstance(ref, str) else " | ".join(ref)
        text = [_wrap(f"reference: {ref}", 48)]
        text += [_wrap(f"{k}: {v[i]}", 48) for k, v in generated.items()]
        _show(ax, path, "\n".join(text), fontsize=7.5)
    fig.tight_layout()
    return fig


def plot_attention(image_path, words, attention, title: str | None = None, ncols=5):
    """Where the model looked for each word: one panel per word, map over the image.

    Args:
        image_path: The image that was captioned.
        words: The generated words (e.g. the `words` of a `CaptionResult` of
            `Captioner.describe`).
        attention: `(len(words), R)` weights over the grid regions; `R = 49`
            (7x7 `block5_pool`) or `196` (14x14 `block5_conv3`), read from
            `attention.shape[-1]`. Each map is upsampled (bilinear) to the
            backbone's square view of the image.
        title: Figure title; default the caption.
        ncols: Panels per row.

    Returns:
        A Figure with one axes per word.
    """
    from PIL import Image

    words = list(words)
    attention = np.asarray(attention, np.float32)
    if attention.ndim != 2 or len(attention) < len(words):
        raise ValueError(
            f"attention has shape {attention.shape}: expected (words, regions) with "
            f"a row for each of the {len(words)} words."
        )
    side = math.isqrt(attention.shape[-1])
    if side < 2 or side * side != attention.shape[-1]:
        raise ValueError(
            f"attention has {attention.shape[-1]} regions, not a square grid (49 for "
            "7x7, 196 for 14x14): was the model trained with attention=True?"
        )
    image = load_image(image_path) / 255.0  # (224, 224, 3), what the backbone saw
    size = image.shape[0]
    nrows, ncols = _grid(len(words), ncols)
    fig, axes = _figure(nrows, ncols, len(words), 2.4 * ncols, 2.6 * nrows)
    for ax, word, weights in zip(axes, words, attention):
        grid = Image.fromarray(weights.reshape(side, side))  # mode "F"
        upsampled = np.asarray(grid.resize((size, size), Image.Resampling.BILINEAR))
        ax.imshow(image.mean(-1), cmap="gray", vmin=0, vmax=1)
        ax.imshow(upsampled, cmap="jet", alpha=0.45)
        ax.set_title(word, fontsize=10)
        ax.axis("off")
    fig.suptitle(_wrap(title if title is not None else " ".join(words), 80))
    fig.tight_layout()
    return fig
