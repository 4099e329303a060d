"""Familiarity: whether an image looks like the images a run was trained on.

A captioner writes a fluent caption for any input, a photo or a blank image
included. Before a caption is believed, radcap asks how far the image lies
from the training images, in the backbone's block means: the mean of every
channel of VGG16's five pooling blocks (1,472 values, cached beside `fc2` in
the same forward pass; see `radcap.features.backbone.BLOCK_MEANS`).

1. Standardise each value by the training mean and spread.
2. Project onto the training set's first principal components (64 by
   default). There, the distance to the `k` nearest training images (the
   root of the mean squared distance, `k=5`) is cheap to compute for tens of
   thousands of reference images.
3. Measure what the projection leaves out (the residual): an image unlike
   any training image in directions the components do not span is not
   missed.

Each part is divided by its typical value among the training images (the
median of the training images' own neighbour distances, leaving each image
out, and of their residuals), and the score is the root of the sum of the
two squares: about 1.4 for a typical training image, far more for an image
unlike them. An image is familiar when its score is at most the threshold,
the 99th percentile of the validation images' scores: so about 1
validation image in 100 is flagged by design.

Why this method: a distance to the nearest training images needs no extra
model and says "unlike anything seen in training" directly; a Gaussian
(Mahalanobis) score would treat a dataset of several modalities as one blob.
Why block means and not `fc2`: the channel statistics of every block
describe what kind of image it is (its contrast, texture, colour, edges),
as in the multi-layer detectors of out-of-distribution inputs (Lee et al.,
NeurIPS 2018), while `fc2` keeps what the last layer needs and drops much
of the rest. On the demo's random backbone the difference is large: the
least unusual real photograph scores 2.6 times the threshold on block means
and 1.0 times on `fc2`. Storing the projected training images (at most
20,000, 64 floats each) keeps the reference small (about 6 MB for ROCO).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from radcap.core.files import atomic_path

DIMS = 64
NEIGHBOURS = 5
QUANTILE = 0.99
MAX_REFERENCE = 20_000
_FIT_ROWS = 5_000  # training rows the principal components are computed from


def ops():
    """`keras.ops`, imported when first needed: Keras takes seconds to import."""
    import keras

    return keras.ops


@dataclasses.dataclass
class Familiarity:
    """A run's reference of its training images, and the calibrated threshold.

    Attributes:
        mean: `(D,)` training mean of each feature.
        scale: `(D,)` training spread of each feature (floored, never 0).
        components: `(dims, D)` orthonormal principal directions.
        reference: `(M, dims)` projected training images.
        threshold: Scores above it are unfamiliar.
        neighbours: `k`, the nearest training images averaged.
        distance_scale: The training images' median neighbour distance.
        residual_scale: The training images' median squared residual.
        quantile: The validation quantile the threshold was set at.
        validation_median: The validation images' median score, for scale.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    reference: np.ndarray
    threshold: float
    neighbours: int = NEIGHBOURS
    distance_scale: float = 1.0
    residual_scale: float = 1.0
    quantile: float = QUANTILE
    validation_median: float = float("nan")

    @classmethod
    def fit(
        cls,
        train,
        validation,
        rows=None,
        dims: int = DIMS,
        neighbours: int = NEIGHBOURS,
        quantile: float = QUANTILE,
        max_reference: int = MAX_REFERENCE,
        seed: int = 0,
    ) -> Familiarity:
        """Build the reference from training features; calibrate on validation.

        Args:
            train: `(N, D)` training features (any float dtype; may be
                memory-mapped).
            validation: `(V, D)` validation features.
            rows: The rows of `train` to use (e.g. the readable images);
                default all.
            dims: Principal components kept.
            neighbours: `k` nearest training images per score.
            quantile: Validation quantile that becomes the threshold.
            max_reference: Most training images kept (a seeded sample).
            seed: Seed of the samples.
        """
        rows = np.arange(len(train)) if rows is None else np.asarray(rows)
        if len(rows) < 2 or len(validation) < 1:
            raise ValueError(
                f"Familiarity needs at least 2 training and 1 validation image, "
                f"got {len(rows)} and {len(validation)}."
            )
        rng = np.random.default_rng(seed)
        rows = np.sort(rows[rng.permutation(len(rows))[:max_reference]])
        sample = np.asarray(train[rows], np.float32)
        mean = sample.mean(0)
        std = sample.std(0)
        scale = np.maximum(std, 0.1 * float(np.median(std)) + 1e-6).astype(np.float32)
        z = (sample - mean) / scale
        fit = z[rng.permutation(len(z))[:_FIT_ROWS]]
        dims = int(min(dims, len(fit) - 1, z.shape[1]))
        _, _, vt = np.linalg.svd(fit - fit.mean(0), full_matrices=False)
        out = cls(
            mean=mean,
            scale=scale,
            components=vt[:dims].astype(np.float32),
            reference=(z @ vt[:dims].T).astype(np.float32),
            threshold=np.inf,
            neighbours=int(min(neighbours, len(sample) - 1)),
            quantile=float(quantile),
        )
        # The typical training image's two distances, each image left out of
        # its own neighbours (a sample of them is enough for a median).
        own = np.sort(rng.permutation(len(sample))[:_FIT_ROWS])
        distance, residual = out._in_chunks(out.distances, sample[own], own)
        out.distance_scale = float(np.median(distance)) or 1.0
        out.residual_scale = float(np.median(residual)) or 1.0
        scores = out.scores(validation)
        out.threshold = float(np.quantile(scores, quantile))
        out.validation_median = float(np.median(scores))
        return out

    def scores(self, features) -> np.ndarray:
        """`(N,)` familiarity scores: low is familiar (see the module docstring)."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise ValueError(
                f"features of shape {features.shape} do not fit this familiarity "
                f"reference: it takes (images, {len(self.mean)})."
            )
        return self._in_chunks(self.score, features)

    def score(self, features, exclude=None):
        """`score`'s formula in `keras.ops`, tensors in and out (the export's graph).

        Args:
            features: `(N, D)` float32 features.
            exclude: `(N,)` row of `reference` that each feature row is
                (left out of its own neighbours), or None.

        Returns:
            `(N,)` float32 scores.
        """
        distance, residual = self.distances(features, exclude)
        return ops().sqrt(
            (distance / self.distance_scale) ** 2 + residual / self.residual_scale
        )

    def distances(self, features, exclude=None):
        """`(knn distance, squared residual)` per row of `features`, in `keras.ops`.

        Args: as for `score`.
        """
        o = ops()
        z = (features - self.mean) / self.scale  # (n, D)
        p = o.matmul(z, self.components.T)  # (n, dims)
        p_sq = o.sum(p**2, axis=1)
        residual = o.maximum(o.sum(z**2, axis=1) - p_sq, 0.0)
        reference_sq = o.sum(self.reference**2, axis=1)  # (M,)
        dist = o.maximum(
            p_sq[:, None] + reference_sq[None] - 2 * o.matmul(p, self.reference.T),
            0.0,
        )  # (n, M)
        if exclude is not None:
            own = (
                o.arange(len(self.reference))[None] == o.cast(exclude, "int32")[:, None]
            )
            dist = o.where(own, np.inf, dist)
        nearest = -o.top_k(-dist, self.neighbours, sorted=False)[0]  # (n, k)
        return o.sqrt(o.mean(nearest, axis=1)), residual

    @staticmethod
    def _in_chunks(function, features, exclude=None, chunk: int = 1024):
        """`function(features, exclude)` over row chunks, as numpy arrays."""
        parts = []
        for s in range(0, len(features), chunk):
            part = exclude if exclude is None else exclude[s : s + chunk]
            parts.append(function(features[s : s + chunk], part))
        if not parts:
            return np.zeros(0, np.float32)
        if isinstance(parts[0], tuple):
            return tuple(
                np.concatenate([ops().convert_to_numpy(p[i]) for p in parts])
                for i in range(len(parts[0]))
            )
        return np.concatenate([ops().convert_to_numpy(p) for p in parts])

    def familiar(self, scores) -> np.ndarray:
        """`(N,)` bool: which scores are at most the threshold."""
        return np.asarray(scores) <= self.threshold

    def save(self, path: str | Path) -> None:
        """Write as a `.npz` file, atomically (never half-written)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Familiarity:
        """Read a file written by `save`; say clearly when it is not one."""
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {name: data[name] for name in fields & set(data.files)}
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{path} is not a readable familiarity reference ({err}); recompute "
                "it with `radcap familiarity --run <run>`."
            ) from err
        missing = fields - set(values)
        if missing:
            raise ValueError(
                f"{path} lacks {sorted(missing)}: recompute it with "
                "`radcap familiarity --run <run>`."
            )
        for name in (
            "threshold",
            "quantile",
            "validation_median",
            "distance_scale",
            "residual_scale",
        ):
            values[name] = float(values[name])
        values["neighbours"] = int(values["neighbours"])
        return cls(**values)
