"""The export: its in-graph parts (image decoding, familiarity, words) against
radcap's own, and trained runs through a SavedModel into a process without
radcap, where its captions and embeddings equal `Captioner`'s and
`Retriever`'s; then kills, links, read-only folders and bad settings.

The round trips run the tiny stand-in for VGG16 (`tiny_run.tiny_backbone`),
from training to the SavedModel: what the export does around the backbone
does not depend on VGG16's weights, and a 528 MB SavedModel would cost a
test half a minute of writing, loading and convolving.
"""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from radcap.data.images import load_image
from radcap.data.pixels import MAX_PIXELS
from radcap.features.familiarity import Familiarity
from radcap.serving.export import decode_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (1-bit grey), with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


rng = np.random.default_rng(0)
KINDS = {
    "grey 8-bit": Image.fromarray(rng.integers(0, 256, (224, 224), dtype=np.uint8)),
    "rgb 8-bit": Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)),
    "grey 16-bit": Image.fromarray(
        rng.integers(900, 40_000, (224, 224)).astype(np.uint16)
    ),
    "grey with alpha": Image.fromarray(
        np.stack(
            [np.full((224, 224), 200, np.uint8), np.where(np.eye(224) > 0, 0, 255)],
            axis=-1,
        ).astype(np.uint8),
        "LA",
    ),
}


def odd_images() -> dict[str, Image.Image]:
    """Images that are not 224x224: resized demo-like scans and real photographs."""
    import skimage.data

    x, y = np.meshgrid(np.linspace(0, 255, 300), np.linspace(0, 255, 200))
    gradient = np.stack([x, y, (x + y) / 2], -1).astype(np.uint8)
    photos = {
        name: Image.fromarray(getattr(skimage.data, name)())
        for name in ("astronaut", "camera", "coffee", "chelsea")
    }
    return {
        "rgb 300x200": Image.fromarray(gradient),
        "grey 97x513": Image.fromarray(gradient[..., 0]).resize((97, 513)),
        "grey 16-bit 250x180": KINDS["grey 16-bit"].resize((250, 180)),
        "rgba 230x230": Image.fromarray(gradient).convert("RGBA").resize((230, 230)),
        **photos,
    }


def save_mix(folder: Path) -> list[Path]:
    """`KINDS` and `odd_images` as PNG files, the photographs also as JPEG."""
    paths = []
    for name, image in {**KINDS, **odd_images()}.items():
        paths.append(folder / f"{name.replace(' ', '_')}.png")
        image.save(paths[-1])
        if image.mode in ("RGB", "L") and name in ("astronaut", "coffee", "camera"):
            paths.append(paths[-1].with_suffix(".jpg"))
            image.save(paths[-1], quality=90)
    return paths


def test_any_png_or_jpeg_decodes_in_the_graph_as_load_image_decodes_it(tmp_path):
    graph = tf.function(decode_image, input_signature=[tf.TensorSpec([], tf.string)])
    for path in save_mix(tmp_path):
        pixels, error = graph(tf.constant(path.read_bytes()))
        assert error.numpy() == b"", path.name
        np.testing.assert_array_equal(pixels.numpy(), load_image(path), path.name)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"<html>not an image</html>", "not a PNG or JPEG image"),
        (b"GIF89a" + bytes(40), "not a PNG or JPEG image"),
        (
            b"\x89PNG\r\n\x1a\n" + bytes(10),
            "truncated or corrupt image (header cut short)",
        ),
        (
            header_only_png(20_000, 20_000),
            f"image too large (over {MAX_PIXELS} pixels)",
        ),
    ],
)
def test_bad_bytes_get_a_reason_and_zero_pixels(data, reason):
    pixels, error = decode_image(tf.constant(data))
    assert error.numpy().decode() == reason
    assert not pixels.numpy().any()


def test_a_header_at_the_pixel_limit_is_read_and_one_above_is_refused():
    side = int(np.sqrt(MAX_PIXELS))
    assert side * side == MAX_PIXELS
    _, error = decode_image(tf.constant(header_only_png(side, side + 1)))
    assert error.numpy().decode().startswith("image too large")
    tiny = png_bytes(Image.new("L", (3, 2), 7))
    pixels, error = decode_image(tf.constant(tiny))
    assert error.numpy() == b"" and np.all(pixels.numpy() == 7)


