"""DICOM input: real files from pydicom's wheel, shown as a viewer shows them.

The pixels are checked against the display pipeline of DICOM PS3.3 C.11,
computed here from the header's values with numpy (never with pydicom's own
VOI functions). The commands run in this process with a small stand-in for
VGG16 (`tiny_run.tiny_backbone`); `test_dicom_phi.py` checks that nothing of
the patient comes out.
"""

import importlib.util
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from tiny_run import tiny_backbone, untrained_run

import radcap.features.backbone
from radcap import cli
from radcap.core.config import Config
from radcap.data import dicom, pixels
from radcap.data.images import ImageError, load_image
from radcap.features.cache import cache_meta

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# Decoded by pydicom itself (RLE) or with Pillow (baseline JPEG, JPEG 2000).
DECODABLE = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_jpeg.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "examples_palette.dcm",
]
# 12-bit JPEG and JPEG-LS: Pillow cannot, pylibjpeg-libjpeg (or gdcm) can.
NEEDS_LIBJPEG = ["JPEG-lossy.dcm", "JPEGLSNearLossless_08.dcm"]
LIBJPEG = "pip install pylibjpeg pylibjpeg-libjpeg"
has_libjpeg = any(
    importlib.util.find_spec(name) for name in ("libjpeg", "gdcm", "jpeg_ls")
)


def stored(path) -> np.ndarray:
    """The stored values, as pydicom decodes them (no LUT applied)."""
    return pydicom.dcmread(path).pixel_array.astype(np.float64)


