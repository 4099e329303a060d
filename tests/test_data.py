"""Manifests from every layout, each on a small fixture built here, and the report."""

import json
import types
import zlib
from collections import Counter

import pandas as pd
import pytest

from radcap.core.config import SPLITS, Config, preset
from radcap.data import (
    MANIFEST_COLUMNS,
    SKIP_COLUMNS,
    hash_split,
    load,
    profile,
    save_profile,
)
from radcap.data import roco as roco_source
from radcap.data.demo import make_demo
from radcap.data.layouts import (
    load_coco,
    load_csv,
    load_demo,
    load_iu_xray,
    load_rocov2,
)
from radcap.data.roco import load_roco

JPEG = b"\xff\xd8\xff\xe0 not decoded while building the manifest"
PASSWD = "../" * 30 + "etc/passwd"


def write(path, data=JPEG):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def rows(frame):
    return [tuple(r) for r in frame.itertuples(index=False)]


# ROCO, the Kaggle copy.

ROCO_TRAIN = (
    b"id,name,caption\n"
    b'ROCO_00002,PMC4083729_AMHSR-4-14-g002.jpg," Computed tomography scan in axial'
    b' view showing obliteration of the left maxillary sinus\n"\n'
    b'ROCO_00003,PMC2837471_IJD2009-150251.001.jpg," Bacterial contamination occurred'
    b" after completion of root canal treatment in the tooth, which remained with a"
    b' temporary filling for 15 months.\n"\n'
    b'ROCO_00004,PMC2505281_11999_2007_30_Fig6_HTML.jpg," The ""double-duct"" sign,'
    b' MRI\n"\n'
    b'ROCO_00005,PMC3745845_IJD2013-683423.005.jpg," Panoramic radiograph.\n"\n'
    b'ROCO_00007,PMC4917066_amjcaserep-17-301-g001.jpg," \n"\n'
    b'ROCO_00008,PMC4805615_13244_2016_481_Fig12_HTML.jpg," (...) \n"\n'
    b'ROCO_00009,PMC2584650_1757-1626-1-193-1.jpg," Radiograf\xeda de t\xf3rax\n"\n'
    b'ROCO_00002,PMC4083729_AMHSR-4-14-g002.jpg," Computed tomography scan in axial'
    b' view showing obliteration of the left maxillary sinus\n"\n'
    b'ROCO_00002,PMC4083729_AMHSR-4-14-g002.jpg," Coronal CT, same patient.\n"\n'
    b"ROCO_00010," + PASSWD.encode() + b'," Not an image at all.\n"\n'
)
SINUS = (
    "computed tomography scan in axial view showing obliteration of the left "
    "maxillary sinus"
)
TOOTH = (
    "bacterial contamination occurred after completion of root canal treatment "
    "in the tooth which remained with a temporary filling for 15 months"
)


@pytest.fixture
def kaggle_roco(tmp_path):
    """`roco/all_data/...` as the Kaggle download unzips it."""
    root = tmp_path / "roco"
    data = root / "all_data"
    train = data / "train"
    write(train / "radiologytraindata.csv", ROCO_TRAIN)
    write(train / "radiology/traindata.csv", ROCO_TRAIN)  # the same file twice
    images = train / "radiology/images"
    for name in (
        "PMC4083729_AMHSR-4-14-g002.jpg",
        "PMC2837471_IJD2009-150251.001.jpg",
        "PMC4917066_amjcaserep-17-301-g001.jpg",
        "PMC4805615_13244_2016_481_Fig12_HTML.jpg",
        "PMC2584650_1757-1626-1-193-1.jpg",
    ):
        write(images / name)
    write(images / "PMC3745845_IJD2013-683423.005.jpg", b"")  # 0 bytes
    # Validation only under radiology/, test under both names.
    write(
        data / "validation/radiology/valdata.csv",
        'id,name,caption\nROCO_00020,PMC1_a.jpg," Axial CT of the pelvis.\n"\n',
    )
    write(data / "validation/radiology/images/PMC1_a.jpg")
    test_csv = 'id,name,caption\nROCO_00030,PMC2_b.jpg," Chest X-ray, AP view.\n"\n'
    write(data / "test/radiologytestdata.csv", test_csv)
    write(data / "test/radiology/testdata.csv", test_csv)
    write(data / "test/radiology/images/PMC2_b.jpg")
    return root


