"""Evidence for a caption: the training images most like the captioned image.

A caption is easier to judge beside the training images that the image
resembles most, with their captions: a caption copied from a neighbour, or
a neighbour that shows what the caption missed, is then plain to see. The
similarity is the nearest-neighbour baseline's: the cosine of the cached
`fc2` features, centred on the training mean (`baselines.most_similar`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.config import Config
from radcap.data import load
from radcap.data.layouts import load_demo
from radcap.evaluation.baselines import most_similar, training_mean
from radcap.features.backbone import LAYER
from radcap.features.cache import load_features

EVIDENCE = 3  # training images shown beside a caption


@dataclasses.dataclass
class Evidence:
    """The training images a caption can be checked against.

    Attributes:
        features: The training split's `fc2` cache `(M, 4096)`, memory-mapped.
        rows: The rows of `features` searched (readable, captioned images).
        images: Indexed by those rows, columns `image_id, path, caption`
            (the image's first caption).
        mean: `(4096,)` mean of the searched rows, to centre the cosines.
    """

    features: np.ndarray
    rows: np.ndarray
    images: pd.DataFrame
    mean: np.ndarray

    @classmethod
    def load(cls, config: Config, root: str | Path) -> Evidence:
        """The run's training images and their cached features.

        Raises:
            FileNotFoundError, ValueError, FeatureCacheError: The dataset or
                its training features are not on disk (the message says which).
        """
        cache = load_features(config, "train", LAYER, root)
        if config.source == "demo":  # read as it is: never drawn again here
            dataset = load_demo(config.dataset_dir(root))
        else:
            dataset = load(config, root)
        train = dataset.split("train").drop_duplicates("image_id")
        train = train.astype({"image_id": str}).set_index("image_id")
        skipped = set(cache.skipped["image_id"].astype(str))
        ids = [i for i in cache.ids if i in train.index and i not in skipped]
        if not ids:
            raise ValueError(
                f"none of the {len(cache.ids)} cached training images of "
                f"{config.dataset} is in the dataset's training split"
            )
        rows = cache.rows(ids)
        images = train.loc[ids, ["path", "caption"]].reset_index().set_index(rows)
        return cls(cache.array, rows, images, training_mean(cache.array, rows))

    def nearest(self, features, k: int = EVIDENCE) -> list[list[dict]]:
        """The `k` most similar training images of each `(N, 4096)` feature row.

        Returns:
            Per row, `k` dicts with `image_id`, `path`, `caption` and
            `similarity` (centred cosine), most similar first.
        """
        index, similarity = most_similar(
            self.features, features, k, rows=self.rows, mean=self.mean
        )
        out = []
        for found, sims in zip(index, similarity):
            rows = self.images.loc[found].to_dict("records")
            out.append([{**r, "similarity": float(s)} for r, s in zip(rows, sims)])
        return out
