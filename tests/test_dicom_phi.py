"""Nothing of the patient comes out of radcap: planted header values, searched for.

Real DICOM files from pydicom's wheel get a distinctive value in every
patient, physician, institution, date and identifier field; a small dataset
of them then goes through `radcap extract`, `train`, `evaluate`, `caption`
and `caption --json`, and two of them through the web page (Streamlit's
`AppTest`, in this process). Every file radcap wrote and everything it
printed, logged or warned is searched for each value. The commands run in
this process with a small stand-in for VGG16 (`tiny_run.tiny_backbone`).
"""

import contextlib
import io
import logging
import warnings
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from streamlit.testing.v1 import AppTest
from tiny_run import tiny_backbone

import radcap.features.backbone
from radcap import cli
from radcap.serving import app

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
UID = "1.2.826.0.1.3680043.9.7133.424242"
# Distinctive values for the patient's, the staff's and the institution's
# fields; a person's name as FAMILY^GIVEN.
PLANTED = {
    "PatientName": "Qzfamilyname^Qzgivenname",
    "PatientID": "QZPID908172",
    "IssuerOfPatientID": "Qzissuerofid",
    "OtherPatientIDs": "QZOTHERID5511",
    "OtherPatientNames": "Qzothername",
    "PatientBirthName": "Qzbirthname",
    "PatientMotherBirthName": "Qzmothername",
    "PatientBirthDate": "18610523",
    "PatientBirthTime": "013717.4242",
    "PatientSex": "QZSEX",
    "PatientAge": "097Y",
    "PatientSize": "2.17171",
    "PatientWeight": "71.4242",
    "PatientAddress": "Qzstreet Lane 77",
    "PatientTelephoneNumbers": "QZTEL4455",
    "PatientComments": "Qzcomment about the patient",
    "AdditionalPatientHistory": "Qzhistoryofillness",
    "MedicalRecordLocator": "Qzrecordlocator",
    "Occupation": "QZOCCUPATION",
    "EthnicGroup": "QZETHNIC",
    "ReferringPhysicianName": "Qzreferrer^Qzrefgiven",
    "PerformingPhysicianName": "Qzperformer",
    "PhysiciansOfRecord": "Qzrecorddoctor",
    "NameOfPhysiciansReadingStudy": "Qzreaderdoctor",
    "OperatorsName": "Qzoperatorname",
    "InstitutionName": "Qzinstitution Hospital",
    "InstitutionAddress": "Qzinstitution Road 5",
    "InstitutionalDepartmentName": "Qzdepartment",
    "StationName": "QZSTATION01",
    "AccessionNumber": "QZACC441199",
    "StudyID": "QZSTUDY93",
    "StudyDate": "18620614",
    "SeriesDate": "18630715",
    "AcquisitionDate": "18640816",
    "ContentDate": "18650917",
    "InstanceCreationDate": "18661018",
    "StudyTime": "021819.5353",
    "SeriesTime": "031920.6464",
    "StudyInstanceUID": f"{UID}.1",
    "SeriesInstanceUID": f"{UID}.2",
    "SOPInstanceUID": f"{UID}.3",
    "FrameOfReferenceUID": f"{UID}.4",
}
# Source file, written as, split, caption; `None`: no suffix (DICM preamble).
DATASET = [
    ("CT_small.dcm", "ct_chest.dcm", "train", "ct of the chest"),
    ("MR_small.dcm", "mr_head.dcm", "train", "mr of the head"),
    ("MR_small_RLE.dcm", "mr_rle.dcm", "train", "mr of the head"),
    ("SC_rgb_rle.dcm", "rgb_bars.dcm", "train", "colour bars"),
    ("SC_rgb_jpeg_dcmtk.dcm", "rgb_jpeg.dcm", "train", "colour bars"),
    ("MR_small_jp2klossless.dcm", "mr_j2k.dcm", "train", "mr of the head"),
    ("MR_small.dcm", "mr_mono1.dcm", "validation", "mr of the head inverted"),
    ("JPEG2000.dcm", "j2k_scan.dcm", "validation", "a scan"),
    ("SC_rgb_rle_2frame.dcm", "two_frames.dcm", "test", "colour bars"),
    ("CT_small.dcm", "ct_noext", "test", "ct of the chest"),
]


def needles() -> set[str]:
    """Every planted value as it could be written: each name part, ISO dates."""
    out = set()
    for keyword, value in PLANTED.items():
        out.update(part for part in value.split("^"))
        if keyword.endswith("Date"):
            out.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    return {n.lower() for n in out}


def plant(source: str, path: Path, monochrome1: bool = False) -> None:
    ds = pydicom.dcmread(FILES / source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values on purpose (PatientSex)
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)


def leaks(root: Path, skip: Path, texts: dict[str, str]) -> list[tuple[str, str]]:
    """`(where, value)` for each planted value in a file under `root` or a text."""
    found = []
    sources = {name: text.encode() for name, text in texts.items()}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if skip not in path.parents:  # the DICOM files themselves
            sources[str(path.relative_to(root))] = path.read_bytes()
    for where, data in sources.items():
        data = data.lower()
        found += [(where, n) for n in sorted(needles()) if n.encode() in data]
    return found


