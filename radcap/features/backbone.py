"""The frozen VGG16 backbone: image files in, `fc2` vectors (and grids) out.

`fc2` and the attention grid come out of the same forward pass, so each image
is read and run through VGG16 once. Image files are decoded by worker threads
while the backbone runs on the previous batch.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from radcap.core.config import Config
from radcap.data.images import ImageError, load_image

BACKBONE = "vgg16"
LAYER = "fc2"  # the whole-image vector every decoder reads, 4096-d
IMAGE_SIZE = 224  # VGG16's fully connected layers need 224x224 inputs
GRID_SHAPES = {"block5_pool": (49, 512), "block5_conv3": (196, 512)}
# The mean of every channel of the five pooling blocks (64 + 128 + 256 + 512 +
# 512 values): what kind of image it is, for `radcap.features.familiarity`.
BLOCK_MEANS = "block_means"
BLOCK_MEANS_FROM = tuple(f"block{i}_pool" for i in range(1, 6))
FEATURE_SHAPES = {LAYER: (4096,), BLOCK_MEANS: (1472,), **GRID_SHAPES}
# ImageNet channel means of VGG16's "caffe" preprocessing, in BGR order.
_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


class WeightsError(RuntimeError):
    """The backbone's weights could not be loaded."""


def layers_for(config: Config) -> list[str]:
    """The layers a config needs: `fc2`, the block means, the grid for attention."""
    return [LAYER, BLOCK_MEANS] + ([config.grid_layer] if config.uses_grid else [])


def build_backbone(config: Config, layers: list[str] | None = None):
    """VGG16 as a frozen Keras model from preprocessed images to the given layers.

    Args:
        config: Uses `weights` (`"imagenet"`, `None` or a weights file),
            and `seed` (random weights are drawn from it, so the
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
            input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
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
        if name == BLOCK_MEANS:
            means = [
                keras.layers.GlobalAveragePooling2D(name=f"{block}_means")(
                    vgg.get_layer(block).output
                )
                for block in BLOCK_MEANS_FROM
            ]
            outputs.append(keras.layers.Concatenate(name=BLOCK_MEANS)(means))
            continue
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


_said_one_gpu: list = []  # the note below, once per process


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
        self._forward = tf.function(
            lambda x: self.model(x, training=False), autograph=False
        )
        gpus = len(tf.config.list_logical_devices("GPU"))
        if gpus > 1 and not _said_one_gpu:
            _said_one_gpu.append(True)
            print(
                f"note: feature extraction uses one of the {gpus} GPUs: decoding "
                f"the images on {os.cpu_count()} CPU cores is its limit, not the "
                "backbone (bench/README.md, 'Extraction on a GPU machine')."
            )

    def forward(self, batch: np.ndarray) -> list[np.ndarray]:
        """One backbone pass: `(batch, 224, 224, 3)` RGB → one array per layer."""
        outputs = self._forward(preprocess(batch))
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.array(o) for o in outputs]  # writable copies

    def read_batch(
        self, paths: list[str], pool, frame="middle"
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Decode a batch in parallel; failed images become zeros plus a reason.

        `frame` is the frame of a multi-frame DICOM file (`load_image`'s).
        """
        size = IMAGE_SIZE
        batch = np.zeros((len(paths), size, size, 3), np.float32)
        errors = {}

        def one(i):
            try:
                batch[i] = load_image(paths[i], size, frame)
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
        frame="middle",
    ):
        """Extract `paths[start:]` in batches; `on_batch(start, outputs, errors)` each.

        The next batch is decoded while the backbone runs on the current one.
        A short batch is padded to a power of two (`padded_size`), so the
        backbone is traced a few times at most.
        `frame` is the frame read from multi-frame DICOM files (a config's
        `dicom_frame`; the extractor may be shared by several configs).
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
                ahead.submit(
                    self.read_batch, paths[starts[0] : starts[0] + bs], pool, frame
                )
                if starts
                else None
            )
            for j, s in enumerate(starts):
                batch, errors = pending.result()
                if j + 1 < len(starts):
                    nxt = starts[j + 1]
                    pending = ahead.submit(
                        self.read_batch, paths[nxt : nxt + bs], pool, frame
                    )
                n = len(batch)
                pad = np.zeros((padded_size(n, bs) - n, *batch.shape[1:]), np.float32)
                batch = np.concatenate([batch, pad]) if len(pad) else batch
                outputs = [o[:n] for o in self.forward(batch)]
                for i in errors:
                    for o in outputs:
                        o[i] = 0
                on_batch(s, outputs, errors)
                bar.update(n)


def padded_size(n: int, batch_size: int) -> int:
    """The size `n` images are padded to: the next power of two, at most `batch_size`.

    Every batch shape is a new trace of the backbone (and on a GPU a new XLA
    compile), so a short last batch is padded; to a power of two rather than
    the full batch, so that captioning three images runs the backbone on 4,
    not 32, at the cost of at most log2(batch_size) traces.
    """
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


_shared: dict = {}


def shared_extractor(
    config: Config, layers: list[str] | None = None, more: bool = False
) -> Extractor:
    """The process's `Extractor` for this backbone, built once and reused.

    Building VGG16 (drawing or reading 138 million weights) takes seconds,
    so every extraction in one process with the same weights, seed and
    batch size shares one backbone; a caller that wants a captioner to use
    it too passes it (`Captioner.load(run_dir, extractor=...)`: the CLI and
    the evaluation do; a `Captioner` never reaches for it itself). Only the
    last one is kept: VGG16 holds about 530 MB.

    Args:
        config: Uses `weights`, `seed`, `extract_batch_size` (and the layers
            of `layers_for` by default).
        layers: The layers wanted.
        more: Accept an extractor with more layers than wanted (the caller
            picks its outputs by `Extractor.layers`); a new one is then built
            with all of them, so that the next caller can share it too.
    """
    layers = list(layers or layers_for(config))
    key = (config.weights, config.seed, config.extract_batch_size)
    have = _shared.get(key)
    if have is not None and (
        have.layers == layers or (more and set(layers) <= set(have.layers))
    ):
        return have
    if more and have is not None:
        layers += [layer for layer in have.layers if layer not in layers]
    _shared.clear()
    _shared[key] = Extractor(config, layers)
    return _shared[key]