def test_roco_kaggle_layout(kaggle_roco):
    dataset = load_roco(kaggle_roco)
    images = kaggle_roco / "all_data"
    train_images = images / "train/radiology/images"
    assert list(dataset.manifest.columns) == MANIFEST_COLUMNS
    assert rows(dataset.manifest) == [
        (
            "ROCO_00002",
            str(train_images / "PMC4083729_AMHSR-4-14-g002.jpg"),
            SINUS,
            "train",
        ),
        (
            "ROCO_00003",
            str(train_images / "PMC2837471_IJD2009-150251.001.jpg"),
            TOOTH,
            "train",
        ),
        (
            "ROCO_00002",
            str(train_images / "PMC4083729_AMHSR-4-14-g002.jpg"),
            "coronal ct same patient",
            "train",
        ),
        (
            "ROCO_00020",
            str(images / "validation/radiology/images/PMC1_a.jpg"),
            "axial ct of the pelvis",
            "validation",
        ),
        (
            "ROCO_00030",
            str(images / "test/radiology/images/PMC2_b.jpg"),
            "chest x-ray ap view",
            "test",
        ),
    ]
    assert list(dataset.skipped.columns) == SKIP_COLUMNS
    assert rows(dataset.skipped) == [
        (
            "ROCO_00004",
            str(train_images / "PMC2505281_11999_2007_30_Fig6_HTML.jpg"),
            "missing image file",
        ),
        (
            "ROCO_00005",
            str(train_images / "PMC3745845_IJD2013-683423.005.jpg"),
            "empty image file (0 bytes)",
        ),
        (
            "ROCO_00007",
            str(train_images / "PMC4917066_amjcaserep-17-301-g001.jpg"),
            "empty caption",
        ),
        (
            "ROCO_00008",
            str(train_images / "PMC4805615_13244_2016_481_Fig12_HTML.jpg"),
            "caption has no words (only punctuation)",
        ),
        (
            "ROCO_00009",
            str(train_images / "PMC2584650_1757-1626-1-193-1.jpg"),
            "caption is not valid UTF-8",
        ),
        (
            "ROCO_00002",
            str(train_images / "PMC4083729_AMHSR-4-14-g002.jpg"),
            "duplicate row",
        ),
        ("ROCO_00010", "/etc/passwd", "path outside dataset root"),
    ]
    # Several captions of one image: one row each, one image, both references.
    assert dataset.images("train")["image_id"].tolist() == ["ROCO_00002", "ROCO_00003"]
    assert dataset.references("train")["ROCO_00002"] == [
        SINUS,
        "coronal ct same patient",
    ]
    assert dataset.counts().to_dict("index") == {
        "train": {"images": 2, "captions": 3},
        "validation": {"images": 1, "captions": 1},
        "test": {"images": 1, "captions": 1},
    }


def test_roco_root_may_be_the_mount_or_all_data(kaggle_roco, tmp_path):
    whole = load_roco(kaggle_roco)
    inner = load_roco(kaggle_roco / "all_data")
    pd.testing.assert_frame_equal(whole.manifest, inner.manifest)
    pd.testing.assert_frame_equal(whole.skipped, inner.skipped)
    with pytest.raises(FileNotFoundError, match="radcap download roco"):
        load_roco(tmp_path / "empty")


