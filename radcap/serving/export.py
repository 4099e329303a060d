"""A trained run as one TensorFlow SavedModel: image bytes in, captions out.

```python
import tensorflow as tf                    # no radcap needed to use it
captioner = tf.saved_model.load("checkpoints/demo/export")
images = tf.constant([open("scan.png", "rb").read()])
out = captioner.signatures["serving_default"](images=images)
out["caption"], out["score"], out["familiar"], out["error"]
```

Everything runs inside the graph: decoding the PNG or JPEG bytes (8- or
16-bit, grey, colour or with alpha, any size), resizing to 224x224, VGG16
with its weights, the normalisation, the run's decoder and the search (the
same `radcap.decoding.search` search that `Captioner` runs, compiled with the
model), and the familiarity score against the run's reference. Each
signature takes `images`, a 1-D `tf.string` tensor of encoded files, and
returns, per image: `caption` (`tf.string`), `score` (the caption's summed
log-probability), `error` (empty, or why the image could not be read: then
its caption is empty), and `familiarity` and `familiar` where the run has a
familiarity reference.

Signatures: `greedy`, and `beam` (width `beam`, or 3 when the export is
greedy); `serving_default` is the one `export(beam=...)` asked for (greedy
by default).

Images are decoded as `radcap.data.images.load_image` decodes them; an image
that is not already 224x224 is resized with TensorFlow's antialiased
bilinear filter instead of Pillow's, so its pixels can differ by a grey
level from `Captioner`'s (the demo's 224x224 PNGs are decoded identically).
An image whose header says it has more than `radcap.data.images.MAX_PIXELS`
pixels is refused before it is decoded.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path

import numpy as np

from radcap.core.files import (
    DiskFullError,
    check_free_space,
    disk_full_message,
    folder_lock,
    kill_point,
    partial_path,
    remove_stale_partials,
)
from radcap.core.locks import check_writable, read_lock, replace_lock
from radcap.data.images import MAX_PIXELS
from radcap.decoding.captioner import Captioner
from radcap.features.backbone import (
    BLOCK_MEANS,
    IMAGE_SIZE,
    LAYER,
    build_backbone,
    layers_for,
    preprocess,
)
from radcap.models import runs

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def _fail(reason: str):
    import tensorflow as tf

    return tf.zeros([IMAGE_SIZE, IMAGE_SIZE, 3]), tf.constant(reason)


def _png_pixels(data):
    """A PNG as float32 RGB 0..255, as `radcap.data.images.load_image` reads it."""
    import tensorflow as tf

    depth = tf.io.decode_raw(tf.strings.substr(data, 24, 1), tf.uint8)[0]
    image = tf.cond(
        depth == 16,
        lambda: tf.cast(tf.io.decode_png(data, dtype=tf.uint16), tf.float32),
        lambda: tf.cast(tf.io.decode_png(data), tf.float32),
    )
    channels = tf.shape(image)[2]
    # 16-bit grey is scaled by its own range; other 16-bit data keeps its
    # high byte, as Pillow reads it.
    lo, hi = tf.reduce_min(image), tf.reduce_max(image)
    stretched = tf.where(hi > lo, (image - lo) / (hi - lo) * 255.0, 0.0)
    image = tf.where(
        depth == 16,
        tf.where(channels == 1, tf.floor(stretched), tf.floor(image / 256.0)),
        image,
    )
    colour = tf.cond(
        channels >= 3,
        lambda: image[..., :3],
        lambda: tf.tile(image[..., :1], [1, 1, 3]),
    )
    alpha = image[..., channels - 1 :]  # transparent pixels become black
    with_alpha = (channels == 2) | (channels == 4)
    return tf.where(with_alpha, tf.round(colour * alpha / 255.0), colour)


def _pixel_count(data, is_png):
    """Width times height from the file's header, before decoding it."""
    import tensorflow as tf

    def png():
        width_height = tf.io.decode_raw(
            tf.strings.substr(data, 16, 8), tf.int32, little_endian=False
        )
        return tf.cast(width_height[0], tf.int64) * tf.cast(width_height[1], tf.int64)

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0] * shape[1]

    return tf.cond(is_png, png, jpeg)


