"""Clinical consistency rules: exact attributes of real and demo captions; scores."""

import pytest

from radcap.data.demo import make_demo, read_cases
from radcap.evaluation.clinical import (
    attributes,
    clinical_scores,
    demo_agreement,
    describe,
)


# Captions from ROCO (as published) and the demo, with what the rules must read.
@pytest.mark.parametrize(
    "caption, side, modality, region, finding",
    [
        (
            "frontal x-ray of the chest shows no abnormality",
            None,
            {"x-ray"},
            {"chest"},
            False,
        ),
        (
            "axial ct of the abdomen shows a large cyst in the left kidney",
            "left",
            {"ct"},
            {"abdomen"},
            True,
        ),
        (
            "axial mri of the brain shows a small nodule in the right hemisphere",
            "right",
            {"mri"},
            {"brain"},
            True,
        ),
        (
            "Ultrasound of anterior leg at rest is normal without any mass.",
            None,
            {"ultrasound"},
            {"limb"},
            False,
        ),
        (
            "Axial T2W image revealing cholecystoduodenal fistula. The gallbladder is "
            "collapsed, thick walled",
            None,
            {"mri"},
            {"abdomen"},
            True,
        ),
        (
            "Contrast-enhanced computerized tomography abdomen axial scan",
            None,
            {"ct"},
            {"abdomen"},
            None,
        ),
        (
            "Bilateral pleural effusions on chest radiograph",
            "bilateral",
            {"x-ray"},
            {"chest"},
            True,
        ),
        ("Left hip and right knee radiographs", "bilateral", {"x-ray"}, {"limb"}, None),
        ("PET/CT shows no FDG-avid lesion", None, {"pet", "ct"}, set(), False),
        ("No fracture, but a joint effusion is seen", None, set(), set(), True),
        (
            "Coronal T2-weighted MRI without evidence of a mass in the left orbit",
            "left",
            {"mri"},
            {"head-neck"},
            False,
        ),
        (
            "Digital subtraction angiography of the right coronary artery",
            "right",
            {"angiography"},
            {"heart"},
            None,
        ),
        (
            "Bone scan (scintigraphy) negative for metastases",
            None,
            {"scintigraphy"},
            set(),
            False,
        ),
        ("", None, set(), set(), None),
    ],
)
def test_attributes_of_captions(caption, side, modality, region, finding):
    found = attributes(caption)
    assert found.laterality == side
    assert found.modality == modality
    assert found.region == region
    assert found.finding is finding


def test_scores_count_exactly():
    references = {
        "a": ["x-ray of the chest shows a nodule in the left lung"],
        "b": ["ct of the brain shows a cyst in the right hemisphere"],
        "c": ["mri of the abdomen shows no abnormality"],
        "d": ["ct of the chest shows a mass in the left lung"],
    }
    candidates = {
        "a": "x-ray of the chest shows a nodule in the right lung",  # wrong side
        "b": "ct of the brain shows a cyst in the right hemisphere",  # all right
        "c": "ct of the abdomen shows a cyst in the left kidney",  # false finding
        "d": "ct of the chest shows no abnormality",  # missed finding, no side
    }
    out = clinical_scores(references, candidates)
    assert out["laterality"] == {
        "images": 3,
        "agreement": 1 / 3,
        "contradiction": 1 / 3,
    }
    assert out["modality"] == {"images": 4, "agreement": 3 / 4}
    assert out["region"] == {"images": 4, "agreement": 1.0}
    assert out["finding"] == {
        "negative_references": 1,
        "false_finding": 1.0,
        "positive_references": 3,
        "missed_finding": 1 / 3,
    }


def test_a_share_over_no_image_is_none():
    out = clinical_scores({"a": ["a photo"]}, {"a": "a photo"})
    assert out["laterality"] == {"images": 0, "agreement": None, "contradiction": None}
    assert out["finding"]["false_finding"] is None


def test_describe_is_json_ready():
    assert describe("axial ct of the chest shows a nodule in the left lung") == {
        "laterality": "left",
        "modality": ["ct"],
        "region": ["chest"],
        "finding": True,
    }


def test_rules_read_the_demo_generators_truth(tmp_path):
    make_demo(tmp_path, n=300, seed=3)
    agreement = demo_agreement(read_cases(tmp_path))
    assert agreement["captions"] == 300
    assert agreement["all"] >= 0.99
    assert (
        min(agreement[k] for k in ("laterality", "modality", "region", "finding"))
        >= 0.99
    )
