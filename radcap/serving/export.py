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

PNG and JPEG files are decoded and resized by `radcap.data.pixels.load`, the
operations `radcap.data.images.load_image` runs on them, so the export's
pixels (and captions) are `Captioner`'s for every image, of any size. An
image whose header says it has more than `radcap.data.pixels.MAX_PIXELS`
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
from radcap.data import pixels
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


def decode_image(data):
    """One encoded image to `((224, 224, 3) float32 RGB 0..255, error)` in a graph.

    `radcap.data.pixels.load`, as `radcap.data.images.load_image` reads a PNG
    or JPEG file.
    """
    return pixels.load(data, IMAGE_SIZE)


def caption_text(vocab, decoded):
    """A search's padded `Decoded` tokens to `(B,)` `tf.string` captions.

    Words by `radcap.core.text.Vocabulary.caption_ids`, the rule of
    `Vocabulary.decode`; tokens past each row's length are not read.
    """
    import tensorflow as tf

    ids, keep = vocab.caption_ids(decoded.tokens)
    written = tf.range(tf.shape(ids)[1])[None] < decoded.lengths[:, None]
    words = tf.gather(tf.constant(vocab.words), ids)
    return tf.strings.reduce_join(
        tf.ragged.boolean_mask(words, keep & written), axis=1, separator=" "
    )


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
        text = caption_text(vocab, decoded)
        ok = errors == ""
        out = {
            "caption": tf.where(ok, text, ""),
            "score": tf.where(ok, tf.cast(decoded.scores, tf.float32), np.nan),
            "error": errors,
        }
        if captioner.familiarity is not None:
            scores = captioner.familiarity.score(arrays[BLOCK_MEANS])
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
