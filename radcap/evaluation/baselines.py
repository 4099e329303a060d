"""What a captioner has to beat, and what it says about images that show nothing.

- **Baselines**, scored on the same images with the same metrics: the most
  frequent training caption for every image (`frequency`), and the caption of
  the most similar training image by cosine similarity of the cached fc2
  features (`nearest_neighbour`; Kougia et al. 2019 found it beats many
  published medical captioners). When a retrieval run of the same features
  sits beside the captioner's run (`radcap retrieval`), also `retrieval`:
  the training caption its dual encoder ranks first for each image.
- **Controls**: the captions the model writes for an all-black, an all-white and
  a noise image. A model that reports a lesion in a blank image is not looking.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
from PIL import Image

from radcap.core.files import atomic_path
from radcap.core.text import clean_caption
from radcap.features.backbone import IMAGE_SIZE
from radcap.features.splits import Split
from radcap.models import runs
from radcap.retrieval.retriever import Retriever

CONTROLS = ("black", "white", "noise")
# The baselines every evaluation has (`retrieval` joins them when it can).
BASELINES = ("frequency", "nearest_neighbour")


def most_frequent_caption(captions) -> str:
    """The commonest caption (after `clean_caption`); ties go to the first seen."""
    counts = collections.Counter(clean_caption(c) for c in captions)
    if not counts:
        raise ValueError("No training captions: the frequency baseline needs some.")
    return counts.most_common(1)[0][0]


def training_mean(train_features, rows=None, chunk: int = 4096) -> np.ndarray:
    """`(dim,)` float32 mean of the training rows, summed `chunk` rows at a time.

    Args:
        train_features: `(M, dim)` training features (may be memory-mapped).
        rows: The rows to average; default all.
        chunk: Rows read at a time.
    """
    rows = np.arange(len(train_features)) if rows is None else np.asarray(rows)
    total = np.zeros(train_features.shape[-1], np.float64)
    for s in range(0, len(rows), chunk):
        total += np.asarray(train_features[rows[s : s + chunk]], np.float64).sum(0)
    return (total / max(len(rows), 1)).astype(np.float32)


def unit_rows(x, mean) -> np.ndarray:
    """Rows of `x` less `mean`, scaled to length 1 (float32)."""
    x = np.asarray(x, np.float32) - mean
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(
    train_features, features, rows=None, center: bool = True, chunk: int = 4096
) -> np.ndarray:
    """Row of the most similar training image for every query row, by cosine.

    Similarities come from matrix products of unit-length rows, `chunk`
    training rows at a time (the training array may be memory-mapped), so
    memory stays at `len(features) * chunk` floats. Ties go to the row that
    comes first in `rows`.

    Args:
        train_features: `(M, dim)` training features, any float dtype.
        features: `(N, dim)` query features.
        rows: Training rows to search (e.g. those with a readable image);
            default all.
        center: Subtract the mean of the searched training rows first. A
            direction that every image shares (strong in the features of a
            random-weights backbone) would otherwise put all cosines near 1.
        chunk: Training rows per matrix product.

    Returns:
        `(N,)` int64 row numbers into `train_features`.
    """
    rows = np.arange(len(train_features)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise ValueError(
            "No training features: the nearest-neighbour baseline needs some."
        )
    mean = training_mean(train_features, rows, chunk) if center else np.float32(0.0)
    queries = unit_rows(features, mean)  # (N, dim)
    best = np.full(len(queries), -np.inf, np.float32)
    index = np.zeros(len(queries), np.int64)
    for s in range(0, len(rows), chunk):
        block = rows[s : s + chunk]
        sims = queries @ unit_rows(train_features[block], mean).T  # (N, chunk)
        j = np.argmax(sims, axis=1)  # (N,)
        top = sims[np.arange(len(queries)), j]
        better = top > best
        best[better], index[better] = top[better], block[j[better]]
    return index


def most_similar(
    train_features, features, k: int = 3, rows=None, mean=None, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar training rows for every query row, best first.

    The same cosine as `nearest_neighbours` (centred on the training mean),
    for showing the training images behind a caption. Ties go to the row
    that comes first in `rows`.

    Args:
        train_features: `(M, dim)` training features, any float dtype.
        features: `(N, dim)` query features.
        k: Rows per query (fewer when fewer rows are searched).
        rows: Training rows to search; default all.
        mean: `(dim,)` mean to centre on, from `training_mean` (computed
            here when None; pass it to search the same rows again cheaply).
        chunk: Training rows per matrix product.

    Returns:
        `(index, similarity)`: `(N, k)` int64 rows into `train_features` and
        their `(N, k)` float32 cosines.
    """
    rows = np.arange(len(train_features)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise ValueError("No training features to compare with.")
    mean = training_mean(train_features, rows, chunk) if mean is None else mean
    queries = unit_rows(features, mean)  # (N, dim)
    best = np.zeros((len(queries), 0), np.float32)
    index = np.zeros((len(queries), 0), np.int64)
    for s in range(0, len(rows), chunk):
        block = rows[s : s + chunk]
        sims = np.concatenate(
            [best, queries @ unit_rows(train_features[block], mean).T], axis=1
        )  # (N, kept + chunk)
        found = np.concatenate(
            [index, np.broadcast_to(block, (len(queries), len(block)))], axis=1
        )
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (N, k)
        best = np.take_along_axis(sims, order, 1)
        index = np.take_along_axis(found, order, 1)
    return index, best


def retrieval_run(run_dir) -> tuple[Path | None, str]:
    """The retrieval run beside `run_dir` for the `retrieval` baseline, and a
    note for the metrics: its name, or why there is none."""
    found = runs.finished_runs(run_dir, retrieval=True) if run_dir else []
    if found:
        return found[0], found[0].name
    return None, (
        "absent: no finished retrieval run of the same features beside this run "
        "(`radcap retrieval` with the run's preset makes one)"
    )


def baseline_captions(train: Split, features, run_dir=None, grid=None) -> dict:
    """The baselines' captions for the query images.

    Args:
        train: The training split (`radcap.features.splits.load_split`); only its
            readable images are searched.
        features: `(N, 4096)` fc2 features of the images to caption.
        run_dir: The captioner's run folder, whose sibling retrieval run
            (`retrieval_run`) gives the `retrieval` baseline; None for none.
        grid: `(N, R, 512)` grid features, for a retrieval run that reads them.

    Returns:
        `{"frequency": [caption] * N, "nearest_neighbour": [caption, ...]}`
        (the nearest training image's first caption), and `"retrieval"`:
        the training caption the retrieval run ranks first, when there is one.
    """
    references = train.references()
    if not train.image_ids:
        raise ValueError(
            "None of the cached training images has a caption: the baselines need "
            "the training split (check the dataset's skip report)."
        )
    frequent = most_frequent_caption(train.captions["caption"])
    nearest = nearest_neighbours(train.features, features, train.rows)
    by_row = dict(zip(train.rows.tolist(), train.image_ids))
    captions = [references[by_row[int(j)]][0] for j in nearest]
    out = {"frequency": [frequent] * len(features), "nearest_neighbour": captions}
    found, _ = retrieval_run(run_dir)
    if found is not None:
        retriever = Retriever.load(found)
        if grid is not None or not retriever.model.uses_grid:
            out["retrieval"] = retriever.caption_features(features, grid)
    return out


def control_images(folder: str | Path, size: int = IMAGE_SIZE, seed: int = 0) -> dict:
    """Write the control images as PNGs: all black, all white, uniform noise.

    Args:
        folder: Where to write `black.png`, `white.png`, `noise.png` (made if needed).
        size: Side in pixels.
        seed: Seed of the noise.

    Returns:
        `{name: path}` in `CONTROLS` order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = {
        "black": np.zeros((size, size), np.uint8),
        "white": np.full((size, size), 255, np.uint8),
        "noise": np.random.default_rng(seed).integers(0, 256, (size, size), np.uint8),
    }
    paths = {}
    for name in CONTROLS:
        paths[name] = folder / f"{name}.png"
        with atomic_path(paths[name]) as tmp:
            Image.fromarray(pixels[name]).save(tmp, format="PNG")  # 8-bit grayscale
    return paths


def caption_controls(captioner, folder: str | Path, beam: int = 1) -> dict:
    """Caption the control images with a trained captioner, through its backbone.

    Args:
        captioner: A `radcap.decoding.captioner.Captioner`.
        folder: Where the control PNGs are written.
        beam: Beam width; 1 is greedy.

    Returns:
        `{"black": caption, "white": caption, "noise": caption}`.
    """
    paths = control_images(folder, seed=captioner.config.seed)
    texts = captioner.caption(list(paths.values()), beam=beam)
    return dict(zip(paths, texts))
