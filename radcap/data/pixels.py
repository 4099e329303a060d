"""Image bytes and arrays to the backbone's input, in TensorFlow operations.

Written once for the two places that turn an image into pixels:
`radcap.data.images.load_image` (the library's captions and feature caches)
and the exported SavedModel's graph (`radcap.serving.export`). A PNG or JPEG
file goes through `load` in both, so the export sees the same pixels as
`Captioner` for every image, whatever its size. Other files (DICOM, GIF,
TIFF, palette, CMYK...) are decoded by Pillow or pydicom in `load_image`;
their arrays then take the same `colour` and `resize` as the rest.

The steps, on the decoded values:

1. Shrink a large image by whole steps before anything else, so that a
   10000x10000 scan is never converted to float at full size: a JPEG is
   decoded at 1/2, 1/4 or 1/8 scale (the smallest that keeps `size`), a PNG
   keeps every n-th pixel (keeping twice `size`).
2. Colour: grey becomes RGB; 16-bit grey is stretched over its own range
   (other 16-bit data keeps its high byte, as Pillow reads it); transparent
   pixels become black, like the background of a scan.
3. Resize to `size` x `size` with the antialiased bilinear filter, rounded
   to whole grey levels (an image already that size is kept as it is).
"""

from __future__ import annotations

import functools

import numpy as np

# Above this many pixels an image is refused; real scans can be large, so
# allow up to ~16k x 16k.
MAX_PIXELS = 16_384 * 16_384
PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"
# The version of these steps, recorded in a feature cache's settings: a cache
# of other pixels is never mixed with these.
VERSION = "tf-1"


def stretch(values):
    """Values scaled by their own min..max range to whole grey levels 0..255.

    Args:
        values: float32 array or tensor of any shape (16-bit or float data).

    Returns:
        float32 of the same shape; zeros where all values are equal.
    """
    import tensorflow as tf

    values = tf.cast(values, tf.float32)
    lo, hi = tf.reduce_min(values), tf.reduce_max(values)
    return tf.where(hi > lo, tf.floor((values - lo) / (hi - lo) * 255.0), 0.0)


def eight_bit(image):
    """16-bit `(H, W, C)` values to 8 bit: grey stretched, colour its high byte."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    grey = tf.shape(image)[2] == 1
    return tf.where(grey, stretch(image), tf.floor(image / 256.0))


def colour(image):
    """`(H, W, C)` 8-bit values (C of 1 to 4) to `(H, W, 3)` float32 RGB 0..255.

    Args:
        image: Grey, grey+alpha, RGB or RGBA values.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    channels = tf.shape(image)[2]

    def rgb():
        return tf.cond(
            channels >= 3,
            lambda: image[..., :3],
            lambda: tf.tile(image[..., :1], [1, 1, 3]),
        )

    def over_black():  # transparent pixels become black, like a scan's background
        return tf.round(rgb() * image[..., channels - 1 :] / 255.0)

    return tf.cond((channels == 2) | (channels == 4), over_black, rgb)


def shrink(image, size: int):
    """Keep every n-th pixel of an image over twice `size` on its shorter side."""
    import tensorflow as tf

    step = tf.maximum(tf.reduce_min(tf.shape(image)[:2]) // (2 * size), 1)
    return image[::step, ::step]


def resize(image, size: int):
    """`(H, W, 3)` float32 0..255 to `(size, size, 3)`, whole grey levels."""
    import tensorflow as tf

    image = tf.ensure_shape(tf.cast(image, tf.float32), [None, None, 3])
    same = tf.reduce_all(tf.shape(image)[:2] == size)
    resized = tf.cond(
        same,
        lambda: image,
        lambda: tf.clip_by_value(
            tf.round(tf.image.resize(image, [size, size], antialias=True)), 0.0, 255.0
        ),
    )
    return tf.ensure_shape(resized, [size, size, 3])


def _png(data, size: int):
    import tensorflow as tf

    depth = tf.io.decode_raw(tf.strings.substr(data, 24, 1), tf.uint8)[0]

    def read(dtype):
        return tf.cast(shrink(tf.io.decode_png(data, dtype=dtype), size), tf.float32)

    image = tf.cond(
        depth == 16, lambda: eight_bit(read(tf.uint16)), lambda: read(tf.uint8)
    )
    return colour(image)


def _jpeg(data, size: int):
    import tensorflow as tf

    side = tf.reduce_min(tf.image.extract_jpeg_shape(data)[:2])
    # Decoded at the smallest scale that keeps `size` (the decoder's own
    # filtered downscaling): a fraction of the work of a full decode.
    scale = tf.reduce_sum(tf.cast(side >= size * np.array([2, 4, 8]), tf.int32))
    image = tf.switch_case(
        scale,
        [
            functools.partial(tf.io.decode_jpeg, data, channels=3, ratio=ratio)
            for ratio in (1, 2, 4, 8)
        ],
    )
    return tf.cast(image, tf.float32)  # always RGB: channels=3


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


def load(data, size: int = 224):
    """One PNG or JPEG file's bytes to `((size, size, 3) float32 RGB 0..255, error)`.

    `error` is an empty string, or why the image cannot be used (then the
    pixels are zeros): an empty file, neither PNG nor JPEG, a PNG header cut
    short, too many pixels. Bytes that fail in the decoder itself raise
    `tf.errors.InvalidArgumentError`.

    Args:
        data: Scalar `tf.string` tensor.
        size: Side of the square output.
    """
    import tensorflow as tf

    def fail(reason: str):
        return tf.zeros([size, size, 3]), tf.constant(reason)

    length = tf.strings.length(data)
    is_png = tf.strings.substr(data, 0, len(PNG)) == PNG
    is_jpeg = tf.strings.substr(data, 0, len(JPEG)) == JPEG
    readable = (is_png & (length >= 33)) | is_jpeg

    def read():
        pixels = tf.cond(is_png, lambda: _png(data, size), lambda: _jpeg(data, size))
        return resize(pixels, size), tf.constant("")

    return tf.case(
        [
            (length == 0, lambda: fail("empty file (0 bytes)")),
            (~(is_png | is_jpeg), lambda: fail("not a PNG or JPEG image")),
            (~readable, lambda: fail("truncated or corrupt image (header cut short)")),
            (
                tf.cond(
                    readable,
                    lambda: _pixel_count(data, is_png),
                    lambda: tf.constant(0, tf.int64),
                )
                > MAX_PIXELS,
                lambda: fail(f"image too large (over {MAX_PIXELS} pixels)"),
            ),
        ],
        default=read,
        exclusive=False,
    )


@functools.cache
def load_function(size: int):
    """`load` for one `size`, traced once (called eagerly from decode threads)."""
    import tensorflow as tf

    return tf.function(
        lambda data: load(data, size),
        input_signature=[tf.TensorSpec([], tf.string)],
        autograph=False,
    )


@functools.cache
def array_function(size: int):
    """`colour` then `resize` of a decoded 8-bit `(H, W, C)` array, traced once."""
    import tensorflow as tf

    return tf.function(
        lambda image: resize(colour(image), size),
        input_signature=[tf.TensorSpec([None, None, None], tf.uint8)],
        autograph=False,
    )
