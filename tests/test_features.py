"""The VGG16 feature cache: one pass, resumable, settings-checked, bad files listed."""

import importlib.metadata
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from tiny_run import patch_tiny_backbone, tiny_command

from radcap.core.config import preset
from radcap.data.demo import make_demo
from radcap.features.backbone import Extractor, WeightsError, padded_size
from radcap.features.cache import (
    FeatureCacheError,
    cache_dir,
    extract,
    load_features,
)

N, BATCH = 22, 4


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    frame = pd.read_csv(make_demo(root, n=N, seed=1))
    paths = [str(root / p) for p in frame["image"]]
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    paths[3], paths[9] = str(root / "empty.png"), str(root / "text.jpg")
    return pd.DataFrame({"image_id": [f"img{i}" for i in range(N)], "path": paths})


@pytest.fixture(scope="module")
def extractors():
    """Extractors with the tiny stand-in backbone: the cache's files, resuming
    and bad images do not depend on VGG16 (138 M weights, 4 images a second)."""
    merge = preset("demo", extract_batch_size=BATCH)
    att = merge.replace(attention=True)
    with pytest.MonkeyPatch.context() as patch:
        patch_tiny_backbone(patch)
        return {False: Extractor(merge), True: Extractor(att)}


def counted(extractor):
    calls = []
    forward = extractor.forward

    def wrapper(batch):
        calls.append(len(batch))
        return forward(batch)

    extractor.forward = wrapper
    return calls


@pytest.fixture(scope="module")
def full(images, extractors, tmp_path_factory):
    """Uninterrupted extraction, with and without the attention grid."""
    out = {}
    for attention, extractor in extractors.items():
        root = tmp_path_factory.mktemp(f"full{attention}")
        config = extractor.config
        out[attention] = (
            root,
            extract(config, images, "train", root, extractor=extractor),
        )
    return out


def test_shapes_dtype_and_files(full):
    root, cached = full[False]
    fc2 = cached["fc2"]
    assert fc2.array.shape == (N, 4096) and fc2.array.dtype == np.float16
    assert fc2.ids == [f"img{i}" for i in range(N)]
    folder = root / "features/demo/vgg16-fc2"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".radcap.lock",  # the writers' lock; no temporary file is left
        "meta.json",
        "train.ids",
        "train.npy",
        "train.skipped.csv",
    ]
    meta = json.loads((folder / "meta.json").read_text())
    keras_version = importlib.metadata.version("keras")
    assert meta["weights"] == f"random(seed=0, keras={keras_version})"
    assert meta["layer"] == "fc2"
    assert meta["image_size"] == 224 and "radcap_version" in meta


def test_unreadable_images_are_reported_not_fatal(full):
    fc2 = full[False][1]["fc2"]
    assert fc2.skipped["image_id"].tolist() == ["img3", "img9"]
    reasons = fc2.skipped["reason"].tolist()
    assert "empty file" in reasons[0] and "not an image" in reasons[1]
    assert not fc2.array[3].any() and not fc2.array[9].any()
    assert fc2.array[4].any()