def test_roco_original_layout(tmp_path):
    data = tmp_path / "roco-dataset/data"
    train = data / "train/radiology"
    write(
        train / "captions.txt",
        "ROCO_00002\t Computed tomography scan in axial view.\n"
        "ROCO_00003\t Panoramic radiograph (arrow).\r\n"
        "ROCO_00004\t Chest x-ray.\n"
        "a line without any tab\n"
        "\n",
    )
    write(
        train / "licences.txt",
        "ROCO_ID,PMC_ID,CC\nROCO_00003,PMC2837471_IJD2009-150251.001.jpg,CC BY\n",
    )
    write(train / "images/ROCO_00002.jpg")  # newer fetch script: ROCO names
    write(train / "images/PMC2837471_IJD2009-150251.001.jpg")  # older: PMC names
    write(data / "test/radiology/captions.txt", "ROCO_00030\t Axial MRI.\n")
    write(data / "test/radiology/images/ROCO_00030.jpg")
    write(data / "train/non-radiology/captions.txt", "ROCO_00001\t A photograph.\n")
    write(data / "train/non-radiology/images/ROCO_00001.jpg")

    dataset = load_roco(tmp_path / "roco-dataset")
    assert rows(dataset.manifest) == [
        (
            "ROCO_00002",
            str(train / "images/ROCO_00002.jpg"),
            "computed tomography scan in axial view",
            "train",
        ),
        (
            "ROCO_00003",
            str(train / "images/PMC2837471_IJD2009-150251.001.jpg"),
            "panoramic radiograph arrow",
            "train",
        ),
        (
            "ROCO_00030",
            str(data / "test/radiology/images/ROCO_00030.jpg"),
            "axial mri",
            "test",
        ),
    ]
    assert rows(dataset.skipped) == [
        ("", f"{train / 'captions.txt'}:4", "line without a tab after the id"),
        ("ROCO_00004", str(train / "images/ROCO_00004.jpg"), "missing image file"),
    ]
    assert load_roco(data).manifest.equals(dataset.manifest)  # the data/ folder

    everything = load_roco(tmp_path / "roco-dataset", include_nonradiology=True)
    assert everything.manifest["image_id"].tolist() == [
        "ROCO_00002",
        "ROCO_00003",
        "ROCO_00001",
        "ROCO_00030",
    ]
    assert everything.manifest["caption"].tolist()[2] == "a photograph"


def test_rocov2(tmp_path):
    write(
        tmp_path / "train_captions.csv",
        "ID,Caption\n"
        "ROCOv2_2023_train_000001,Head CT demonstrating left parotiditis.\n"
        'ROCOv2_2023_train_000002,"Acquired renal cysts in end-stage renal '
        'failure: 16-year-old girl, ""ARCD""."\n',
    )
    write(tmp_path / "valid_captions.csv", "ID,Caption\nROCOv2_2023_valid_000001,US\n")
    write(tmp_path / "test_captions.csv", "ID,Caption\nROCOv2_2023_test_000001,CT\n")
    write(tmp_path / "train/ROCOv2_2023_train_000001.jpg")
    write(tmp_path / "valid/ROCOv2_2023_valid_000001.jpg")
    write(tmp_path / "test/ROCOv2_2023_test_000001.jpg")

    dataset = load_rocov2(tmp_path)
    assert rows(dataset.manifest) == [
        (
            "ROCOv2_2023_train_000001",
            str(tmp_path / "train/ROCOv2_2023_train_000001.jpg"),
            "head ct demonstrating left parotiditis",
            "train",
        ),
        (
            "ROCOv2_2023_valid_000001",
            str(tmp_path / "valid/ROCOv2_2023_valid_000001.jpg"),
            "us",
            "validation",
        ),
        (
            "ROCOv2_2023_test_000001",
            str(tmp_path / "test/ROCOv2_2023_test_000001.jpg"),
            "ct",
            "test",
        ),
    ]
    assert rows(dataset.skipped) == [
        (
            "ROCOv2_2023_train_000002",
            str(tmp_path / "train/ROCOv2_2023_train_000002.jpg"),
            "missing image file",
        )
    ]
    with pytest.raises(FileNotFoundError, match="train_captions.csv"):
        load_rocov2(tmp_path / "train")


# IU X-ray.

REPORT_COLUMNS = "uid,MeSH,Problems,image,indication,comparison,findings,impression"


@pytest.fixture
def iu_xray(tmp_path):
    reports = [REPORT_COLUMNS]
    views = ["uid,filename,projection"]
    for uid in range(1, 31):
        findings = f"Finding {uid}." if uid != 7 else ""
        impression = f'"No acute disease, case {uid}."' if uid != 7 else ""
        reports.append(f"{uid},normal,normal,Xray Chest PA and Lateral,,,{findings},")
        reports[-1] += impression
        for view, number in (("Frontal", 1001), ("Lateral", 2001)):
            name = f"{uid}_IM-{uid:04d}-{number}.dcm.png"
            views.append(f"{uid},{name},{view}")
            write(tmp_path / "images/images_normalized" / name)
    views.append("999,999_IM-0999-1001.dcm.png,Frontal")  # no report
    write(tmp_path / "indiana_reports.csv", "\n".join(reports) + "\n")
    write(tmp_path / "indiana_projections.csv", "\n".join(views) + "\n")
    return tmp_path


