"""The feature cache: backbone outputs extracted once per image, kept on disk.

A cache folder holds one backbone layer for one dataset:

```
features/<dataset>/vgg16-fc2/          test.npy  (N, 4096) float16
                                       test.ids  one image_id per line
                                       test.skipped.csv  unreadable images, reasons
                                       meta.json  backbone, weights, layer, size
features/<dataset>/vgg16-block5_pool/  test.npy  (N, 49, 512) float16 (grid)
```

The grid is cached for attention and the transformer decoder.

Extraction writes whole batches into `<split>.partial.npy` and records its
progress after each, so an interrupted run continues where it stopped and
ends with the same array as an uninterrupted one. Disk cost per image: fc2
8 KB; `block5_pool` (7x7x512) 49 KB; `block5_conv3` (14x14x512) 196 KB,
about 16 GB for ROCO's ~81k images.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from radcap import __version__
from radcap.core.clock import timed
from radcap.core.config import Config
from radcap.core.files import (
    DiskFullError,
    atomic_path,
    check_free_space,
    disk_full_message,
    folder_lock,
    read_json,
    write_json,
    write_text,
)
from radcap.data import SKIP_COLUMNS, pixels
from radcap.data.images import RETRY_NOTE
from radcap.features.backbone import (
    BACKBONE,
    FEATURE_SHAPES,
    IMAGE_SIZE,
    LAYER,
    Extractor,
    layers_for,
    shared_extractor,
)


class FeatureCacheError(RuntimeError):
    """A feature cache that cannot be used as asked (other settings, other images)."""


def cache_dir(config: Config, layer: str, root: str | Path = ".") -> Path:
    """`features_dir/<dataset>/<backbone>-<layer>`."""
    return Path(root) / config.features_dir / config.dataset / f"{BACKBONE}-{layer}"


def cache_meta(config: Config, layer: str) -> dict:
    """What a cache must agree on to be reused."""
    weights = config.weights
    if weights is None:
        # Random weights are drawn by Keras: another version may draw others.
        weights = f"random(seed={config.seed}, keras={metadata.version('keras')})"
    elif weights != "imagenet":
        weights = str(Path(weights).resolve())
    return {
        "backbone": BACKBONE,
        "weights": weights,
        "layer": layer,
        "image_size": IMAGE_SIZE,
        # Pixels of other decoding or resizing are never mixed with these: a
        # cache made before `radcap.data.pixels` (Pillow's resize) is stale.
        "pixels": pixels.VERSION,
        "shape": list(FEATURE_SHAPES[layer]),
        "radcap_version": __version__,
        # Only when not the default, so that caches made before it stay usable.
        **(
            {}
            if config.dicom_frame == "middle"
            else {"dicom_frame": config.dicom_frame}
        ),
    }


@dataclasses.dataclass
class FeatureCache:
    """One cached split: `array[i]` holds the features of `ids[i]`.

    Attributes:
        array: `(N, 4096)` or `(N, regions, 512)` float16, memory-mapped.
        ids: Image ids in row order.
        skipped: Images whose file could not be read: image_id, path, reason.
    """

    array: np.ndarray
    ids: list[str]
    skipped: pd.DataFrame

    def __post_init__(self):
        self.index = {image_id: i for i, image_id in enumerate(self.ids)}

    def rows(self, image_ids) -> np.ndarray:
        """Row numbers of `image_ids` (int64)."""
        return np.array([self.index[i] for i in image_ids], np.int64)


def _check_meta(folder: Path, meta: dict) -> None:
    path = folder / "meta.json"
    if not path.exists():
        return
    found = read_json(path, "feature cache settings")
    diff = {
        k: (found.get(k), v)
        for k, v in meta.items()
        if k != "radcap_version" and found.get(k) != v
    }
    if diff:
        lines = ", ".join(
            f"{k}: cache has {a!r}, asked for {b!r}" for k, (a, b) in diff.items()
        )
        raise FeatureCacheError(
            f"The feature cache in {folder} was made with other settings ({lines}). "
            "It is never mixed with new features: delete that folder to re-extract, "
            "or point Config.features_dir somewhere else."
        )


def _check_ids(cached: dict, ids: list[str], split: str, folders: dict) -> None:
    """Refuse caches that lack asked-for images, or whose layers disagree on rows."""
    first, *others = cached
    where = " and ".join(str(folders[layer]) for layer in cached)
    missing = set(ids) - set(cached[first].index)
    if missing:
        raise FeatureCacheError(
            f"The {split} cache in {folders[first]} lacks {len(missing)} of the "
            f"{len(ids)} images asked for (e.g. {sorted(missing)[:3]}): the dataset "
            f"changed since extraction. Delete {where} to extract again."
        )
    for layer in others:
        if cached[layer].ids != cached[first].ids:
            raise FeatureCacheError(
                f"The {split} caches of {first} and {layer} list different images "
                f"(one was extracted again without the other). Delete {where} to "
                "extract both again in one pass."
            )


def is_cached(config: Config, split: str, root: str | Path = ".") -> bool:
    """Whether every layer the config needs is cached for `split`."""
    return all(
        (cache_dir(config, layer, root) / f"{split}.npy").exists()
        for layer in layers_for(config)
    )


def load_features(
    config: Config, split: str, layer: str | None = None, root: str | Path = "."
) -> FeatureCache:
    """Open a finished cache for one split (memory-mapped, nothing copied)."""
    folder = cache_dir(config, layer or LAYER, root)
    _check_meta(folder, cache_meta(config, layer or LAYER))
    npy = folder / f"{split}.npy"
    if not npy.exists():
        raise FeatureCacheError(
            f"No {layer or LAYER} features for split {split!r} in {folder}: "
            "run `radcap extract` (or radcap.features.cache.extract) first."
        )
    ids = (folder / f"{split}.ids").read_text().splitlines()
    skipped_path = folder / f"{split}.skipped.csv"
    skipped = (
        pd.read_csv(skipped_path, dtype=str)
        if skipped_path.exists()
        else pd.DataFrame(columns=["image_id", "path", "reason"])
    )
    return FeatureCache(np.load(npy, mmap_mode="r"), ids, skipped)


@timed("extract")
def extract(
    config: Config,
    images: pd.DataFrame,
    split: str,
    root: str | Path = ".",
    max_batches: int | None = None,
    extractor: Extractor | None = None,
):
    """Extract and cache the features of one split's images, resuming if interrupted.

    Args:
        config: Run configuration; `layers_for(config)` are cached together.
        images: One row per image with columns `image_id` and `path`.
        split: Split name, used for the file names.
        root: Folder that `config.features_dir` is relative to.
        max_batches: Stop after this many batches (leaving a resumable
            partial cache); `None` runs to the end.
        extractor: A ready `Extractor` to reuse across splits.

    Returns:
        `{layer: FeatureCache}` when finished, `None` when stopped by `max_batches`.

    Raises:
        FeatureCacheError: A cache exists with other settings or other images.
    """
    layers = layers_for(config)
    folders = {layer: cache_dir(config, layer, root) for layer in layers}
    ids = [str(i) for i in images["image_id"]]
    paths = [str(p) for p in images["path"]]
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"Split {split!r} lists some image_id twice; pass one row per image."
        )
    for layer, folder in folders.items():
        _check_meta(folder, cache_meta(config, layer))

    if is_cached(config, split, root):
        return _finished(config, split, root, ids, folders, extractor)
    with folder_lock(folders[LAYER], "feature cache"):
        if is_cached(config, split, root):  # another process just finished it
            return _finished(config, split, root, ids, folders, extractor)
        return _extract(
            config, split, root, ids, paths, folders, max_batches, extractor
        )


def _finished(config, split, root, ids, folders, extractor) -> dict:
    """A finished cache, with images that failed for a passing reason read again."""
    result = {layer: load_features(config, split, layer, root) for layer in folders}
    _check_ids(result, ids, split, folders)
    if result[LAYER].skipped["reason"].str.endswith(RETRY_NOTE).any():
        with folder_lock(folders[LAYER], "feature cache"):
            _retry(config, split, root, folders, extractor)
        result = {layer: load_features(config, split, layer, root) for layer in folders}
    return result


def _retry(config, split, root, folders, extractor) -> None:
    """Read again the images skipped for a passing reason (permissions, I/O)."""
    first = load_features(config, split, LAYER, root)
    skipped = first.skipped
    again = skipped[skipped["reason"].str.endswith(RETRY_NOTE)]
    rows = first.rows(again["image_id"])
    arrays = {
        layer: np.load(folder / f"{split}.npy", mmap_mode="r+")
        for layer, folder in folders.items()
    }
    still = {}

    def on_batch(start, outputs, errors):
        for layer, out in zip(folders, outputs):
            arrays[layer][rows[start : start + len(out)]] = out.astype(np.float16)
        still.update({start + i: reason for i, reason in errors.items()})

    extractor = extractor or shared_extractor(config, list(folders))
    extractor.run(
        again["path"].tolist(),
        on_batch,
        desc=f"{split} retry",
        frame=config.dicom_frame,
    )
    for array in arrays.values():
        array.flush()
    kept = skipped.drop(index=again.index)
    again = again.iloc[sorted(still)].assign(reason=[still[i] for i in sorted(still)])
    _write_skipped(folders, split, pd.concat([kept, again], ignore_index=True))


def _write_skipped(folders: dict, split: str, skipped: pd.DataFrame) -> None:
    for folder in folders.values():
        with atomic_path(folder / f"{split}.skipped.csv") as tmp:
            skipped.to_csv(tmp, index=False)


def _extract(config, split, root, ids, paths, folders, max_batches, extractor):
    """Extraction proper, under the cache's lock (see `extract`)."""
    layers = list(folders)
    for layer, folder in folders.items():
        write_json(folder / "meta.json", cache_meta(config, layer))

    progress_path = folders[LAYER] / f"{split}.progress.json"
    progress = {"ids": ids, "done": 0, "skipped": []}
    if progress_path.exists():
        try:
            saved = read_json(progress_path, "extraction progress note")
        except ValueError:
            saved = {}  # damaged: start the split over
        if saved.get("ids") == ids and all(
            (f / f"{split}.partial.npy").exists() for f in folders.values()
        ):
            progress = saved
    if not progress["done"]:
        needed = sum(
            len(ids) * int(np.prod(FEATURE_SHAPES[layer])) * 2 for layer in layers
        )
        check_free_space(
            folders[LAYER], int(needed * 1.02) + 1_000_000, f"the {split} features"
        )
    partial = {
        layer: _PartialArray(
            folder / f"{split}.partial.npy",
            (len(ids), *FEATURE_SHAPES[layer]),
            fresh=not progress["done"],
        )
        for layer, folder in folders.items()
    }

    def on_batch(start, outputs, errors):
        for layer, out in zip(layers, outputs):
            partial[layer].write(start, out)
        for i, reason in sorted(errors.items()):
            progress["skipped"].append([ids[start + i], paths[start + i], reason])
        progress["done"] = start + len(outputs[0])
        write_json(progress_path, progress)

    if progress["done"] < len(ids):
        extractor = extractor or shared_extractor(config, layers)
        extractor.run(
            paths,
            on_batch,
            start=progress["done"],
            max_batches=max_batches,
            desc=f"{split} features",
            frame=config.dicom_frame,
        )
    for array in partial.values():
        array.close()
    if progress["done"] < len(ids):
        return None
    skipped = pd.DataFrame(progress["skipped"], columns=SKIP_COLUMNS)
    _write_skipped(folders, split, skipped)
    for folder in folders.values():
        write_text(folder / f"{split}.ids", "".join(f"{i}\n" for i in ids))
    # The .npy files last: their presence is what "cached" means.
    for folder in folders.values():
        os.replace(folder / f"{split}.partial.npy", folder / f"{split}.npy")
    progress_path.unlink(missing_ok=True)
    return {layer: load_features(config, split, layer, root) for layer in layers}


class _PartialArray:
    """An `.npy` file filled batch by batch with plain writes.

    Plain writes, not a memory map: on a full disk a write to a memory map
    kills the process with SIGBUS, while a plain write raises an error that
    radcap turns into a clear message.
    """

    def __init__(self, path: Path, shape: tuple, fresh: bool):
        if fresh or not path.exists():
            header = np.lib.format.open_memmap(path, "w+", np.float16, shape)
            del header  # a sparse file: the header now, the data as it comes
        array = np.load(path, mmap_mode="r")
        self.offset, self.row_bytes = (
            array.offset,
            array[0:1].nbytes if len(array) else 0,
        )
        del array
        self.path = path
        self.file = open(path, "r+b")  # noqa: SIM115  (closed in `close`)

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, np.float16).tobytes()
        try:
            self.file.seek(self.offset + start * self.row_bytes)
            self.file.write(data)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DiskFullError(
                    errno.ENOSPC, disk_full_message(self.path)
                ) from None
            raise

    def close(self) -> None:
        self.file.close()
