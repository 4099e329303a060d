"""Decode any real image file into the backbone's input."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from radcap.data import pixels
from radcap.data.dicom import DicomError, is_dicom, read_dicom
from radcap.data.pixels import MAX_PIXELS

# Ends the reason of a failure that may pass (permissions, I/O): such images
# are read again the next time their split's features are asked for.
RETRY_NOTE = "(read again next time)"

# What a path is when it is not a regular file, by the `stat` test that tells.
_KINDS = (
    (stat.S_ISDIR, "is a folder, not an image file"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
    (stat.S_ISCHR, "is a device, not a regular file"),
    (stat.S_ISBLK, "is a device, not a regular file"),
)


class ImageError(ValueError):
    """An image file that cannot be used; `reason` says why in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode to `(H, W, C)` 8-bit values for `radcap.data.pixels.colour`.

    High bit depths are scaled by their actual range; alpha is kept (the
    shared `colour` turns transparent pixels black).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = pixels.stretch(np.asarray(img, dtype=np.float32))
        return np.asarray(grey, np.uint8)[..., None]
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        return np.asarray(img.convert("RGBA"))
    return np.atleast_3d(
        np.asarray(img if img.mode in ("L", "RGB") else img.convert("RGB"))
    )


def load_image(path: str | Path, size: int = 224, frame="middle") -> np.ndarray:
    """Read an image file as a float32 RGB array for the backbone.

    Handles JPEG, PNG (8 and 16 bit), grayscale, RGBA, palette, CMYK, GIF
    (first frame) and DICOM (with or without the `.dcm` suffix; see
    `radcap.data.dicom`: the file's own rescale and window, nothing of its
    header kept). 16-bit and 32-bit data are scaled by their actual min..max
    range, not clipped. Very large JPEGs are decoded at reduced resolution,
    so a 10000x10000 file does not exhaust memory. A PNG or JPEG is decoded
    and resized by `radcap.data.pixels.load`, as the exported SavedModel
    reads it; other files are decoded here and take the same colour and
    resize steps (`radcap.data.pixels`).

    Args:
        path: Image file.
        size: Side of the square output; the image is resized, not cropped.
        frame: The frame of a multi-frame DICOM file: `"middle"`, `"first"`,
            `"last"` or a frame number from 1 (see `radcap.data.dicom.choose_frame`).

    Returns:
        Array of shape `(size, size, 3)`, float32 in [0, 255], RGB order.

    Raises:
        ImageError: The file is missing, empty, truncated or not an image, or
            the path is no regular file (a folder, a named pipe, a device).
    """
    path = Path(path)
    problem = _file_problem(path)
    if problem:
        raise ImageError(path, problem)
    # PIL's own bomb check allows less than real scans need; ours is below.
    Image.MAX_IMAGE_PIXELS = 2 * MAX_PIXELS
    try:
        if is_dicom(path):
            values = read_dicom(path, frame, MAX_PIXELS)
            array = _to_array(_shrink(Image.fromarray(values), size))
        else:
            loaded = _load_png_or_jpeg(path, size)
            if loaded is not None:
                return loaded
            array = _open(path, size)
    except DicomError as err:
        raise ImageError(path, str(err)) from None
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(path, f"permission denied {RETRY_NOTE}") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image file (unknown format)") from None
    except Image.DecompressionBombError:
        raise ImageError(path, f"image too large (over {MAX_PIXELS} pixels)") from None
    except OSError as err:
        if err.errno is not None:  # the file system failed, not the decoder
            raise ImageError(path, f"{err.strerror} {RETRY_NOTE}") from None
        raise ImageError(path, f"truncated or corrupt image ({err})") from None
    except (SyntaxError, ValueError) as err:
        raise ImageError(path, f"truncated or corrupt image ({err})") from None
    except Exception as err:  # decoders raise many other types (zlib, struct...)
        raise ImageError(
            path, f"could not decode ({type(err).__name__}: {err})"
        ) from None
    return pixels.array_function(size)(array).numpy()


def _load_png_or_jpeg(path: Path, size: int) -> np.ndarray | None:
    """A PNG or JPEG through `radcap.data.pixels.load`, as the export reads it.

    None when the file is neither, or TensorFlow's decoders refuse it (a CMYK
    JPEG, a truncated file): Pillow then reads it, or says why it cannot.
    """
    import tensorflow as tf

    with path.open("rb") as f:
        data = f.read(len(pixels.PNG))
        if not data.startswith((pixels.PNG, pixels.JPEG)):
            return None
        data += f.read()
    try:
        image, error = pixels.load_function(size)(tf.constant(data))
    except tf.errors.OpError:
        return None
    return None if error.numpy() else image.numpy()


def _open(path: Path, size: int) -> np.ndarray:
    """A file PIL reads, as 8-bit values about `size` or larger (see `_shrink`)."""
    with Image.open(path) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(path, f"image too large ({img.width}x{img.height} pixels)")
        if img.format == "JPEG":  # decode at reduced size: cheap and small
            img.draft(img.mode, (size * 2, size * 2))
        img.load()
        return _to_array(_shrink(img, size))


def _file_problem(path: Path) -> str | None:
    """Why `path` is no regular file with bytes in it, or None; from `stat` alone.

    A named pipe is never opened: reading one waits for a writer, maybe forever.
    """
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "file not found"
    except OSError as err:  # permissions, a name too long, a failing disk
        return f"{err.strerror or err} {RETRY_NOTE}"
    kinds = [kind for is_kind, kind in _KINDS if is_kind(info.st_mode)]
    if kinds or not stat.S_ISREG(info.st_mode):
        return (kinds or ["is not a regular file"])[0]
    return "empty file (0 bytes)" if info.st_size == 0 else None


def _shrink(img: Image.Image, size: int) -> Image.Image:
    """Box-reduce a large image to about twice `size` before any conversion.

    A 10000x10000 16-bit scan would otherwise be converted to float at full
    size (400 MB per image). Modes that cannot be reduced (palette) are left.
    """
    factor = min(img.size) // (2 * size)
    if factor < 2:
        return img
    if img.mode.startswith("I;16"):  # PIL cannot reduce these: subsample instead
        return Image.fromarray(
            np.ascontiguousarray(np.asarray(img)[::factor, ::factor])
        )
    try:
        return img.reduce(factor)
    except ValueError:
        return img
