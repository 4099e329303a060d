"""Frozen VGG16 features, extracted once per image and cached on disk.

A cache folder holds one backbone layer for one dataset:

```
features/<dataset>/vgg16-fc2/          test.npy  (N, 4096) float16
                                       test.ids  one image_id per line
                                       test.skipped.csv  unreadable images, reasons
                                       meta.json  backbone, weights, layer, size
features/<dataset>/vgg16-block5_pool/  test.npy  (N, 49, 512) float16, for attention
```

`fc2` and the attention grid come out of the same forward pass, so each image
is read and run through VGG16 once. Extraction writes whole batches into
`<split>.partial.npy` and records its progress after each, so an interrupted
run continues where it stopped and ends with the same array as an
uninterrupted one. Disk cost per image: fc2 8 KB; `block5_pool` (7x7x512)
49 KB; `block5_conv3` (14x14x512) 196 KB, about 16 GB for ROCO's ~81k images.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radcap import __version__
from radcap.config import Config
from radcap.images import ImageError, load_image

GRID_SHAPES = {"block5_pool": (49, 512), "block5_conv3": (196, 512)}
FEATURE_SHAPES = {"fc2": (4096,), **GRID_SHAPES}
# ImageNet channel means of VGG16's "caffe" preprocessing, in BGR order.
_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


class FeatureCacheError(RuntimeError):
    """A feature cache that cannot be used as asked (other settings, other images)."""


class WeightsError(RuntimeError):
    """The backbone's weights could not be loaded."""


def cache_dir(config: Config, layer: str, root: str | Path = ".") -> Path:
    """`features_dir/<dataset>/<backbone>-<layer>`."""
    return (
        Path(root) / config.features_dir / config.dataset / f"{config.backbone}-{layer}"
    )


def cache_meta(config: Config, layer: str) -> dict:
    """What a cache must agree on to be reused."""
    weights = config.weights
    if weights is None:
        # Random weights are drawn by Keras: another version may draw others.
        weights = f"random(seed={config.seed}, keras={metadata.version('keras')})"
    elif weights != "imagenet":
        weights = str(Path(weights).resolve())
    return {
        "backbone": config.backbone,
        "weights": weights,
        "layer": layer,
        "image_size": config.image_size,
        "shape": list(FEATURE_SHAPES[layer]),
        "radcap_version": __version__,
    }


def layers_for(config: Config) -> list[str]:
    """The layers a config needs: `fc2`, plus the grid when attention is on."""
    return [config.layer] + ([config.grid_layer] if config.attention else [])


def build_backbone(config: Config, layers: list[str] | None = None):
    """VGG16 as a frozen Keras model from preprocessed images to the given layers.

    Args:
        config: Uses `weights` (`"imagenet"`, `None` or a weights file),
            `image_size` and `seed` (random weights are drawn from it, so the
            same seed gives the same backbone in every process).
        layers: Output layer names; defaults to `layers_for(config)`.

    Returns:
        A `keras.Model` taking `(batch, 224, 224, 3)` float32 BGR mean-centred
        images and returning a list with one array per layer, grids flattened
        to `(batch, regions, 512)`.

    Raises:
        WeightsError: The weights could not be downloaded or read.
    """
    import keras

    layers = layers or layers_for(config)
    weights = config.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise WeightsError(
            f"Backbone weights file {weights!r} not found. Give the path to a VGG16 "
            "'.h5'/'.weights.h5' file, 'imagenet' to download them, or None for a "
            "random backbone (smoke runs only)."
        )
    keras.utils.set_random_seed(config.seed)
    try:
        vgg = keras.applications.VGG16(
            weights=weights,
            include_top=True,
            input_shape=(config.image_size, config.image_size, 3),
        )
    except Exception as err:  # download or file errors come in many types
        raise WeightsError(
            f"Could not load VGG16 weights {weights!r}: {err}\n"
            "Ways out: (1) connect to the internet so Keras can download the "
            "ImageNet weights (~530 MB, cached in ~/.keras/models); (2) download "
            "'vgg16_weights_tf_dim_ordering_tf_kernels.h5' elsewhere and set "
            "Config.weights (or --weights) to its path; (3) use weights=None "
            "(the demo preset) for an offline smoke run with a random backbone."
        ) from None
    outputs = []
    for name in layers:
        out = vgg.get_layer(name).output
        if name in GRID_SHAPES:
            out = keras.layers.Reshape(GRID_SHAPES[name], name=f"{name}_regions")(out)
        outputs.append(out)
    model = keras.Model(vgg.input, outputs, name="vgg16_features")
    model.trainable = False
    return model


def preprocess(images: np.ndarray) -> np.ndarray:
    """RGB 0..255 to VGG16's input: BGR with the ImageNet means removed."""
    return images[..., ::-1] - _BGR_MEAN


