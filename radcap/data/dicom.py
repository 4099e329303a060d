"""DICOM files as a radiologist's viewer shows them, and nothing of the patient.

`radcap.data.images` reads every image file and hands DICOM files here.
pydicom is the optional `dicom` extra (`pip install -e '.[dicom]'` in a
clone), so it is imported only when a DICOM file is read; without it such a
file gets one line naming the extra.

Pixels go through the display pipeline of DICOM PS3.3 C.11 (C.7.6.3.1.2 for
MONOCHROME1): stored values -> modality LUT (rescale slope and intercept, or
the Modality LUT Sequence) -> VOI (the first VOI LUT, else the first window
centre/width, else the min..max of the modality values) -> inverted for
MONOCHROME1 -> 8 bits. Colour files (RGB, YBR, palette colour) become 8-bit
RGB. A multi-frame file gives one frame: `choose_frame` says which; an
enhanced one (Enhanced CT, MR) has that frame's rescale and window from its
functional groups.

Nothing of the patient leaves this module: only the pixel-module attributes
are read, no header value enters a message, pydicom's exception texts are
never shown (they may quote header values) and its warnings and log records
are kept from the console (`_quiet`).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = (".dcm", ".dicom", ".dic")
EXTRA = "pip install 'pydicom>=3.0' (in a clone of radcap: pip install -e '.[dicom]')"
FRAMES = ("middle", "first", "last")  # or a frame number, 1 for the first
# The packages that decode a compressed transfer syntax, by its UID's start;
# pydicom decodes RLE and deflate itself, and baseline JPEG with Pillow.
_DECODERS = {
    "1.2.840.10008.1.2.4.8": "pip install pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pip install pylibjpeg pylibjpeg-openjpeg",  # J2K
    "1.2.840.10008.1.2.4.20": "pip install pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.4.": "pip install pylibjpeg pylibjpeg-libjpeg",  # JPEG
}


class DicomError(ValueError):
    """A DICOM file that cannot be shown; the text holds no header value."""


def is_dicom(path: str | Path, head: bytes | None = None) -> bool:
    """Whether a file is DICOM: a DICOM suffix, or `DICM` after its 128-byte preamble.

    Args:
        path: The file.
        head: Its first 132 bytes, when already read.
    """
    if Path(path).suffix.lower() in SUFFIXES:
        return True
    if head is None:
        with open(path, "rb") as file:
            head = file.read(132)
    return head[128:132] == b"DICM"


def check_frame(frame) -> None:
    """Raise ValueError unless `frame` is one of `FRAMES` or a number from 1."""
    if frame in FRAMES:
        return
    if isinstance(frame, int) and not isinstance(frame, bool) and frame >= 1:
        return
    raise ValueError(
        f"DICOM frame {frame!r} is invalid: expected 'middle', 'first', 'last' or "
        "a frame number (1 is the first)."
    )


def choose_frame(frames: int, frame="middle") -> int:
    """The 0-based index of the frame to read among `frames` (see `FRAMES`).

    Raises:
        DicomError: `frame` is a number past the last frame.
    """
    check_frame(frame)
    if frame == "middle":
        return frames // 2
    if frame in ("first", "last"):
        return 0 if frame == "first" else frames - 1
    if frame > frames:
        raise DicomError(
            f"has {frames} frame(s), no frame {frame}: choose 1 to {frames} or "
            "'middle' (the dicom_frame setting)"
        )
    return frame - 1


def frame_note(path: str | Path, frame="middle") -> str | None:
    """ "frame 2 of 3" for a multi-frame DICOM file; None for any other file.

    Reads the header only. The note holds counts, never a header value.
    """
    try:
        if not is_dicom(path):
            return None
        pydicom = _quiet()
        header = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        frames = _frames(header)
        if frames < 2:
            return None
        return f"frame {choose_frame(frames, frame) + 1} of {frames}"
    except Exception:  # unreadable: the image's own error says why
        return None


def read_dicom(path: str | Path, frame="middle", max_pixels: int | None = None):
    """A DICOM file's pixels as a viewer shows them, as 8-bit grey or RGB.

    Args:
        path: A DICOM file (see `is_dicom`).
        frame: Which frame of a multi-frame file (see `choose_frame`).
        max_pixels: Refuse images with more pixels per frame than this.

    Returns:
        `(rows, columns)` uint8 for grey images, `(rows, columns, 3)` uint8
        RGB for colour ones.

    Raises:
        DicomError: pydicom is missing, the file is no readable DICOM image,
            its compression has no decoder installed, or `frame` does not
            exist. The message holds no header value.
    """
    pydicom = _quiet()
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        raise DicomError("not a readable DICOM file (damaged or truncated)") from None
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        raise DicomError("a DICOM file with no image in it (no pixel data)")
    rows, columns = int(ds.Rows), int(ds.Columns)
    if max_pixels is not None and rows * columns > max_pixels:
        raise DicomError(f"image too large ({columns}x{rows} pixels)")
    frames = _frames(ds)
    index = choose_frame(frames, frame)
    try:
        arr = pydicom.pixels.pixel_array(ds, index=index)
    except Exception:
        raise DicomError(_decode_problem(ds)) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = pydicom.pixels.apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_uint8(rgb / float(2**bits - 1))
    if arr.ndim == 3:  # RGB, or YBR that pydicom converted to RGB
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        return _to_uint8(arr / float(2**bits - 1))
    view = frame_view(ds, index)
    values = pydicom.pixels.apply_modality_lut(arr, view).astype(np.float64)
    shown = voi(values, view)
    if photometric == "MONOCHROME1":  # 0 is white: invert for display
        shown = 1.0 - shown
    return _to_uint8(shown)


def to_png(path: str | Path, frame="middle") -> bytes:
    """A DICOM file's pixels as PNG bytes, as `read_dicom` shows them.

    For `radcap export`'s SavedModel, which takes PNG or JPEG bytes. The PNG
    holds the pixels alone: no header value goes into it.
    """
    buffer = io.BytesIO()
    Image.fromarray(read_dicom(path, frame)).save(buffer, format="PNG")
    return buffer.getvalue()


# The rescale and window attributes, at the top of a file or, in an enhanced
# multi-frame file, in each frame's functional groups.
_LUT_KEYWORDS = (
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def frame_view(ds, index: int):
    """The rescale and window of frame `index`, as a dataset of those alone.

    An enhanced multi-frame file (Enhanced CT, MR...) keeps them in its
    shared and per-frame functional groups; the frame's own ones win.
    """
    import pydicom  # imported already by `_quiet`: the optional extra

    view = pydicom.Dataset()
    for keyword in _LUT_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    groups = list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups += [per_frame[index]] if index < len(per_frame) else []
    for group in groups:
        for name in _FRAME_GROUPS:
            for element in (group.get(name) or [None])[0] or []:
                if element.keyword in _LUT_KEYWORDS:
                    view[element.tag] = element
    return view


def voi(values: np.ndarray, ds) -> np.ndarray:
    """Modality values to display values in [0, 1] (DICOM PS3.3 C.11.2).

    The first item of the VOI LUT Sequence when there is one; else the
    first window centre and width, by the file's VOI LUT Function (LINEAR,
    the default, LINEAR_EXACT or SIGMOID); else the values' min..max.
    """
    table = ds.get("VOILUTSequence")
    if table:
        return _lut(values, table[0])
    centre = _first(ds.get("WindowCenter"))
    width = _first(ds.get("WindowWidth"))
    if centre is None or width is None or width <= 0:
        lo, hi = float(values.min()), float(values.max())
        return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # LINEAR with width 1: a threshold at centre - 0.5
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _lut(values: np.ndarray, item) -> np.ndarray:
    """A VOI LUT Sequence item applied to modality values, in [0, 1]."""
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # 0 means 2**16 entries
    data = item.LUTData
    if isinstance(data, bytes):
        data = np.frombuffer(data, "<u2" if bits > 8 else "u1")
    table = np.asarray(data, np.float64).reshape(-1)[:entries]
    if first >= 32768 and values.min() < 0:  # a signed first value read as US
        first -= 65536
    index = np.clip(np.round(values).astype(np.int64) - first, 0, len(table) - 1)
    return table[index] / float(2**bits - 1)


def _first(value) -> float | None:
    """The first of a possibly multi-valued number; None when absent or empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, (int, float, str)):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _to_uint8(shown: np.ndarray) -> np.ndarray:
    return np.round(np.clip(shown, 0.0, 1.0) * 255.0).astype(np.uint8)