def decode_image(data):
    """One encoded image to `((224, 224, 3) float32 RGB 0..255, error)` in a graph.

    `error` is an empty string, or why the image cannot be used (then the
    pixels are zeros): an empty file, neither PNG nor JPEG, a PNG header
    cut short, too many pixels.
    """
    import tensorflow as tf

    length = tf.strings.length(data)
    is_png = tf.strings.substr(data, 0, len(_PNG)) == _PNG
    is_jpeg = tf.strings.substr(data, 0, len(_JPEG)) == _JPEG
    readable = (is_png & (length >= 33)) | is_jpeg

    def read():
        pixels = tf.cond(
            is_png,
            lambda: _png_pixels(data),
            lambda: tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32),
        )
        same = tf.reduce_all(tf.shape(pixels)[:2] == IMAGE_SIZE)
        resized = tf.cond(
            same,
            lambda: pixels,
            lambda: tf.clip_by_value(
                tf.round(
                    tf.image.resize(pixels, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
                ),
                0.0,
                255.0,
            ),
        )
        return tf.ensure_shape(resized, [IMAGE_SIZE, IMAGE_SIZE, 3]), tf.constant("")

    return tf.case(
        [
            (length == 0, lambda: _fail("empty file (0 bytes)")),
            (~(is_png | is_jpeg), lambda: _fail("not a PNG or JPEG image")),
            (~readable, lambda: _fail("truncated or corrupt image (header cut short)")),
            (
                tf.cond(
                    readable,
                    lambda: _pixel_count(data, is_png),
                    lambda: tf.constant(0, tf.int64),
                )
                > MAX_PIXELS,
                lambda: _fail(f"image too large (over {MAX_PIXELS} pixels)"),
            ),
        ],
        default=read,
        exclusive=False,
    )


def familiarity_scores(familiarity, stats):
    """`Familiarity.scores` in TensorFlow operations: `(N,)` float32 scores."""
    import tensorflow as tf

    f = familiarity
    reference = tf.constant(f.reference)
    z = (stats - f.mean) / f.scale
    p = tf.matmul(z, tf.constant(f.components), transpose_b=True)
    p_sq = tf.reduce_sum(p**2, axis=1)
    residual = tf.maximum(tf.reduce_sum(z**2, axis=1) - p_sq, 0.0)
    reference_sq = np.sum(f.reference**2, axis=1)
    dist = tf.maximum(
        p_sq[:, None]
        + reference_sq[None]
        - 2 * tf.matmul(p, reference, transpose_b=True),
        0.0,
    )
    nearest = -tf.math.top_k(-dist, f.neighbours).values
    distance = tf.sqrt(tf.reduce_mean(nearest, axis=1))
    return tf.sqrt((distance / f.distance_scale) ** 2 + residual / f.residual_scale)


def serving_function(captioner: Captioner, backbone, beam: int):
    """The function behind one signature: image bytes to captions, in a graph.

    Args:
        captioner: The run's `Captioner` (model, vocabulary, config,
            familiarity reference).
        backbone: `radcap.features.backbone.build_backbone(config)` for the run.
        beam: Beam width; 1 is greedy search.
    """
    import tensorflow as tf

    config, vocab = captioner.config, captioner.vocab
    layers = layers_for(config)
    words = tf.constant(vocab.words)
    settings = dict(
        start_id=vocab.start_id,
        end_id=vocab.end_id,
        max_len=vocab.max_len,
        beam=beam,
        length_penalty=float(config.length_penalty) if beam > 1 else 0.0,
        rules=captioner.rules(),
    )

    def serve(images):
        pixels, errors = tf.map_fn(
            decode_image,
            images,
            fn_output_signature=(
                tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32),
                tf.string,
            ),
        )
        outputs = backbone(preprocess(pixels), training=False)
        arrays = dict(zip(layers, outputs))
        grid = arrays.get(config.grid_layer) if captioner.uses_grid else None
        decoded = captioner.searcher.decode(arrays[LAYER], grid, **settings)
        last = tf.gather(
            decoded.tokens, tf.maximum(decoded.lengths - 1, 0), batch_dims=1
        )
        count = decoded.lengths - tf.cast(last == vocab.end_id, tf.int32)
        text = tf.strings.reduce_join(
            tf.RaggedTensor.from_tensor(
                tf.gather(words, decoded.tokens), lengths=count
            ),
            axis=1,
            separator=" ",
        )
        ok = errors == ""
        out = {
            "caption": tf.where(ok, text, ""),
            "score": tf.where(ok, tf.cast(decoded.scores, tf.float32), np.nan),
            "error": errors,
        }
        if captioner.familiarity is not None:
            scores = familiarity_scores(captioner.familiarity, arrays[BLOCK_MEANS])
            out["familiarity"] = tf.where(ok, scores, np.nan)
            out["familiar"] = ok & (scores <= captioner.familiarity.threshold)
        return out

    return serve