@pytest.mark.parametrize("attention", [False, True])
def test_resume_gives_the_same_array(images, extractors, full, tmp_path, attention):
    extractor = extractors[attention]
    config = extractor.config
    assert (
        extract(config, images, "train", tmp_path, max_batches=2, extractor=extractor)
        is None
    )
    folder = cache_dir(config, "fc2", tmp_path)
    assert json.loads((folder / "train.progress.json").read_text())["done"] == 2 * BATCH
    calls = counted(extractor)
    resumed = extract(config, images, "train", tmp_path, extractor=extractor)
    extractor.forward = type(extractor).forward.__get__(extractor)
    assert len(calls) == -(-(N - 2 * BATCH) // BATCH)  # only the missing batches
    for layer, features in full[attention][1].items():
        np.testing.assert_array_equal(
            np.asarray(resumed[layer].array), np.asarray(features.array)
        )
    assert resumed["fc2"].skipped["image_id"].tolist() == ["img3", "img9"]
    assert not (folder / "train.partial.npy").exists()


def test_attention_runs_the_backbone_once_per_image(
    images, extractors, tmp_path, monkeypatch
):
    import radcap.features.backbone

    reads = []
    load_image = radcap.features.backbone.load_image
    monkeypatch.setattr(
        radcap.features.backbone,
        "load_image",
        lambda path, *args: reads.append(path) or load_image(path, *args),
    )
    extractor = extractors[True]
    calls = counted(extractor)
    cached = extract(extractor.config, images, "train", tmp_path, extractor=extractor)
    extractor.forward = type(extractor).forward.__get__(extractor)
    full, rest = divmod(N, BATCH)  # the short batch is padded to a power of two
    assert calls == [BATCH] * full + [padded_size(rest, BATCH)] * (rest > 0)
    assert sorted(reads) == sorted(images["path"])  # every file read once
    assert cached["block5_pool"].array.shape == (N, 49, 512)
    assert cached["block_means"].array.shape == (N, 1472)
    assert set(cached) == {"fc2", "block_means", "block5_pool"}


def test_attention_fc2_matches_plain_fc2(full):
    np.testing.assert_array_equal(
        np.asarray(full[True][1]["fc2"].array), np.asarray(full[False][1]["fc2"].array)
    )


def test_a_cache_from_other_settings_is_refused(images, full):
    root = full[False][0]
    other = preset("demo", extract_batch_size=BATCH, seed=7)
    with pytest.raises(FeatureCacheError, match="other settings.*weights"):
        extract(other, images, "train", root)
    with pytest.raises(FeatureCacheError, match="other settings"):
        load_features(other, "train", root=root)


def test_a_cache_of_pillow_resized_pixels_is_refused_as_stale(images, full, tmp_path):
    """A cache made before `radcap.data.pixels` has no "pixels" in its settings."""
    root = tmp_path / "old"
    shutil.copytree(full[False][0], root)
    meta_path = root / "features/demo/vgg16-fc2/meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["pixels"]
    meta_path.write_text(json.dumps(meta))
    config = preset("demo", extract_batch_size=BATCH)
    with pytest.raises(
        FeatureCacheError, match="pixels: cache has None, asked for 'tf-1'"
    ):
        load_features(config, "train", root=root)


def test_a_changed_dataset_is_refused(images, full):
    root, _ = full[False]
    more = pd.concat([images, pd.DataFrame({"image_id": ["new"], "path": ["x.png"]})])
    with pytest.raises(FeatureCacheError, match="lacks 1 of the 23 images"):
        extract(preset("demo", extract_batch_size=BATCH), more, "train", root)


def test_missing_weights_file_names_the_ways_out(tmp_path):
    with pytest.raises(WeightsError, match="not found.*'imagenet'.*None"):
        Extractor(preset("demo", weights=str(tmp_path / "nope.h5")))


def test_layers_that_list_different_images_are_refused(images, full, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(full[True][0], root)
    config = preset("demo", extract_batch_size=BATCH, attention=True)
    ids = cache_dir(config, "block5_pool", root) / "train.ids"
    ids.write_text("".join(f"{i}\n" for i in reversed(ids.read_text().split())))
    with pytest.raises(FeatureCacheError, match="different images.*block5_pool"):
        extract(config, images, "train", root)


def test_one_decode_worker_does_not_deadlock(images, extractors, tmp_path):
    import copy

    # The module's backbone with one decode thread (building VGG16 again
    # would take longer than the extraction).
    extractor = copy.copy(extractors[False])
    extractor.workers = 1
    config = extractor.config
    cached = extract(config, images, "train", tmp_path, extractor=extractor)
    assert cached["fc2"].array.shape == (N, 4096)


def test_an_empty_split_caches_at_once(tmp_path):
    config = preset("demo")
    none = pd.DataFrame({"image_id": [], "path": []})
    cached = extract(config, none, "test", tmp_path, extractor=object())
    assert cached["fc2"].array.shape == (0, 4096) and cached["fc2"].ids == []
    folder = cache_dir(config, "fc2", tmp_path)
    assert not (folder / "test.progress.json").exists()


def test_a_passing_read_error_is_named_and_retried_next_time(
    images, extractors, tmp_path, monkeypatch
):
    import radcap.data.images

    extractor = extractors[False]
    config = extractor.config
    locked = images["path"][5]
    real_open = radcap.data.images.Path.open

    def refuse(path, *args, **kwargs):  # where load_image opens a PNG or JPEG
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(radcap.data.images.Path, "open", refuse)
    first = extract(config, images, "train", tmp_path, extractor=extractor)["fc2"]
    reasons = dict(zip(first.skipped["image_id"], first.skipped["reason"]))
    assert reasons["img5"] == "permission denied (read again next time)"
    assert not first.array[5].any()

    monkeypatch.setattr(radcap.data.images.Path, "open", real_open)  # fixed
    again = extract(config, images, "train", tmp_path, extractor=extractor)["fc2"]
    assert again.skipped["image_id"].tolist() == ["img3", "img9"]  # the broken ones
    assert again.array[5].any()
    uninterrupted = extract(
        config, images, "train", tmp_path / "b", extractor=extractor
    )
    np.testing.assert_array_equal(again.array, uninterrupted["fc2"].array)


# Killed and concurrent extractions, through the command as a user runs it.

EXTRACT = ["extract", "--split", "train", "--set", "demo_size=24"]
EXTRACT += ["--set", "extract_batch_size=4"]


def radcap_command(root, kill_at=None):
    """`radcap extract` started as a real process (forked: tests/forked.py),
    with the tiny stand-in backbone."""
    import os

    from forked import shared

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("RADCAP_KILL_AT", None)
    if kill_at:
        env["RADCAP_KILL_AT"] = kill_at
    command = tiny_command(*EXTRACT, "--root", root)
    return shared().popen(command, env=env)


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory):
    """An uninterrupted extraction of the small demo's train split."""
    root = tmp_path_factory.mktemp("reference")
    process = radcap_command(root)
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    return root / "features/demo/vgg16-fc2"


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at",
    [
        "write:train.progress.json@2",  # mid-split, a batch written, not noted
        "write:train.ids",  # the arrays and the skip list done, the ids not yet
    ],
)
def test_a_killed_extraction_resumes_to_the_same_cache(
    reference_cache, tmp_path, kill_at
):
    killed = radcap_command(tmp_path, kill_at)
    killed.communicate()
    assert killed.returncode == -9  # SIGKILL at the chosen moment
    rerun = radcap_command(tmp_path)
    out, err = rerun.communicate()
    assert rerun.returncode == 0, err[-2000:]
    folder = tmp_path / "features/demo/vgg16-fc2"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in reference_cache.iterdir())
    np.testing.assert_array_equal(
        np.load(folder / "train.npy"), np.load(reference_cache / "train.npy")
    )
    for name in ("train.ids", "train.skipped.csv", "meta.json"):
        assert (folder / name).read_text() == (reference_cache / name).read_text()


@pytest.mark.slow
def test_two_extractions_of_one_cache_one_runs_the_other_says_why(tmp_path):
    from radcap.data.demo import make_demo

    make_demo(tmp_path / "data/demo", n=24, seed=0)  # both start at extraction
    first, second = radcap_command(tmp_path), radcap_command(tmp_path)
    results = [p.communicate() + (p.returncode,) for p in (first, second)]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], [err[-1500:] for _, err, _ in results]
    refused = next(err for _, err, code in results if code == 2)
    assert "is in use by another radcap process (pid" in refused
    assert "vgg16-fc2" in refused and "Traceback" not in refused
    again = radcap_command(tmp_path)
    _, err = again.communicate()
    assert again.returncode == 0, err[-2000:]