def _decode_problem(ds) -> str:
    """Why the pixel data would not decode, and what to install when that helps."""
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        install = next(
            (pip for start, pip in _DECODERS.items() if syntax.startswith(start)),
            "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg",
        )
        return (
            f"its pixel data are compressed as {syntax.name}, and no installed "
            f"decoder could read them: {install}"
        )
    return "its pixel data could not be decoded (damaged or truncated)"


class _NoRecords(logging.Filter):
    def filter(self, record) -> bool:
        return False


def _quiet():
    """pydicom, imported, with its warnings and log records kept off every output.

    pydicom warns about odd values and logs them; a warning or a record can
    quote a header value, such as a patient's name. The warning filter is put
    first again on every call, as test runners and notebooks reset the
    filters; it is thread-safe, where `warnings.catch_warnings` is not.

    Raises:
        DicomError: pydicom is not installed.
    """
    try:
        import pydicom  # lazy: the optional `dicom` extra
        import pydicom.pixels
    except ImportError:
        raise DicomError(f"a DICOM file: reading it needs pydicom: {EXTRA}") from None
    warnings.filterwarnings("ignore", module=r"(pydicom|radcap\.dicom)(\.|$)")
    logger = logging.getLogger("pydicom")
    logger.propagate = False  # records stop at pydicom's own (null) handler
    if not any(isinstance(f, _NoRecords) for f in logger.filters):
        logger.addFilter(_NoRecords())
    return pydicom