def test_iu_xray_captions_projection_and_skips(iu_xray):
    dataset = load_iu_xray(iu_xray)
    images = iu_xray / "images/images_normalized"
    first = dataset.manifest.iloc[0]
    assert first.to_dict() == {
        "image_id": "1_IM-0001-1001.dcm.png",
        "path": str(images / "1_IM-0001-1001.dcm.png"),
        "caption": "finding 1 no acute disease case 1",
        "split": hash_split("1"),
    }
    assert len(dataset.manifest) == 29  # 30 frontal images, one without text
    reasons = dataset.skipped["reason"].value_counts().to_dict()
    assert reasons == {
        "Lateral projection (Frontal chosen)": 30,
        "report has no findings or impression text": 1,
        "no report with this uid": 1,
    }
    assert dataset.skipped.iloc[-1].tolist() == [
        "999_IM-0999-1001.dcm.png",
        str(images / "999_IM-0999-1001.dcm.png"),
        "no report with this uid",
    ]
    only_impression = load_iu_xray(iu_xray, fields=("impression",))
    assert only_impression.manifest["caption"][0] == "no acute disease case 1"
    with pytest.raises(ValueError, match=r"missing \['history'\]"):
        load_iu_xray(iu_xray, fields=("history",))


def test_iu_xray_settings_come_from_the_config(iu_xray):
    config = Config(
        source="iu_xray",
        data_dir=str(iu_xray.parent),
        dataset=iu_xray.name,
        projection="lateral",
        report_fields="impression",
    )
    dataset = load(config)
    assert len(dataset.manifest) == 29
    assert dataset.manifest["image_id"].str.endswith("-2001.dcm.png").all()
    assert dataset.manifest["caption"][0] == "no acute disease case 1"
    both = load(config.replace(projection=None))
    assert len(both.manifest) == 58


def test_iu_xray_one_patient_never_in_two_splits(iu_xray):
    dataset = load_iu_xray(iu_xray, projection=None)
    manifest = dataset.manifest
    assert len(manifest) == 58  # both projections of 29 patients
    uid = manifest["image_id"].str.split("_").str[0]
    assert (manifest.groupby(uid)["split"].nunique() == 1).all()
    assert (manifest["split"] == uid.map(hash_split)).all()
    assert set(manifest["split"]) == set(SPLITS)


# COCO-style captions.


def test_coco_several_captions_per_image(tmp_path):
    captions = {
        "info": {"description": "COCO 2017"},
        "images": [
            {"id": 391895, "file_name": "000000391895.jpg"},
            {"id": 522418, "file_name": "000000522418.jpg"},
            {"id": 184613, "file_name": "000000184613.jpg"},
        ],
        "annotations": [
            {"image_id": 391895, "id": 1, "caption": "A man riding a bike."},
            {"image_id": 522418, "id": 2, "caption": "A woman cutting a cake."},
            {"image_id": 391895, "id": 3, "caption": "A person on a bicycle"},
            {"image_id": 391895, "id": 4, "caption": "   "},
            {"image_id": 184613, "id": 5, "caption": "A child with an umbrella."},
            {"image_id": 1, "id": 6, "caption": "An orphan caption."},
        ],
    }
    write(tmp_path / "captions_val2017.json", json.dumps(captions))
    write(tmp_path / "val2017/000000391895.jpg")
    write(tmp_path / "val2017/000000522418.jpg")

    dataset = load_coco(
        tmp_path / "captions_val2017.json", tmp_path / "val2017", split="validation"
    )
    assert dataset.references("validation") == {
        "391895": ["a man riding a bike", "a person on a bicycle"],
        "522418": ["a woman cutting a cake"],
    }
    assert dataset.images("validation")["path"].tolist() == [
        str(tmp_path / "val2017/000000391895.jpg"),
        str(tmp_path / "val2017/000000522418.jpg"),
    ]
    assert rows(dataset.skipped) == [
        ("1", "", "annotation for an image not in 'images'"),
        ("391895", str(tmp_path / "val2017/000000391895.jpg"), "empty caption"),
        ("184613", str(tmp_path / "val2017/000000184613.jpg"), "missing image file"),
    ]
    hashed = load_coco(tmp_path / "captions_val2017.json", tmp_path / "val2017")
    assert hashed.manifest["split"].tolist() == [
        hash_split("391895"),
        hash_split("522418"),
        hash_split("391895"),
    ]

    write(tmp_path / "bad.json", json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"keys \['images'\], expected lists"):
        load_coco(tmp_path / "bad.json", tmp_path)


