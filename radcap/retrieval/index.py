"""The index: every image and distinct caption of a dataset, embedded once.

A retrieval run's `index.npz` (`radcap.models.runs.INDEX`) holds the dual
encoder's unit-length embeddings of every readable image of every split and
of every distinct cleaned caption, with what a search prints beside a hit
(the image's path and its own caption, the image a caption belongs to). It
is written once, atomically, and loads in milliseconds: plain arrays, no
pickles.

A search is a matrix product of unit vectors (cosine similarity) and a
partial sort (`top_k`). On one CPU core (bench/bench_search.py) a text
query over 10,000 images takes about 4 ms, the text tower included, where
the likelihood ranking of a captioner takes seconds; the product and sort
alone take 0.2 ms at 10,000 rows and about 40 ms at a million (512 MB of
float32 rows of width 128), so a query stays under a second up to some
millions of rows, where memory ends first. Beyond that, or for many queries
a second, a real vector index (faiss: `IndexFlatIP` on the same float32
unit rows, then IVF or HNSW for approximate search) is the way on; radcap
does not need it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from radcap.core.config import SPLITS
from radcap.core.files import atomic_path

# Rows embedded per model call.
BATCH = 512


@dataclasses.dataclass
class Index:
    """Embeddings of a dataset's images and distinct captions, and what they are.

    Attributes:
        image_ids: `(N,)` str, every readable image of every split.
        paths: `(N,)` str, each image's file.
        splits: `(N,)` str, each image's split.
        image_captions: `(N,)` str, each image's first reference caption.
        images: `(N, dim)` float32 unit rows.
        captions: `(C,)` str, the distinct cleaned captions.
        caption_splits: `(C, len(SPLITS))` bool, the splits each caption
            occurs in.
        caption_images: `(C,)` str, the first image each caption belongs to.
        texts: `(C, dim)` float32 unit rows.
        model: The digest of the `best.keras` that embedded them.
    """

    image_ids: np.ndarray
    paths: np.ndarray
    splits: np.ndarray
    image_captions: np.ndarray
    images: np.ndarray
    captions: np.ndarray
    caption_splits: np.ndarray
    caption_images: np.ndarray
    texts: np.ndarray
    model: str = ""

    def save(self, path: str | Path) -> None:
        """Write the index as one `.npz`, atomically."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        arrays["model"] = np.array(self.model)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Index:
        """Read an index written by `save` (no pickles)."""
        with np.load(path, allow_pickle=False) as data:
            values = {name: data[name] for name in data.files}
        values["model"] = str(values["model"])
        return cls(**values)

    def image_rows(self, split: str | None = None) -> np.ndarray:
        """Rows of the images of `split` (all for None)."""
        return _rows(self.splits == split if split else np.ones(len(self.splits), bool))

    def caption_rows(self, split: str | None = None) -> np.ndarray:
        """Rows of the captions that occur in `split` (all for None)."""
        if split is None:
            return np.arange(len(self.captions))
        return _rows(self.caption_splits[:, SPLITS.index(split)])


def _rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best columns of every row, best first, by a partial sort.

    Args:
        scores: `(Q, N)` or `(N,)` scores.
        k: Columns per row (fewer when there are fewer).

    Returns:
        `(index, score)`: `(Q, k)` (or `(k,)`) column numbers and scores; ties
        go to the lower column.
    """
    scores = np.asarray(scores)
    single = scores.ndim == 1
    scores = np.atleast_2d(scores)
    k = min(int(k), scores.shape[1])
    # The k-th best score of each row (a partial sort), then every column
    # above it and, of those equal to it, the first ones: exactly k a row.
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # (Q, 1)
    tied = scores == kth
    need = k - (scores > kth).sum(1, keepdims=True)  # (Q, 1)
    take = (scores > kth) | (tied & (np.cumsum(tied, axis=1) <= need))
    part = np.nonzero(take)[1].reshape(len(scores), k)  # (Q, k), column order
    values = np.take_along_axis(scores, part, 1)
    order = np.argsort(-values, axis=1, kind="stable")
    index = np.take_along_axis(part, order, 1)
    values = np.take_along_axis(values, order, 1)
    return (index[0], values[0]) if single else (index, values)


def embed_features(model, features, grid=None) -> np.ndarray:
    """`(N, dim)` float32 unit rows of images from their features, in batches."""
    out = []
    for s in range(0, len(features), BATCH):
        f = np.asarray(features[s : s + BATCH], np.float32)  # (B, 4096)
        g = None if grid is None else np.asarray(grid[s : s + BATCH], np.float32)
        out.append(np.asarray(model.embed_images(f, g)))
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


def embed_tokens(model, tokens: np.ndarray) -> np.ndarray:
    """`(N, dim)` float32 unit rows of encoded captions `(N, T)`, in batches."""
    out = []
    for s in range(0, len(tokens), BATCH):
        batch = np.asarray(tokens[s : s + BATCH], np.int32)
        width = max(int((batch != 0).sum(1).max()), 1)  # no all-padding columns
        out.append(np.asarray(model.embed_texts(batch[:, :width])))
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)