@contextlib.contextmanager
def recorded():
    """stdout, stderr, every log record and every warning, as texts."""
    texts = {"stdout": io.StringIO(), "stderr": io.StringIO(), "log": io.StringIO()}
    handler = logging.StreamHandler(texts["log"])
    logging.getLogger().addHandler(handler)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        with (
            contextlib.redirect_stdout(texts["stdout"]),
            contextlib.redirect_stderr(texts["stderr"]),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            yield texts
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    for name, buffer in list(texts.items()):
        texts[name] = buffer.getvalue()
    texts["warnings"] = "\n".join(str(w.message) for w in caught)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The planted dataset through extract, train, evaluate and caption."""
    root = tmp_path_factory.mktemp("phi")
    folder = root / "data" / "dcm"
    folder.mkdir(parents=True)
    for source, name, _, _ in DATASET:
        plant(source, folder / name, monochrome1=name == "mr_mono1.dcm")
    rows = [(name, caption, split) for _, name, split, caption in DATASET]
    table = pd.DataFrame(rows, columns=["image", "caption", "split"])
    table.to_csv(folder / "captions.csv", index=False)
    settings = "source=csv dataset=dcm units=16 embed_dim=8 epochs=1 beam=2"
    settings += " early_stopping=0 extract_batch_size=4"
    config = ["--run", "dcm", "--root", str(root)]
    for setting in settings.split():
        config += ["--set", setting]
    images = [str(folder / name) for _, name, split, _ in DATASET if split == "test"]
    run = ["--run", "dcm", "--root", str(root)]
    commands = [
        ["extract", *config],
        ["train", *config],
        ["evaluate", *run, "--no-meteor"],
        ["caption", *run, *images],
        ["caption", "--json", *run, *images],
    ]
    with pytest.MonkeyPatch.context() as patch, recorded() as texts:
        patch.setattr(radcap.features.backbone, "build_backbone", tiny_backbone)
        patch.setattr(radcap.features.backbone, "_shared", {})
        statuses = [cli.main(command) for command in commands]
    return root, folder, statuses, texts


def test_nothing_of_the_patient_in_what_the_commands_write_or_print(pipeline):
    root, folder, statuses, texts = pipeline
    assert statuses == [0, 0, 0, 0, 0], texts["stderr"][-2000:]
    out = texts["stdout"]
    for split, n in (("train", 6), ("validation", 2), ("test", 2)):
        assert f"{split}: {n} images, 0 unreadable" in out
    assert f"{folder / 'two_frames.dcm'}\t" in out and "\t(frame 2 of 2)\n" in out
    assert f"{folder / 'ct_noext'}\t" in out
    assert '"frame": "frame 2 of 2"' in out and '"frame": null' in out
    written = [p for p in root.rglob("*") if p.is_file() and folder not in p.parents]
    assert any(p.name.endswith(".npy") for p in written)  # features
    assert any(p.suffix == ".md" for p in written)  # the report
    assert leaks(root, folder, texts) == []


def test_the_search_finds_every_planted_value_in_a_file(pipeline, tmp_path):
    root, folder, _, _ = pipeline
    (tmp_path / "copy.dcm").write_bytes((folder / "mr_head.dcm").read_bytes())
    found = {value for where, value in leaks(tmp_path, folder, {})}
    iso_dates = {n for n in needles() if n.count("-") == 2}
    assert found == needles() - iso_dates  # DICOM writes dates as YYYYMMDD
    dates = {"dates": "born 1861-05-23"}
    assert leaks(tmp_path / "none", folder, dates) == [("dates", "1861-05-23")]


def test_nothing_of_the_patient_on_the_web_page(pipeline, monkeypatch):
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    root, folder, _, _ = pipeline
    downloads = {}

    class Recording(MemoryMediaFileStorage):
        def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
            downloads[filename] = path_or_data
            return super().load_and_get_id(path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recording)
    monkeypatch.setattr(radcap.features.backbone, "build_backbone", tiny_backbone)
    monkeypatch.setattr(radcap.features.backbone, "_shared", {})
    monkeypatch.setenv(app.RUN_ENV, str(root / "checkpoints" / "dcm"))
    names = ["two_frames.dcm", "ct_chest.dcm"]
    with recorded() as texts:
        page = AppTest.from_file(str(app.PAGE), default_timeout=120).run()
        files = [(n, (folder / n).read_bytes(), "application/dicom") for n in names]
        page.file_uploader[0].set_value(files)
        page.run()
    assert len(page.exception) == 0 and len(page.error) == 0
    assert [s.value for s in page.subheader] == [n.replace("_", "\\_") for n in names]
    shown = [
        str(element.value)
        for kind in ("title", "markdown", "caption", "info", "warning", "subheader")
        for element in getattr(page, kind)
    ]
    assert "frame 2 of 2 of the DICOM file" in shown
    table = pd.read_csv(io.BytesIO(downloads["captions.csv"]))
    assert table["path"].tolist() == names and table["caption"].notna().all()
    assert table["frame"].tolist()[0] == "frame 2 of 2"
    results = page.session_state["results"]
    texts["page"] = "\n".join(shown)
    texts["csv"] = downloads["captions.csv"].decode()
    texts["results"] = repr(
        [{k: r[k] for k in r if k != "image"} for r in results.values()]
    )
    assert leaks(root, folder, texts) == []