# The generic CSV.


def test_csv_refuses_wrong_columns_naming_found_and_expected(tmp_path):
    write(tmp_path / "captions.csv", "filename,text\na.png,a caption\n")
    with pytest.raises(ValueError) as err:
        load_csv(tmp_path / "captions.csv")
    message = str(err.value)
    assert "columns ['filename', 'text'], expected ['image', 'caption']" in message
    assert "missing ['image', 'caption']" in message
    write(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match="is empty"):
        load_csv(tmp_path / "empty.csv")


@pytest.mark.parametrize("sep", [";", "\t"], ids=["semicolon", "tab"])
def test_csv_separated_by_semicolons_or_tabs_is_read_as_such(tmp_path, sep):
    write(tmp_path / "images/a.png")
    write(tmp_path / "images/b.png")
    lines = [
        ["Image", "Caption", "Split"],
        ["images/a.png", "Chest film, no effusion.", "train"],
        ["images/b.png", '"Nodule; left lung."', "test"],
    ]
    write(tmp_path / "c.csv", "".join(sep.join(line) + "\r\n" for line in lines))
    dataset = load_csv(tmp_path / "c.csv")
    assert rows(dataset.manifest) == [
        (
            "images/a.png",
            str(tmp_path / "images/a.png"),
            "chest film no effusion",
            "train",
        ),
        ("images/b.png", str(tmp_path / "images/b.png"), "nodule left lung", "test"),
    ]
    assert len(dataset.skipped) == 0


def test_csv_with_other_separators_but_wrong_columns_names_the_expected(tmp_path):
    write(tmp_path / "c.csv", "file;text\na.png;A caption, with a comma.\n")
    with pytest.raises(ValueError) as err:
        load_csv(tmp_path / "c.csv")
    assert str(err.value) == (
        f"{tmp_path / 'c.csv'} has columns ['file', 'text'], expected ['image', "
        "'caption'] (optional ['split', 'image_id']); missing ['image', 'caption']. "
        "Rename the columns, or use the loader for this layout."
    )


def test_csv_paths_outside_the_root_are_refused(tmp_path):
    root = tmp_path / "set"
    write(root / "images/a.png")
    write(root / "images/b.png")
    write(tmp_path / "secret.png")
    write(
        root / "captions.csv",
        "image,caption,split\n"
        "images/a.png,Chest film.,train\n"
        "../../../../../../../../../../etc/passwd,Not an image.,train\n"
        f"{tmp_path / 'secret.png'},Absolute path outside.,train\n"
        f"{root / 'images/b.png'},Absolute path inside.,test\n"
        "images\\b.png,Windows separators.,test\n"
        "../secret.png,Sibling folder.,train\n",
    )
    dataset = load_csv(root / "captions.csv")
    assert rows(dataset.manifest) == [
        ("images/a.png", str(root / "images/a.png"), "chest film", "train"),
        ("images/b.png", str(root / "images/b.png"), "absolute path inside", "test"),
        ("images/b.png", str(root / "images/b.png"), "windows separators", "test"),
    ]
    assert rows(dataset.skipped) == [
        (
            "../../../../../../../../../../etc/passwd",
            "/etc/passwd",
            "path outside dataset root",
        ),
        (
            str(tmp_path / "secret.png"),
            str(tmp_path / "secret.png"),
            "path outside dataset root",
        ),
        ("../secret.png", str(tmp_path / "secret.png"), "path outside dataset root"),
    ]