def test_familiarity_scores_follow_their_definition_in_and_out_of_a_graph():
    train = rng.normal(size=(300, 40)).astype(np.float32)
    validation = rng.normal(size=(50, 40)).astype(np.float32)
    f = Familiarity.fit(train, validation, dims=8)
    queries = np.concatenate([validation, 4 + rng.normal(size=(20, 40))])
    z = (queries - f.mean) / f.scale  # the module docstring's steps, in float64
    projected = z @ f.components.T.astype(np.float64)
    residual = (z**2).sum(1) - (projected**2).sum(1)
    squared = ((projected[:, None] - f.reference[None]) ** 2).sum(-1)
    distance = np.sqrt(np.sort(squared, axis=1)[:, : f.neighbours].mean(1))
    expected = np.sqrt((distance / f.distance_scale) ** 2 + residual / f.residual_scale)
    np.testing.assert_allclose(f.scores(queries), expected, rtol=1e-4)
    graph = tf.function(f.score, input_signature=[tf.TensorSpec([None, 40])])
    np.testing.assert_allclose(graph(queries.astype(np.float32)), expected, rtol=1e-4)
    assert (expected[-20:] > f.threshold).all()  # the shifted ones stand out


def test_ids_become_words_by_one_rule_in_python_and_in_the_graph():
    from radcap.core.text import Vocabulary
    from radcap.decoding.search import Decoded
    from radcap.serving.export import caption_text

    vocab = Vocabulary(["b", "c"], max_len=6)  # <pad> <start> <end> <unk> b c
    tokens = [[4, 5, 2, 4, 4, 4], [1, 4, 0, 5, 99, 2], [4, 4, 4, 4, 5, 5], [2, 4] * 3]
    lengths = [3, 6, 5, 1]  # each row's last token is valid up to its length
    expected = ["b c", "b c <unk>", "b b b b c", ""]
    assert [vocab.decode(t[:n]) for t, n in zip(tokens, lengths)] == expected
    decoded = Decoded(tf.constant(tokens, tf.int32), tf.constant(lengths), None, None)
    graph = tf.function(lambda d: caption_text(vocab, d))
    assert [t.decode() for t in graph(decoded).numpy().tolist()] == expected


def test_export_never_replaces_a_folder_that_is_not_a_savedmodel(tmp_path):
    from radcap.models import runs
    from radcap.serving.export import export

    run = tmp_path / "run"
    run.mkdir()
    for name in runs.REQUIRED:
        (run / name).write_text("{}")
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(ValueError, match="exists and is not a SavedModel"):
        export(run, mine)
    assert (mine / "thesis.txt").read_text() == "years of work"
    with pytest.raises(ValueError, match="beam=0 is invalid"):
        export(run, tmp_path / "new", beam=0)
    from radcap.core.files import LockError, folder_lock

    with folder_lock(run, "run folder"), pytest.raises(LockError, match="in use"):
        export(run, tmp_path / "new")  # while a training holds the run folder
    assert not (tmp_path / "new").exists()


# A program that has TensorFlow but not radcap: radcap cannot even be imported.
CLIENT = """
import json, sys
sys.modules["radcap"] = None
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = tf.constant([open(path, "rb").read() for path in sys.argv[2:]])
out = {}
for name in ("serving_default", "greedy"):
    result = model.signatures[name](images=images)
    out[name] = {
        key: [v.decode() if isinstance(v, bytes) else v for v in value.numpy().tolist()]
        for key, value in result.items()
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_run import shared_tiny_run

    return shared_tiny_run(tmp_path_factory)  # the session's: exports read it


# The stand-in backbone of the round trips sees 8 x 8 squares: its familiarity
# figures then spread as VGG16's do (on the mean colour alone they would
# differ by little more than float32's rounding).
SIDE = 8


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory):
    """`tiny_run.train_tiny_run`'s attention run, its features from the stand-in
    backbone: the familiarity reference knows the demo's scans by them."""
    from tiny_run import patch_tiny_backbone, train_tiny_run

    with pytest.MonkeyPatch.context() as patch:
        patch_tiny_backbone(patch, side=SIDE)
        return train_tiny_run(tmp_path_factory.mktemp("stand-in"))


