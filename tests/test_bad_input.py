"""The whole bad-input list, walked through a CSV dataset and feature extraction.

Each row lands either in the manifest (and decodes to a valid backbone input)
or in a skip report with its reason; nothing stops the rest.
"""

import numpy as np
import pytest
from PIL import Image
from tiny_run import patch_tiny_backbone

from radcap.core.config import preset
from radcap.data.images import load_image
from radcap.data.layouts import load_csv
from radcap.features.cache import extract


def write_images(folder):
    folder.mkdir()
    rgb = Image.new("RGB", (64, 48), (30, 140, 220))
    Image.new("L", (40, 40), 100).save(folder / "good.png")
    Image.new("L", (40, 40), 150).save(folder / "other.png")
    (folder / "zero.jpg").write_bytes(b"")
    noise = Image.effect_noise((300, 300), 60).convert("RGB")
    noise.save(folder / "truncated.jpg")
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "text.jpg").write_text("<html>not an image</html>")
    ramp = np.linspace(1000, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "gray16.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1], rgba[:, 16:, 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    rgb.convert("P").save(folder / "palette.png")
    rgb.convert("P").save(folder / "anim.gif")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("L", (1, 1), 200).save(folder / "one.png")
    Image.new("L", (10_000, 10_000), 80).save(folder / "huge.png")


ROWS = [  # image, caption (bytes), manifest outcome
    ("good.png", b"a normal scan", "kept"),
    ("good.png", b"the same image, another caption", "kept"),
    ("zero.jpg", b"a scan", "empty image file (0 bytes)"),
    ("missing.jpg", b"a scan", "missing image file"),
    ("truncated.jpg", b"a scan", "kept"),
    ("text.jpg", b"a scan", "kept"),
    ("gray16.png", b"sixteen bit", "kept"),
    ("rgba.png", b"with alpha", "kept"),
    ("palette.png", b"palette", "kept"),
    ("anim.gif", b"a gif", "kept"),
    ("cmyk.jpg", b"cmyk", "kept"),
    ("one.png", b"one pixel", "kept"),
    ("huge.png", b"very large", "kept"),
    ("other.png", b"caf\xe9 \xff latin-1 bytes", "caption is not valid UTF-8"),
    ("other.png", b" ... !!! ", "caption has no words (only punctuation)"),
    ("other.png", b"   ", "empty caption"),
    ("../../etc/passwd", b"escape", "path outside dataset root"),
    ("/etc/passwd", b"absolute", "path outside dataset root"),
]
UNREADABLE = {"truncated.jpg": "truncated or corrupt", "text.jpg": "not an image file"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    write_images(root / "images")
    lines = [b"image,caption,split"]
    for image, caption, _ in ROWS:
        lines.append(
            b"images/" + image.encode() + b',"' + caption + b'",train'
            if not image.startswith(("/", ".."))
            else image.encode() + b',"' + caption + b'",train'
        )
    (root / "captions.csv").write_bytes(b"\n".join(lines) + b"\n")
    return load_csv(root / "captions.csv")


def test_every_row_is_kept_or_skipped_with_its_reason(dataset):
    skipped = dataset.skipped
    assert len(dataset.manifest) + len(skipped) == len(ROWS)
    expected_skips = sorted(outcome for _, _, outcome in ROWS if outcome != "kept")
    assert sorted(skipped["reason"]) == expected_skips
    kept = dataset.manifest
    assert (kept["image_id"] == "images/good.png").sum() == 2  # two captions, one image
    assert kept["caption"].str.len().min() > 0


def test_odd_but_valid_images_decode_to_backbone_input(dataset):
    for path in dataset.images("train")["path"]:
        name = path.rsplit("/", 1)[-1]
        if name in UNREADABLE:
            continue
        image = load_image(path)
        assert image.shape == (224, 224, 3) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 255
    gray16 = load_image(dataset.root / "images/gray16.png")
    assert gray16.min() == 0 and gray16.max() == 255  # scaled by range, not clipped
    assert load_image(dataset.root / "images/one.png")[0, 0].tolist() == [200] * 3
    assert load_image(dataset.root / "images/huge.png").mean() == pytest.approx(
        80, abs=1
    )


def test_unreadable_images_are_reported_by_extraction(dataset, tmp_path, monkeypatch):
    patch_tiny_backbone(monkeypatch)  # the reports do not depend on VGG16
    config = preset("demo", dataset="bad", extract_batch_size=16)
    images = dataset.images("train")
    fc2 = extract(config, images, "train", tmp_path)["fc2"]
    reasons = dict(zip(fc2.skipped["image_id"], fc2.skipped["reason"]))
    assert sorted(reasons) == sorted(f"images/{n}" for n in UNREADABLE)
    for name, words in UNREADABLE.items():
        assert words in reasons[f"images/{name}"]
    good = [i for i, image_id in enumerate(fc2.ids) if image_id not in reasons]
    assert len(good) == len(images) - 2 and np.abs(fc2.array[good]).sum(1).min() > 0


def test_wrong_columns_are_refused_naming_both(tmp_path):
    (tmp_path / "c.csv").write_text("file,text\na.png,hello\n")
    with pytest.raises(ValueError) as err:
        load_csv(tmp_path / "c.csv")
    assert "file" in str(err.value) and "image" in str(err.value)
    assert "caption" in str(err.value)


def test_duplicate_image_ids_for_different_files(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("good.png", "other.png"):
        Image.new("L", (8, 8), 50).save(tmp_path / "images" / name)
    (tmp_path / "c.csv").write_text(
        "image_id,image,caption,split\n"
        "x,images/good.png,one,train\nx,images/other.png,two,train\n"
    )
    dataset = load_csv(tmp_path / "c.csv")
    assert dataset.manifest["path"].str.endswith("good.png").tolist() == [True]
    assert dataset.skipped["reason"].tolist() == [
        "image id already used for another file"
    ]
