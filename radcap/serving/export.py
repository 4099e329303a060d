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
by default). When a retrieval run (`radcap retrieval`) of the same features
sits beside the run, or `retrieval=` names one, two more: `embed_image`
(`images` in; `embedding`, `(B, dim)` float32 unit rows, NaN for an image
it cannot read, and `error`) and `embed_text` (`texts`, a 1-D `tf.string`
tensor, in; `embedding` and `known_words`, how many of each text's words the
vocabulary has: unknown words are left out). They are `Retriever.embed_images`
and `Retriever.embed_text` in one graph (`radcap.retrieval.query` cleans the
text for both); search the run's `index.npz` with their rows.

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
from radcap.retrieval.retriever import Retriever


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


def decode_images(images):
    """`(B,)` encoded images to `((B, 224, 224, 3) float32 RGB, (B,) errors)`."""
    import tensorflow as tf

    return tf.map_fn(
        decode_image,
        images,
        fn_output_signature=(
            tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32),
            tf.string,
        ),
    )


def serving_function(captioner: Captioner, backbone, beam: int, layers=None):
    """The function behind one signature: image bytes to captions, in a graph.

    Args:
        captioner: The run's `Captioner` (model, vocabulary, config,
            familiarity reference).
        backbone: `radcap.features.backbone.build_backbone(config, layers)`.
        beam: Beam width; 1 is greedy search.
        layers: The backbone's outputs; default `layers_for(config)`.
    """
    import tensorflow as tf

    config, vocab = captioner.config, captioner.vocab
    layers = layers or layers_for(config)
    settings = dict(
        start_id=vocab.start_id,
        end_id=vocab.end_id,
        max_len=vocab.max_len,
        beam=beam,
        length_penalty=float(config.length_penalty) if beam > 1 else 0.0,
        rules=captioner.rules(),
    )

    def serve(images):
        pixels, errors = decode_images(images)
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


def embedding_functions(retriever: Retriever, backbone, layers) -> dict:
    """`{"embed_image": ..., "embed_text": ...}`: a retrieval run's towers in a
    graph (see the module docstring), over the captioner's `backbone`."""
    import tensorflow as tf

    model, grid_layer = retriever.model, retriever.config.grid_layer

    def embed_image(images):
        pixels, errors = decode_images(images)
        arrays = dict(zip(layers, backbone(preprocess(pixels), training=False)))
        grid = arrays.get(grid_layer) if model.uses_grid else None
        rows = model.embed_images(arrays[LAYER], grid)  # (B, dim)
        ok = (errors == "")[:, None]
        return {"embedding": tf.where(ok, rows, np.nan), "error": errors}

    def embed_text(texts):
        tokens, known = retriever.query_tokens(texts)  # (B, T), (B,)
        return {"embedding": model.embed_texts(tokens), "known_words": known}

    return {"embed_image": embed_image, "embed_text": embed_text}


def export(
    run_dir: str | Path,
    out: str | Path | None = None,
    beam: int = 1,
    retrieval: str | Path | bool | None = None,
) -> Path:
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
        retrieval: A retrieval run whose `embed_image` and `embed_text` join
            the export; None: the first finished one beside `run_dir` made
            from the same features, if any; False: none.

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
        _write(run_dir, out, beam, _retrieval_run(run_dir, retrieval))
    return out


def _retrieval_run(run_dir: Path, retrieval) -> Path | None:
    """The retrieval run folder `export(retrieval=...)` asks for, or None."""
    if retrieval is False:
        return None
    if retrieval is None or retrieval is True:
        found = runs.finished_runs(run_dir, retrieval=True)
        if not found and retrieval is True:
            raise runs.RunError(
                f"No finished retrieval run beside {run_dir}: make one with "
                "`radcap retrieval` (same preset) or name it."
            )
        return found[0] if found else None
    return runs.check(retrieval)


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


def _write(run_dir: Path, out: Path, beam: int, retrieval: Path | None) -> None:
    """Trace the signatures of `export` and write them to `out` in one move."""
    captioner = Captioner.load(run_dir)
    captioner.check_beam(beam)  # before the tracing, not in it
    retriever = Retriever.load(retrieval) if retrieval is not None else None
    layers = layers_for(captioner.config)
    if retriever is not None and retriever.model.uses_grid:
        grid = retriever.config.grid_layer
        layers += [] if grid in layers else [grid]
    backbone = build_backbone(captioner.config, layers)
    models = [backbone, captioner.model] + ([retriever.model] if retriever else [])
    needed = _weight_bytes(*models) + _GRAPH_BYTES
    remove_stale_partials(out.parent, recursive=False)  # killed exports' folders
    check_free_space(out.parent, needed, "the export")  # before minutes of tracing
    archive = _archive(captioner, backbone, beam, layers, retriever)
    _write_in_one_move(archive, out, needed)


def _archive(captioner: Captioner, backbone, beam: int, layers, retriever=None):
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
        serve = serving_function(captioner, backbone, width, layers)
        archive.add_endpoint(name, serve, spec)
    if retriever is not None:
        embed = embedding_functions(retriever, backbone, layers)
        archive.track(retriever.query_tokens.table)  # the words, in the graph
        archive.add_endpoint("embed_image", embed["embed_image"], spec)
        texts = [tf.TensorSpec([None], tf.string, name="texts")]
        archive.add_endpoint("embed_text", embed["embed_text"], texts)
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