def test_symbolic_links_are_followed_before_the_inside_the_root_check(tmp_path):
    root = tmp_path / "set"
    write(root / "images/a.png")
    write(tmp_path / "secret.png")
    (root / "images/link.png").symlink_to(tmp_path / "secret.png")
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    (root / "inside.png").symlink_to(root / "images/a.png")
    write(
        root / "captions.csv",
        "image,caption,split\n"
        "images/link.png,A link to a file outside.,train\n"
        "outside/secret.png,A folder link leading outside.,train\n"
        "inside.png,A link that stays inside.,train\n",
    )
    dataset = load_csv(root / "captions.csv")
    assert dataset.manifest["image_id"].tolist() == ["inside.png"]
    assert dataset.skipped["reason"].tolist() == ["path outside dataset root"] * 2


def test_a_column_given_twice_is_refused_not_ignored(tmp_path):
    write(tmp_path / "c.csv", "image,caption,Caption\na.png,first,second\n")
    with pytest.raises(ValueError, match="column 'caption' more than once"):
        load_csv(tmp_path / "c.csv")
    write(tmp_path / "d.csv", "image,caption,caption\na.png,first,second\n")
    with pytest.raises(ValueError, match="column 'caption' more than once.*Rename"):
        load_csv(tmp_path / "d.csv")


def test_csv_without_splits_splits_by_a_hash_of_the_image_path(tmp_path):
    names = [f"img/{i:03d}.png" for i in range(40)]
    for name in names:
        write(tmp_path / name)
    lines = ["image,caption"] + [f"{n},a caption for {n}" for n in names]
    write(tmp_path / "all.csv", "\n".join(lines) + "\n")
    write(tmp_path / "some.csv", "\n".join(lines[:1] + lines[25:]) + "\n")
    whole = load_csv(tmp_path / "all.csv")
    part = load_csv(tmp_path / "some.csv")
    # crc32 of the path, mod 100: below 70 train, below 85 validation, else test.
    buckets = [zlib.crc32(n.encode()) % 100 for n in names]
    expected = [
        "train" if b < 70 else "validation" if b < 85 else "test" for b in buckets
    ]
    assert whole.manifest["split"].tolist() == expected
    assert whole.counts()["images"].to_dict() == {
        "train": 25,
        "validation": 6,
        "test": 9,
    }
    # The same image gets the same split whatever else the CSV holds.
    first = dict(zip(whole.manifest["image_id"], whole.manifest["split"]))
    assert part.manifest["split"].tolist() == [
        first[i] for i in part.manifest["image_id"]
    ]
    shares = Counter(hash_split(f"patient-{i}") for i in range(10_000))
    assert shares == {"train": 7067, "validation": 1490, "test": 1443}