def test_the_export_captions_as_the_captioner_in_a_process_without_radcap(
    stand_in_run, tmp_path, monkeypatch
):
    """A demo run with attention, exported, equals `Captioner`: greedy and beam.

    For every image: the demo's 224x224 scans, and PNG and JPEG files of
    other sizes and kinds (`save_mix`: odd sizes, 16-bit, alpha, photographs).
    The run was trained on the stand-in backbone's features, and the export
    and the captioner both run it.
    """
    import json
    import subprocess
    import sys

    from tiny_run import patch_tiny_backbone

    from radcap.decoding.captioner import Captioner
    from radcap.serving.export import export

    patch_tiny_backbone(monkeypatch, side=SIDE)
    run_dir, dataset = stand_in_run
    out = export(run_dir, tmp_path / "export", beam=3)
    images = [*dataset.images("test").path, *dataset.images("validation").path]
    (tmp_path / "mix").mkdir()
    images += [str(path) for path in save_mix(tmp_path / "mix")]
    empty, text = tmp_path / "empty.png", tmp_path / "text.png"
    empty.write_bytes(b"")
    text.write_text("not an image")
    files = [*images, str(empty), str(text)]
    n = len(images)
    run = subprocess.run(
        [sys.executable, "-c", CLIENT, str(out), *files],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    captioner = Captioner.load(run_dir)
    arrays, errors = captioner.image_features(files)  # one backbone pass
    unknown = "not an image file (unknown format)"
    assert errors == {n: "empty file (0 bytes)", n + 1: unknown}
    for name, beam in (("greedy", 1), ("serving_default", 3)):  # exported: beam 3
        expected = captioner.caption(
            arrays["fc2"][:n],
            beam=beam,
            return_attention=True,
            grid=arrays["block5_pool"][:n],
            stats=arrays["block_means"][:n],
        )
        result = got[name]
        assert result["caption"][:n] == [e["caption"] for e in expected]
        assert result["caption"][n:] == ["", ""]
        reasons = ["empty file (0 bytes)", "not a PNG or JPEG image"]
        assert result["error"] == [""] * n + reasons
        assert result["familiar"][:n] == [e["familiar"] for e in expected]
        np.testing.assert_allclose(
            result["score"][:n], [e["score"] for e in expected], rtol=1e-5
        )
        np.testing.assert_allclose(
            result["familiarity"][:n], [e["familiarity"] for e in expected], rtol=1e-5
        )
    assert n >= 6 + 15
    # Both flags occur, so the exported reference is compared on each.
    assert set(got["greedy"]["familiar"][:n]) == {True, False}


# --- faults: a kill, a read-only run folder (a full disk: test_disk_full.py) ----

SAVED_MODEL = ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
VARIABLES = ["variables.data-00000-of-00001", "variables.index"]


def test_a_killed_export_leaves_nothing_behind_once_exported_again(
    tmp_path, monkeypatch
):
    from tiny_run import radcap_tiny, tiny_backbone, untrained_run

    import radcap.serving.export
    from radcap.core.files import PARTIAL

    run_dir = untrained_run(tmp_path)
    out = tmp_path / "models" / "export"
    command = ["export", "--run", str(run_dir), "--out", str(out)]
    killed = radcap_tiny(*command, kill_at=f"write:{out.name}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    (left,) = out.parent.iterdir()  # the whole SavedModel, under its partial name
    assert PARTIAL.fullmatch(left.name)["target"] == "export"
    assert sorted(p.name for p in left.iterdir()) == SAVED_MODEL

    monkeypatch.setattr(radcap.serving.export, "build_backbone", tiny_backbone)
    assert radcap.serving.export.export(run_dir, out) == out
    assert [p.name for p in out.parent.iterdir()] == ["export"]
    assert sorted(p.name for p in out.iterdir()) == SAVED_MODEL
    assert sorted(p.name for p in (out / "variables").iterdir()) == VARIABLES


class WrittenArchive:
    """Stands in for the traced `ExportArchive`: writes a SavedModel's file."""

    def write_out(self, path, verbose=False):
        Path(path).mkdir()
        (Path(path) / "saved_model.pb").write_text("new")


def test_an_export_to_a_link_replaces_what_it_points_to_and_keeps_the_link(
    tmp_path, monkeypatch
):
    from tiny_run import tiny_backbone, untrained_run

    import radcap.serving.export

    run_dir = untrained_run(tmp_path)
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "saved_model.pb").write_text("old")
    (models / "current").symlink_to("v1")
    monkeypatch.setattr(radcap.serving.export, "build_backbone", tiny_backbone)
    monkeypatch.setattr(
        radcap.serving.export, "_archive", lambda *args: WrittenArchive()
    )
    assert radcap.serving.export.export(run_dir, models / "current") == models / "v1"
    assert sorted(os.listdir(models)) == ["current", "v1"]  # nothing left beside
    assert os.readlink(models / "current") == "v1"
    assert (models / "v1" / "saved_model.pb").read_text() == "new"


@pytest.fixture
def read_only_copy(tmp_path):
    """`read_only_copy(folder)`: `folder` copied onto a read-only mount (root only).

    A chmod would not do: the tests run as root, and root writes anyway.
    """
    import shutil
    import subprocess

    mounted = []

    def copy(folder):
        mount = tmp_path / "read-only"
        mount.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(mount)
        shutil.copytree(folder, mount / folder.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        return mount / folder.name

    yield copy
    for mount in mounted:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_read_only_run_folder_is_exported_elsewhere_and_not_evaluated(
    tmp_path, read_only_copy
):
    from tiny_run import radcap_tiny, untrained_run

    from radcap.core.files import LOCK_FILE

    run_dir = read_only_copy(untrained_run(tmp_path / "session-1"))
    out = tmp_path / "working" / "export"
    done = radcap_tiny(
        *["export", "--run", str(run_dir), "--out", str(out), "+"],
        *["export", "--run", str(run_dir), "+"],
        *["evaluate", "--run", str(run_dir), "--root", str(tmp_path)],
    )
    assert done.stdout.splitlines()[-4:] == [
        f"Wrote {out} (1 MB): load it with tf.saved_model.load({str(out)!r})",
        "exit 0",
        "exit 2",
        "exit 2",
    ], done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"radcap export: error: [Errno 30] The run folder {run_dir} is read-only "
        "(Read-only file system). Export into a writable folder: radcap export "
        f"--run {run_dir} --out <folder>/export (in Python: export(run_dir, "
        "out=...)).",
        f"radcap evaluate: error: [Errno 30] The run folder {run_dir} is read-only "
        "(Read-only file system). Evaluation writes its results into the run "
        "folder: copy the run into a writable working folder with "
        "radcap.training.resume.copy_run(run_dir, root) (notebook 03's RESUME_FROM), "
        "then evaluate the copy.",
    ]
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == SAVED_MODEL
    assert sorted(p.name for p in out.parent.iterdir()) == ["export"]
    assert LOCK_FILE not in os.listdir(run_dir)


def test_a_beam_wider_than_the_vocabulary_is_refused_where_it_is_used(
    tiny, tmp_path, capsys, monkeypatch
):
    import importlib

    from radcap import cli
    from radcap.decoding.captioner import Captioner
    from radcap.evaluation import evaluate
    from radcap.serving.export import export

    run_dir, dataset = tiny
    captioner = Captioner.load(run_dir)
    size = captioner.vocab.size
    message = (
        f"beam={size + 1} is wider than the vocabulary: it has {size} tokens, so "
        f"the largest beam is {size}. Use a beam of {size} or less."
    )
    features, grid = np.zeros((2, 4096), "float32"), np.zeros((2, 49, 512), "float32")
    assert len(captioner.caption(features, beam=size, grid=grid)) == 2  # the widest
    with pytest.raises(ValueError) as err:
        captioner.caption(features, beam=size + 1, grid=grid)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        export(run_dir, tmp_path / "export", beam=size + 1)
    assert str(err.value) == message and not (tmp_path / "export").exists()
    booted = []  # METEOR's Java is not started for an evaluation refused
    module = importlib.import_module("radcap.evaluation.evaluate")  # not the function
    monkeypatch.setattr(module, "start_meteor", lambda: booted.append(True))
    with pytest.raises(ValueError) as err:
        evaluate(run_dir, run_dir.parents[1], beams=[1, size + 1], verbose=False)
    assert str(err.value) == message and not (run_dir / "metrics.json").exists()
    assert booted == []
    image = dataset.images("test").path.iloc[0]
    wide = ["caption", "--run", str(run_dir), "--beam", str(size + 1), image]
    assert cli.main(wide) == 2
    assert capsys.readouterr().err == f"radcap caption: error: {message}\n"


# --- a retrieval run's embed_image and embed_text signatures --------------------

EMBED_CLIENT = """
import json, sys
sys.modules["radcap"] = None
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
images = tf.constant([open(path, "rb").read() for path in sys.argv[3:]])
image = model.signatures["embed_image"](images=images)
text = model.signatures["embed_text"](texts=texts)
print(json.dumps({
    "images": image["embedding"].numpy().tolist(),
    "errors": [e.decode() for e in image["error"].numpy()],
    "texts": text["embedding"].numpy().tolist(),
    "known": text["known_words"].numpy().tolist(),
    "signatures": sorted(model.signatures),
}))
"""


def test_the_export_embeds_images_and_texts_as_the_retriever_without_radcap(
    tmp_path, monkeypatch
):
    """A retrieval run beside the captioner joins the export: its two towers,
    image bytes and strings in, equal `Retriever`'s embeddings (tiny backbone)."""
    import json
    import math
    import subprocess
    import sys

    from tiny_run import patch_tiny_backbone, untrained_run

    from radcap.data.demo import make_demo
    from radcap.data.layouts import load_demo
    from radcap.retrieval.retriever import Retriever
    from radcap.retrieval.train import retrieval_preset, train_retrieval
    from radcap.serving.export import export

    patch_tiny_backbone(monkeypatch)
    make_demo(tmp_path / "data/demo", n=20, seed=0)
    dataset = load_demo(tmp_path / "data/demo")
    config = retrieval_preset(
        "demo", demo_size=20, epochs=1, early_stopping=0, units=16, embed_dim=8,
        batch_size=8, retrieval_dim=8, extract_batch_size=4,
    )  # fmt: skip
    train_retrieval(config, dataset, tmp_path, verbose=False)
    captioner_dir = untrained_run(tmp_path, "demo")  # the same features' dataset
    out = export(captioner_dir, tmp_path / "export")  # finds the retrieval run
    texts = [
        "Small NODULE in the left lung.",
        "axial ct: a 3.5 cm mass (arrow) - right kidney",
        "zzz words it never saw",
        "",
    ]
    images = list(dataset.images("test").path)
    (tmp_path / "empty.png").write_bytes(b"")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            EMBED_CLIENT,
            str(out),
            json.dumps(texts),
            *images,
            str(tmp_path / "empty.png"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert {"embed_image", "embed_text", "greedy", "serving_default"} <= set(
        got["signatures"]
    )
    retriever = Retriever.load(config.run_dir(tmp_path))
    expected = retriever.embed_text(texts)  # (4, 8)
    np.testing.assert_allclose(got["texts"], expected, atol=1e-5)
    assert got["known"] == [len(retriever.words(t)[0]) for t in texts]
    assert min(got["known"][:2]) >= 4 and got["known"][2:] == [0, 0]
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # texts differ
    embedded = np.array(got["images"])
    np.testing.assert_allclose(embedded[:-1], retriever.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedded[:-1], axis=1), 1, atol=1e-5)
    assert got["errors"] == [""] * len(images) + ["empty file (0 bytes)"]
    assert all(math.isnan(v) for v in got["images"][-1])
