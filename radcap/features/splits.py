"""One split, joined: its readable images, their cached features and their captions.

Training, evaluation and the demo analyses all need the same join of the
manifest with the feature caches: which images of a split have features,
which were unreadable (and why), and the captions of the rest. It is written
once, here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.config import Config
from radcap.data import Dataset
from radcap.features.backbone import BLOCK_MEANS, LAYER
from radcap.features.cache import extract


@dataclasses.dataclass
class Split:
    """The usable part of one split.

    Attributes:
        name: The split (`"train"`, `"validation"` or `"test"`).
        captions: One row per caption of a readable image, columns
            `image_id, caption`, in manifest order.
        image_ids: The readable images with a caption, first seen first
            (the cache's row order).
        rows: `(len(image_ids),)` int64, each image's row in `features`.
        features: The split's whole `fc2` cache `(N, 4096)` float16, memory-mapped.
        grid: The split's grid cache `(N, R, 512)` for attention, else None.
        skipped: Images left out because their file could not be read,
            columns `image_id, path, reason`.
        block_means: The split's block-means cache `(N, 1472)` (for
            `radcap.features.familiarity`), memory-mapped; None when not loaded.
    """

    name: str
    captions: pd.DataFrame
    image_ids: list[str]
    rows: np.ndarray
    features: np.ndarray
    grid: np.ndarray | None
    skipped: pd.DataFrame
    block_means: np.ndarray | None = None

    def references(self) -> dict[str, list[str]]:
        """`{image_id: [caption, ...]}` for every image of `image_ids`."""
        out: dict[str, list[str]] = {i: [] for i in self.image_ids}
        for image_id, caption in zip(
            self.captions["image_id"], self.captions["caption"]
        ):
            out[image_id].append(caption)
        return out

    def caption_rows(self) -> np.ndarray:
        """`(len(captions),)` int64: the feature row of every caption's image."""
        index = dict(zip(self.image_ids, self.rows))
        return np.array([index[i] for i in self.captions["image_id"]], np.int64)

    def image_features(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The features (and grid) of `image_ids`, in that order, in memory."""
        grid = None if self.grid is None else np.asarray(self.grid[self.rows])
        return np.asarray(self.features[self.rows]), grid

    def image_block_means(self) -> np.ndarray:
        """The block means of `image_ids`, in that order, in memory."""
        return np.asarray(self.block_means[self.rows])


def load_split(
    config: Config,
    dataset: Dataset,
    split: str,
    root: str | Path = ".",
    extractor=None,
) -> Split:
    """Join one split of the manifest with its feature caches, extracting if needed.

    Args:
        config: The run's config (which caches: `dataset`, `weights`,
            `attention`, `grid_layer`).
        dataset: The loaded manifest.
        split: Split name.
        root: Folder that the config's relative paths start from.
        extractor: A ready `radcap.features.backbone.Extractor`, to share between
            splits; one is built only when a cache is missing.

    Returns:
        The `Split`.
    """
    cached = extract(config, dataset.images(split), split, root, extractor=extractor)
    fc2 = cached[LAYER]
    failed = set(fc2.skipped["image_id"].astype(str))
    captions = dataset.split(split)[["image_id", "caption"]]
    captions = captions[~captions["image_id"].astype(str).isin(failed)]
    captions = captions.astype({"image_id": str}).reset_index(drop=True)
    wanted = set(captions["image_id"])
    image_ids = [i for i in fc2.ids if i in wanted]
    return Split(
        name=split,
        captions=captions,
        image_ids=image_ids,
        rows=fc2.rows(image_ids),
        features=fc2.array,
        grid=cached[config.grid_layer].array if config.uses_grid else None,
        skipped=fc2.skipped,
        block_means=cached[BLOCK_MEANS].array,
    )