def test_csv_split_names_conflicts_and_duplicates(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write(tmp_path / name)
    write(
        tmp_path / "captions.csv",
        b"image,caption,split\n"
        b"a.png,First caption of a.,Train\n"
        b"a.png,Second caption of a.,train\n"
        b"a.png,first caption of a,train\n"
        b"a.png,A third one.,test\n"
        b"b.png,B caption.,val\n"
        b"c.png,C caption.,holdout\n"
        b"c.png,Caf\xe9 caption.,train\n",
    )
    dataset = load_csv(tmp_path / "captions.csv")
    assert dataset.references("train") == {
        "a.png": ["first caption of a", "second caption of a"]
    }
    assert dataset.references("validation") == {"b.png": ["b caption"]}
    assert dataset.references("test") == {}
    c_path = str(tmp_path / "c.png")
    assert rows(dataset.skipped) == [
        ("a.png", str(tmp_path / "a.png"), "duplicate row"),
        ("a.png", str(tmp_path / "a.png"), "image already in the train split"),
        (
            "c.png",
            c_path,
            "unknown split 'holdout' (expected one of ('train', 'validation', 'test'))",
        ),
        ("c.png", c_path, "caption is not valid UTF-8"),
    ]
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        dataset.split("val")


def test_demo_and_load_from_config(tmp_path, kaggle_roco, monkeypatch):
    monkeypatch.setattr(roco_source, "KAGGLE_INPUT", tmp_path / "no-kaggle-here")
    demo = load(preset("demo", demo_size=20), tmp_path)
    assert demo.manifest["image_id"].tolist()[:2] == ["demo_00000", "demo_00001"]
    assert demo.counts()["captions"].to_dict() == {
        "train": 14,
        "validation": 3,
        "test": 3,
    }
    assert demo.skipped.empty
    direct = load_demo(tmp_path / "data/demo")
    pd.testing.assert_frame_equal(direct.manifest, demo.manifest)
    assert demo.manifest["path"][0] == str(tmp_path / "data/demo/images/demo_00000.png")

    csv = load(Config(source="csv", dataset="demo"), tmp_path)
    assert csv.manifest["image_id"][0] == "images/demo_00000.png"
    assert csv.manifest["caption"].tolist() == demo.manifest["caption"].tolist()

    roco = Config(source="roco", dataset="roco", data_dir=".")
    assert len(load(roco, kaggle_roco.parent).manifest) == 5
    elsewhere = Config(source="roco", dataset="roco")
    with pytest.raises(FileNotFoundError, match="No ROCO dataset"):
        load(elsewhere, tmp_path / "nothing")
    # In a Kaggle notebook the attached input is used.
    monkeypatch.setattr(roco_source, "KAGGLE_INPUT", kaggle_roco)
    assert len(load(elsewhere, tmp_path / "nothing").manifest) == 5

    rocov2 = types.SimpleNamespace(
        source="rocov2", dataset_dir=lambda root: kaggle_roco / "missing"
    )
    with pytest.raises(FileNotFoundError, match="ROCOv2"):
        load(rocov2)
    with pytest.raises(FileNotFoundError, match="make_demo"):
        load_demo(tmp_path / "nothing")


def test_report_and_saved_files(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write(tmp_path / name)
    write(
        tmp_path / "captions.csv",
        "image,caption,split\n"
        "a.png,ct of the chest,train\n"
        "a.png,ct of the chest shows a nodule,train\n"
        "b.png,mri of the brain,train\n"
        "c.png,ct of the brain shows a cyst,validation\n"
        "d.png,x-ray of the hand,test\n"
        "e.png,missing file,test\n",
    )
    dataset = load_csv(tmp_path / "captions.csv")
    expected = {
        "root": str(tmp_path),
        "splits": {
            "train": {"images": 2, "captions": 3},
            "validation": {"images": 1, "captions": 1},
            "test": {"images": 1, "captions": 1},
        },
        "images": 4,
        "captions": 5,
        "skipped": {"rows": 1, "by_reason": {"missing image file": 1}},
        # lengths 4, 7, 4, 7, 4
        "caption_words": {
            "mean": 5.2,
            "median": 4.0,
            "p95": 7.0,
            "max": 7,
            "over_max_len": 0.4,
        },
        "vocabulary": {
            "size": 4 + 4,  # specials + ct, of, the, chest (seen twice or more)
            "min_count": 2,
            "max_len": 5,
            # known words: train 10 of 15, validation 3 of 7, test 2 of 4
            "coverage": {"train": 0.6667, "validation": 0.4286, "test": 0.5},
        },
    }
    assert profile(dataset, vocab_min_count=2, max_len=5) == expected
    saved = save_profile(dataset, tmp_path / "report", vocab_min_count=2, max_len=5)
    assert saved == expected
    folder = tmp_path / "report"
    assert json.loads((folder / "profile.json").read_text()) == expected
    manifest = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
    assert rows(manifest) == rows(dataset.manifest)
    skipped = pd.read_csv(folder / "skipped.csv", dtype=str, keep_default_na=False)
    assert rows(skipped) == [("e.png", str(tmp_path / "e.png"), "missing image file")]
    assert dataset.summary().splitlines() == [
        str(tmp_path),
        "  train            2 images       3 captions",
        "  validation       1 images       1 captions",
        "  test             1 images       1 captions",
        "  skipped          1 rows",
        "          1  missing image file",
    ]


def test_a_make_demo_folder_loads_every_row(tmp_path):
    make_demo(tmp_path, n=20, seed=1)
    dataset = load_demo(tmp_path)
    frame = pd.read_csv(tmp_path / "captions.csv")
    assert dataset.manifest["caption"].tolist() == frame["caption"].tolist()
    assert dataset.manifest["split"].tolist() == frame["split"].tolist()
