"""Decoding real image files of every common kind."""

import os
import socket
import threading

import numpy as np
import pytest
from PIL import Image

from radcap.data.images import ImageError, load_image


def save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_grayscale_png_becomes_rgb(tmp_path):
    arr = np.tile(np.arange(224, dtype=np.uint8), (224, 1))
    out = load_image(save(tmp_path, "g.png", Image.fromarray(arr, "L")))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], arr)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16bit_is_scaled_by_its_range_not_clipped(tmp_path):
    arr = np.full((10, 10), 1000, np.uint16)
    arr[:, 5:] = 3000
    out = load_image(save(tmp_path, "d.png", Image.fromarray(arr)), size=10)
    assert out[0, 0, 0] == 0 and out[0, 9, 0] == 255


def test_rgba_composited_over_black(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 200
    arr[:, 4:, 3] = 255  # left half transparent
    out = load_image(save(tmp_path, "a.png", Image.fromarray(arr, "RGBA")), size=8)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 7].tolist() == [200, 0, 0]


def test_palette_cmyk_gif_and_one_pixel(tmp_path):
    rgb = Image.new("RGB", (30, 20), (10, 120, 240))
    for name, image, kwargs in [
        ("p.png", rgb.convert("P"), {}),
        ("c.jpg", rgb.convert("CMYK"), {"quality": 95}),
        ("g.gif", rgb.convert("P"), {}),
        ("one.png", Image.new("L", (1, 1), 77), {}),
    ]:
        out = load_image(save(tmp_path, name, image, **kwargs), size=16)
        assert out.shape == (16, 16, 3)
        assert out.std(axis=(0, 1)).max() < 12  # a flat colour stays flat
    assert load_image(tmp_path / "one.png", 4)[0, 0].tolist() == [77, 77, 77]


def test_huge_jpeg_is_decoded_reduced(tmp_path):
    big = Image.new("L", (6000, 6000), 90)
    out = load_image(save(tmp_path, "big.jpg", big), size=32)
    assert out.shape == (32, 32, 3) and abs(out.mean() - 90) < 2


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "file not found"),
        (b"", "empty file (0 bytes)"),
        (b"this is text, not a picture", "not an image file"),
    ],
)
def test_unusable_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert reason in err.value.reason and str(path) in str(err.value)


def make_fifo(path):
    os.mkfifo(path)


def make_socket(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the socket file stays after the socket closes


@pytest.mark.parametrize(
    "make, reason",
    [
        (make_fifo, "is a named pipe (FIFO), not a regular file"),
        (make_socket, "is a socket, not a regular file"),
        (os.mkdir, "is a folder, not an image file"),
        (None, "is a device, not a regular file"),  # /dev/null
    ],
    ids=["fifo", "socket", "folder", "device"],
)
def test_a_path_that_is_no_regular_file_is_said_for_what_it_is(tmp_path, make, reason):
    path = "/dev/null" if make is None else tmp_path / "x.png"
    if make is not None:
        make(path)
    errors = []

    def load():  # in a thread: a named pipe opened for reading would block
        with pytest.raises(ImageError) as err:
            load_image(path)
        errors.append(err.value)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "load_image blocked on it"
    assert [(e.path, e.reason) for e in errors] == [(str(path), reason)]


def test_truncated_jpeg(tmp_path):
    path = save(tmp_path, "t.jpg", Image.effect_noise((300, 300), 50).convert("RGB"))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path)