def export(run_dir: str | Path, out: str | Path | None = None, beam: int = 1) -> Path:
    """Write a run's captioner as a SavedModel (see the module docstring).

    The folder is written beside its final place (`radcap.core.files.partial_path`)
    and moved there when whole, so an interrupted export never leaves a
    half-written one; what killed exports left there is removed first. An
    earlier export at `out` is replaced; any other existing folder is
    refused, never overwritten. Where `out` is a symbolic link, the export
    replaces the folder it points to (the link is kept). The run folder is
    only read (it may be read-only) unless `out` lies inside it.

    Args:
        run_dir: A trained run folder.
        out: The SavedModel folder; default `<run_dir>/export`.
        beam: Beam width of the `serving_default` signature; 1 is greedy.

    Returns:
        The SavedModel folder.

    Raises:
        ReadOnlyError: `out`'s folder cannot be written.
        DiskFullError: Not enough free space for the export, or the disk
            filled up while it was written.
        LockError: Training writes into the run folder, or another export
            writes into `out`'s folder, right now.
    """

    if isinstance(beam, bool) or not isinstance(beam, (int, np.integer)) or beam < 1:
        raise ValueError(f"beam={beam!r} is invalid: use 1 (greedy) or more.")
    run_dir = runs.check(run_dir)
    out = Path(out) if out is not None else run_dir / runs.EXPORT
    if out.is_symlink():  # replace what it points to; the link stays a link
        out = out.resolve()
    if out.exists() and not (out / "saved_model.pb").is_file():
        raise ValueError(
            f"{out} exists and is not a SavedModel: choose another --out (an "
            "earlier export there would be replaced; anything else is left alone)."
        )
    with _locks(run_dir, out):
        _write(run_dir, out, beam)
    return out


@contextlib.contextmanager
def _locks(run_dir: Path, out: Path):
    """Read the run while no one trains it; write `out` as its only writer.

    Reading needs no exclusive lock, and a read-only run folder (a Kaggle
    input) cannot take one: the run folder is locked for writing only when
    `out` lies inside it.
    """
    inside = out.resolve().is_relative_to(run_dir.resolve())
    check_writable(
        out.parent,
        "run folder" if inside else "export folder",
        f"Export into a writable folder: radcap export --run {run_dir} --out "
        "<folder>/export (in Python: export(run_dir, out=...)).",
    )
    if inside:
        with folder_lock(run_dir, "run folder"):
            yield
        return
    with read_lock(run_dir, "run folder"), replace_lock(out, "export"):
        yield


def _write(run_dir: Path, out: Path, beam: int) -> None:
    """Trace the signatures of `export` and write them to `out` in one move."""
    captioner = Captioner.load(run_dir)
    captioner.check_beam(beam)  # before the tracing, not in it
    backbone = build_backbone(captioner.config, layers_for(captioner.config))
    needed = _weight_bytes(backbone, captioner.model) + _GRAPH_BYTES
    remove_stale_partials(out.parent, recursive=False)  # killed exports' folders
    check_free_space(out.parent, needed, "the export")  # before minutes of tracing
    archive = _archive(captioner, backbone, beam)
    _write_in_one_move(archive, out, needed)


def _archive(captioner: Captioner, backbone, beam: int):
    """The `keras.export.ExportArchive` with the traced signatures."""
    import keras
    import tensorflow as tf

    # The endpoints track the variables they use; tracking the models too
    # would store every weight twice.
    archive = keras.export.ExportArchive()
    spec = [tf.TensorSpec([None], tf.string, name="images")]
    # The first endpoint is also `serving_default`: the search asked for.
    widths = {"greedy": 1, "beam": beam if beam > 1 else 3}
    if beam > 1:
        widths = {"beam": beam, "greedy": 1}
    for name, width in widths.items():
        archive.add_endpoint(name, serving_function(captioner, backbone, width), spec)
    return archive


def _write_in_one_move(archive, out: Path, needed: int) -> None:
    """Write `archive` beside `out`, then put it in `out`'s place."""
    import tensorflow as tf

    partial, old = partial_path(out), partial_path(out)
    try:
        archive.write_out(str(partial), verbose=False)
        kill_point(f"write:{out.name}")
        if out.exists():
            out.rename(old)
        partial.rename(out)
    except (OSError, tf.errors.OpError) as err:
        if old.exists() and not out.exists():
            old.rename(out)  # the earlier export stays
        if _disk_full(err):
            raise DiskFullError(errno.ENOSPC, disk_full_message(out, needed)) from None
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


_GRAPH_BYTES = 32 * 2**20  # the traced graph beside the weights, with room to spare


def _weight_bytes(*models) -> int:
    """Bytes of the models' weights: most of what a SavedModel holds."""
    return sum(
        int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
        for model in models
        for w in model.weights
    )


def _disk_full(err: Exception) -> bool:
    """Whether an error of the write (TensorFlow's say so in words) is a full disk."""
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err)


def folder_size(path: str | Path) -> int:
    """Bytes of every file under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