def linear_window(x, centre, width) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1, as written there, to 8 bits."""
    low = centre - 0.5 - (width - 1) / 2
    high = centre - 0.5 + (width - 1) / 2
    inside = ((x - (centre - 0.5)) / (width - 1) + 0.5) * 255
    return np.round(np.where(x <= low, 0.0, np.where(x > high, 255.0, inside)))


def windowed_ct(tmp_path) -> Path:
    """CT_small with two windows, soft tissue first; it ships without one."""
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = [40, 300], [400, 1500]
    path = tmp_path / "ct_windowed.dcm"
    ds.save_as(path)
    return path


def test_a_windowed_ct_matches_the_first_window_of_its_header(tmp_path):
    path = windowed_ct(tmp_path)
    ds = pydicom.dcmread(path)
    hounsfield = stored(path) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = linear_window(hounsfield, 40.0, 400.0).astype(np.uint8)
    assert 0.05 < (expected == 0).mean() and 0.05 < (expected == 255).mean()
    got = dicom.read_dicom(path)
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    # What the backbone gets: that image, grey as RGB, resized to 224.
    rgb = pixels.array_function(224)(expected[..., None]).numpy()
    assert np.array_equal(load_image(path), rgb)


def test_without_a_window_the_range_of_the_modality_values_is_shown():
    path = FILES / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    assert "WindowCenter" not in ds and float(ds.RescaleIntercept) == -1024
    hounsfield = stored(path) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = hounsfield.min(), hounsfield.max()
    expected = np.round((hounsfield - low) / (high - low) * 255).astype(np.uint8)
    assert np.array_equal(dicom.read_dicom(path), expected)


def test_the_files_own_window_and_monochrome1_inverted(tmp_path):
    path = FILES / "MR_small.dcm"
    ds = pydicom.dcmread(path)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (600, 1600)
    window = linear_window(stored(path), 600.0, 1600.0)
    assert np.array_equal(dicom.read_dicom(path), window.astype(np.uint8))
    ds.PhotometricInterpretation = "MONOCHROME1"  # none ships: 0 is white
    ds.save_as(tmp_path / "mono1.dcm")
    inverted = dicom.read_dicom(tmp_path / "mono1.dcm").astype(int)
    assert np.abs(inverted - (255 - window)).max() <= 1  # rounding only
    assert inverted.mean() == pytest.approx(255 - window.mean(), abs=0.5)


def test_a_voi_lut_sequence_comes_before_the_window(tmp_path):
    ds = pydicom.dcmread(FILES / "MR_small.dcm")
    item = pydicom.Dataset()
    item.LUTDescriptor = [256, 0, 8]  # 256 entries from value 0, 8 bits
    item.add_new(0x00283006, "US", [255 - i for i in range(256)])  # LUT Data
    ds.VOILUTSequence = [item]  # an inverting ramp
    ds.save_as(tmp_path / "lut.dcm")
    values = np.clip(stored(tmp_path / "lut.dcm"), 0, 255)
    assert np.array_equal(dicom.read_dicom(tmp_path / "lut.dcm"), 255 - values)


def test_colour_files_come_out_as_rgb():
    rgb = dicom.read_dicom(FILES / "SC_rgb_rle.dcm").astype(int)
    assert rgb.shape == (100, 100, 3) and rgb.min() == 0 and rgb.max() == 255
    for ybr in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        assert np.abs(dicom.read_dicom(FILES / ybr).astype(int) - rgb).mean() < 1
    palette = dicom.read_dicom(FILES / "examples_palette.dcm")
    assert palette.shape == (800, 350, 3) or palette.shape == (350, 800, 3)
    assert len(np.unique(palette.reshape(-1, 3), axis=0)) > 16


def test_a_multi_frame_file_gives_the_middle_frame_or_the_one_asked(tmp_path):
    path = FILES / "SC_rgb_rle_2frame.dcm"
    frames = pydicom.dcmread(path).pixel_array
    assert not np.array_equal(frames[0], frames[1])
    assert np.array_equal(dicom.read_dicom(path), frames[1])
    assert np.array_equal(dicom.read_dicom(path, "first"), frames[0])
    assert np.array_equal(dicom.read_dicom(path, 1), frames[0])
    assert dicom.frame_note(path) == "frame 2 of 2"
    assert dicom.frame_note(path, "first") == "frame 1 of 2"
    assert dicom.frame_note(FILES / "CT_small.dcm") is None
    with pytest.raises(ImageError) as err:
        load_image(path, frame=3)
    assert err.value.reason == (
        "has 2 frame(s), no frame 3: choose 1 to 2 or 'middle' (the dicom_frame "
        "setting)"
    )
    with pytest.raises(ValueError, match=r"Config.dicom_frame=0 is invalid"):
        Config(dicom_frame=0)
    # A feature cache says which frame it holds, unless the middle one (so
    # that caches made before the setting existed stay usable).
    assert "dicom_frame" not in cache_meta(Config(), "fc2")
    assert cache_meta(Config(dicom_frame="first"), "fc2")["dicom_frame"] == "first"


def test_the_png_for_the_export_holds_the_pixels_and_nothing_else():
    path = FILES / "MR_small.dcm"
    png = dicom.to_png(path)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "L" and not image.text
        assert np.array_equal(np.asarray(image), dicom.read_dicom(path))
    assert b"CompressedSamples" in path.read_bytes()  # the patient's name
    assert b"CompressedSamples" not in png


def test_an_enhanced_file_has_each_frames_rescale_and_window(tmp_path):
    """Enhanced CT and MR keep them in functional groups, per frame or shared."""
    ds = pydicom.dcmread(FILES / "MR_small.dcm")
    values = ds.pixel_array
    del ds.WindowCenter, ds.WindowWidth
    ds.NumberOfFrames = 2
    ds.PixelData = values.tobytes() * 2
    shared, first, second = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    rescale = pydicom.Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept = 2, -100
    shared.PixelValueTransformationSequence = [rescale]
    for group, (centre, width) in ((first, (500, 1000)), (second, (1100, 2000))):
        window = pydicom.Dataset()
        window.WindowCenter, window.WindowWidth = centre, width
        group.FrameVOILUTSequence = [window]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [first, second]
    ds.save_as(tmp_path / "enhanced.dcm")
    modality = values.astype(np.float64) * 2 - 100
    for frame, (centre, width) in ((1, (500, 1000)), (2, (1100, 2000))):
        expected = linear_window(modality, centre, width).astype(np.uint8)
        got = dicom.read_dicom(tmp_path / "enhanced.dcm", frame)
        assert np.array_equal(got, expected), frame


def test_a_dicom_file_without_a_suffix_is_known_by_its_preamble(tmp_path):
    shutil.copy(FILES / "CT_small.dcm", tmp_path / "scan")
    expected = dicom.read_dicom(FILES / "CT_small.dcm")
    assert np.array_equal(dicom.read_dicom(tmp_path / "scan"), expected)
    assert load_image(tmp_path / "scan").shape == (224, 224, 3)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("MR_truncated.dcm", "its pixel data could not be decoded (damaged or "),
        ("rtplan.dcm", "a DICOM file with no image in it (no pixel data)"),
        pytest.param(
            "JPEGLSNearLossless_08.dcm",
            "its pixel data are compressed as JPEG-LS Lossy (Near-Lossless) Image "
            f"Compression, and no installed decoder could read them: {LIBJPEG}",
            marks=pytest.mark.skipif(has_libjpeg, reason="a decoder is installed"),
        ),
    ],
)
def test_a_dicom_file_that_cannot_be_shown_gets_one_line(name, reason):
    with pytest.raises(ImageError) as err:
        load_image(FILES / name)
    assert err.value.reason.startswith(reason) and "\n" not in err.value.reason


def test_without_pydicom_the_reason_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import fails
    with pytest.raises(ImageError) as err:
        load_image(FILES / "CT_small.dcm")
    assert err.value.reason == (
        "a DICOM file: reading it needs pydicom: pip install 'pydicom>=3.0' "
        "(in a clone of radcap: pip install -e '.[dicom]')"
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained run folder in a root; commands use the tiny backbone."""
    root = tmp_path_factory.mktemp("dicom")
    untrained_run(root, "tiny")
    return root


@pytest.fixture
def small_backbone(monkeypatch):
    monkeypatch.setattr(radcap.features.backbone, "build_backbone", tiny_backbone)
    monkeypatch.setattr(radcap.features.backbone, "_shared", {})


def test_real_files_are_captioned_or_refused_in_one_line(tiny, small_backbone, capsys):
    paths = [str(FILES / name) for name in DECODABLE]
    args = ["caption", "--run", "tiny", "--root", str(tiny)]
    assert cli.main([*args, *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == paths
    assert all(len(line.split("\t")) == 2 for line in lines if "2frame" not in line)
    (two,) = [line for line in lines if "2frame" in line]
    assert two.split("\t")[2] == "(frame 2 of 2)"
    assert cli.main([*args, "--frame", "first", "--json", paths[4]]) == 0
    assert '"frame": "frame 1 of 2"' in capsys.readouterr().out
    if has_libjpeg:
        return
    refused = [str(FILES / name) for name in NEEDS_LIBJPEG]
    assert cli.main([*args, *refused]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(refused)
    for path, line in zip(refused, lines):
        assert line.startswith(f"{path}\tERROR: its pixel data are compressed as ")
        assert line.endswith(f"could read them: {LIBJPEG}")