class Extractor:
    """Runs the frozen backbone over batches of image files.

    Args:
        config: Run configuration (backbone, weights, layers, batch size).
        layers: Layers to extract; defaults to `layers_for(config)`.
        workers: Threads that decode images while the backbone runs.
    """

    def __init__(
        self,
        config: Config,
        layers: list[str] | None = None,
        workers: int | None = None,
    ):
        import tensorflow as tf

        self.config = config
        self.layers = layers or layers_for(config)
        self.model = build_backbone(config, self.layers)
        self.workers = workers or min(8, os.cpu_count() or 2)
        self._forward = tf.function(lambda x: self.model(x, training=False))

    def forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """One backbone pass: `(batch, 224, 224, 3)` RGB → one array per layer."""
        outputs = self._forward(preprocess(batch))
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.array(o) for o in outputs]  # writable copies

    def _decode(self, paths: list[str], pool) -> tuple[np.ndarray, dict[int, str]]:
        """Decode a batch in parallel; failed images become zeros plus a reason."""
        size = self.config.image_size
        batch = np.zeros((len(paths), size, size, 3), np.float32)
        errors = {}

        def one(i):
            try:
                batch[i] = load_image(paths[i], size)
            except ImageError as err:
                errors[i] = err.reason

        list(pool.map(one, range(len(paths))))
        return batch, errors

    def run(
        self,
        paths: list[str],
        on_batch,
        start: int = 0,
        max_batches=None,
        desc: str = "features",
    ):
        """Extract `paths[start:]` in batches; `on_batch(start, outputs, errors)` each.

        The next batch is decoded while the backbone runs on the current one.
        The last batch is padded to full size, so the backbone is traced once.
        """
        bs = self.config.extract_batch_size
        starts = list(range(start, len(paths), bs))
        if max_batches is not None:
            starts = starts[:max_batches]
        # One thread prepares the next batch, handing its images to the decode
        # pool; a single pool for both would deadlock with one worker.
        with (
            concurrent.futures.ThreadPoolExecutor(self.workers) as pool,
            concurrent.futures.ThreadPoolExecutor(1) as ahead,
            tqdm(total=len(paths), initial=start, desc=desc, unit="img") as bar,
        ):
            pending = (
                ahead.submit(self._decode, paths[starts[0] : starts[0] + bs], pool)
                if starts
                else None
            )
            for j, s in enumerate(starts):
                batch, errors = pending.result()
                if j + 1 < len(starts):
                    nxt = starts[j + 1]
                    pending = ahead.submit(self._decode, paths[nxt : nxt + bs], pool)
                n = len(batch)
                if n < bs:
                    batch = np.concatenate(
                        [batch, np.zeros((bs - n, *batch.shape[1:]), np.float32)]
                    )
                outputs = [o[:n] for o in self.forward(batch)]
                for i in errors:
                    for o in outputs:
                        o[i] = 0
                on_batch(s, outputs, errors)
                bar.update(n)


@dataclasses.dataclass
class Features:
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
    found = json.loads(path.read_text())
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
) -> Features:
    """Open a finished cache for one split (memory-mapped, nothing copied)."""
    folder = cache_dir(config, layer or config.layer, root)
    _check_meta(folder, cache_meta(config, layer or config.layer))
    npy = folder / f"{split}.npy"
    if not npy.exists():
        raise FeatureCacheError(
            f"No {layer or config.layer} features for split {split!r} in {folder}: "
            "run `radcap extract` (or radcap.features.extract) first."
        )
    ids = (folder / f"{split}.ids").read_text().splitlines()
    skipped_path = folder / f"{split}.skipped.csv"
    skipped = (
        pd.read_csv(skipped_path, dtype=str)
        if skipped_path.exists()
        else pd.DataFrame(columns=["image_id", "path", "reason"])
    )
    return Features(np.load(npy, mmap_mode="r"), ids, skipped)


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
        `{layer: Features}` when finished, `None` when stopped by `max_batches`.

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

    done = [(f / f"{split}.npy").exists() for f in folders.values()]
    if all(done):
        result = {layer: load_features(config, split, layer, root) for layer in layers}
        _check_ids(result, ids, split, folders)
        return result

    for layer, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").write_text(
            json.dumps(cache_meta(config, layer), indent=2)
        )

    progress_path = folders[layers[0]] / f"{split}.progress.json"
    progress = {"ids": ids, "done": 0, "skipped": []}
    if progress_path.exists():
        saved = json.loads(progress_path.read_text())
        if saved["ids"] == ids and all(
            (f / f"{split}.partial.npy").exists() for f in folders.values()
        ):
            progress = saved
    mode = "r+" if progress["done"] else "w+"
    partial = {
        layer: np.lib.format.open_memmap(
            folder / f"{split}.partial.npy",
            mode=mode,
            dtype=np.float16,
            shape=(len(ids), *FEATURE_SHAPES[layer]),
        )
        for layer, folder in folders.items()
    }

    def on_batch(start, outputs, errors):
        for layer, out in zip(layers, outputs):
            partial[layer][start : start + len(out)] = out.astype(np.float16)
            partial[layer].flush()
        for i, reason in sorted(errors.items()):
            progress["skipped"].append([ids[start + i], paths[start + i], reason])
        progress["done"] = start + len(outputs[0])
        tmp = progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress))
        os.replace(tmp, progress_path)

    extractor = extractor or Extractor(config, layers)
    extractor.run(
        paths,
        on_batch,
        start=progress["done"],
        max_batches=max_batches,
        desc=f"{split} features",
    )
    if progress["done"] < len(ids):
        return None
    skipped = pd.DataFrame(progress["skipped"], columns=["image_id", "path", "reason"])
    for layer, folder in folders.items():
        del partial[layer]
        (folder / f"{split}.ids").write_text("".join(f"{i}\n" for i in ids))
        skipped.to_csv(folder / f"{split}.skipped.csv", index=False)
        os.replace(folder / f"{split}.partial.npy", folder / f"{split}.npy")
    progress_path.unlink()
    return {layer: load_features(config, split, layer, root) for layer in layers}
