"""Clinical consistency: the errors a radiologist would catch, counted by rules.

n-gram metrics reward "a small nodule in the left lung" for a reference that
says "right lung" almost as much as for the right answer. These rules read
four attributes from a caption (after `radcap.core.text.clean_caption`) and
compare the generated caption's with its reference's:

- **Laterality**: `left`, `right` or `bilateral` ("bilateral", "both", or
  both sides named); None when no side is named.
- **Modality**: a set of `x-ray` (radiograph, plain film, CXR, mammography,
  fluoroscopy), `ct`, `mri` (MR, T1/T2-weighted, FLAIR, DWI...),
  `ultrasound` (sonography, Doppler, echocardiography), `angiography`,
  `pet`, `scintigraphy` (SPECT, bone scan, nuclear medicine).
- **Body region**: a set of `brain`, `head-neck`, `chest`, `heart`,
  `breast`, `abdomen`, `pelvis`, `spine`, `limb`.
- **Finding**: True when the caption asserts a finding (a finding word not
  negated), False when it says there is none ("no abnormality", "normal",
  "unremarkable", "without ..."), None when it says neither. A finding word
  is negated when "no", "without", "negative for", "absence of" or "free of"
  comes at most five words before it, with no "but" or "however" between.

Rules, not a model: they run offline in microseconds and can be read and
checked, but they miss paraphrases a clinician would catch ("the patient's
dominant lung") and know nothing of anatomy. On the demo the attributes are
known from the generator, and the rules agree with them on every caption
(`radcap.evaluation.evaluate` reports the share).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from radcap.core.text import clean_caption
from radcap.data.demo import is_held_out

SIDES = ("left", "right", "bilateral")
MODALITIES = {
    "x-ray": r"x-?rays?|radiograph\w*|plain films?|cxr|mammogra\w*|fluoroscop\w*",
    "ct": r"ct|cta|hrct|mdct|cect|(computed|computeri[sz]ed) tomograph\w*"
    r"|ct-\w+|\w+-ct",
    "mri": r"mri?|mra|mrcp|magnetic resonance|t[12]-?weighted|t[12]w?i?|flair"
    r"|dwi|diffusion-weighted|stir|mr-\w+",
    "ultrasound": r"ultrasound\w*|ultrasonograph\w*|sonograph\w*|sonogram"
    r"|doppler|echocardiograph\w*|usg",
    "angiography": r"\w*angiogra\w*|arteriogra\w*|venogra\w*|dsa",
    "pet": r"pet|pet-ct|pet/ct|fdg|positron",
    "scintigraphy": r"scintigra\w*|spect|bone scan|nuclear medicine|\w*tc-99m|99mtc",
}
REGIONS = {
    "brain": r"brain|cerebr\w*|cerebell\w*|intracranial|cranial|skull|hemispheres?"
    r"|ventricles? of the brain|frontal lobe|temporal lobe|parietal|occipital",
    "head-neck": r"neck|thyroid|sinus\w*|orbits?|orbital|mandib\w*|maxill\w*"
    r"|larynx|laryngeal|pharyn\w*",
    "chest": r"chest|thora\w*|lungs?|pulmonary|pleura\w*|mediastin\w*|hilar|bronch\w*",
    "heart": r"heart|cardiac|coronary|aort\w*|ventricular|atri\w+|pericardi\w*",
    "breast": r"breasts?|mammary",
    "abdomen": r"abdom\w*|liver|hepat\w*|kidneys?|renal|pancrea\w*|spleen|splenic"
    r"|bowel|colon|gallbladder|bile|biliary|stomach|gastric|duoden\w*",
    "pelvis": r"pelvi\w*|bladder|uter\w*|ovar\w*|prostat\w*|rectum|rectal",
    "spine": r"spine|spinal|vertebra\w*|lumbar|sacr\w*|cervical spine|disc",
    "limb": r"knee|hip|shoulder|elbow|wrist|hand|ankle|foot|feet|femur|femoral|tibia\w*"
    r"|fibula\w*|humer\w*|radius|ulna|legs?|arms?|finger|toe",
}
FINDINGS = (
    r"abnormalit\w*|lesions?|mass(es)?|nodules?|nodular|cysts?|cystic|tumou?rs?"
    r"|fractures?|effusions?|opacit\w*|consolidation|hemorrhage|haemorrhage"
    r"|infarcts?|infarction|stenosis|occlusion|aneurysms?|metasta\w*|abscess\w*"
    r"|thrombo\w*|enlarge\w*|dilat\w*|thicken\w*|calcifi\w*|edema|oedema"
    r"|pneumothorax|collaps\w*|fistula\w*|atelectasis|carcinoma|malignan\w*|hernia\w*"
)
NEGATIONS = r"no|not|without|negative for|absence of|free of"
NORMAL = re.compile(r"\b(normal|unremarkable|no abnormalit\w*)\b")
_FINDING = re.compile(rf"\b({FINDINGS})\b")
_NEGATION = re.compile(rf"\b({NEGATIONS})\b")
_BREAK = re.compile(r"\b(but|however|although|except)\b")
_MODALITY = {k: re.compile(rf"(?<![\w-])({v})(?![\w-])") for k, v in MODALITIES.items()}
_REGION = {k: re.compile(rf"\b({v})\b") for k, v in REGIONS.items()}
_LEFT, _RIGHT = re.compile(r"\bleft\b"), re.compile(r"\bright\b")
_BOTH = re.compile(r"\b(bilateral\w*|both)\b")


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What a caption says, as the rules read it."""

    laterality: str | None
    modality: frozenset
    region: frozenset
    finding: bool | None


def _negated(text: str, start: int) -> bool:
    """Whether a negation cue governs the word that starts at `start`."""
    window = " ".join(text[:start].split()[-5:])
    cues = list(_NEGATION.finditer(window))
    return bool(cues) and not _BREAK.search(window[cues[-1].end() :])


def attributes(caption: str) -> Attributes:
    """Read laterality, modality, body region and finding from a caption."""
    text = clean_caption(caption or "")
    left, right = bool(_LEFT.search(text)), bool(_RIGHT.search(text))
    if _BOTH.search(text) or (left and right):
        side = "bilateral"
    else:
        side = "left" if left else "right" if right else None
    asserted = [m for m in _FINDING.finditer(text) if not _negated(text, m.start())]
    if asserted:
        finding = True
    elif NORMAL.search(text) or _FINDING.search(text):
        finding = False  # "normal", or every finding word negated
    else:
        finding = None
    return Attributes(
        laterality=side,
        modality=frozenset(k for k, rx in _MODALITY.items() if rx.search(text)),
        region=frozenset(k for k, rx in _REGION.items() if rx.search(text)),
        finding=finding,
    )


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def clinical_scores(references: dict, candidates: dict) -> dict:
    """Compare each generated caption's attributes with its first reference's.

    Args:
        references: image_id → list of reference captions.
        candidates: image_id → generated caption.

    Returns:
        `laterality`: over images whose reference names a side, the share
        naming the same side (`agreement`) and the share naming the opposite
        one (`contradiction`; left against right, bilateral never
        contradicts). `modality` and `region`: over images whose reference
        names one, the share whose caption names one of the same
        (`agreement`). `finding`: `false_finding`, the share of captions
        asserting a finding where the reference says there is none, and
        `missed_finding`, the share saying there is none where the reference
        asserts one. Each has its `images` count; a share over no image is
        None.
    """
    pairs = [
        (attributes(refs[0]), attributes(candidates[key]))
        for key, refs in references.items()
    ]
    sided = [(r, c) for r, c in pairs if r.laterality]
    opposite = {("left", "right"), ("right", "left")}
    out = {
        "laterality": {
            "images": len(sided),
            "agreement": _share(
                sum(r.laterality == c.laterality for r, c in sided), len(sided)
            ),
            "contradiction": _share(
                sum((r.laterality, c.laterality) in opposite for r, c in sided),
                len(sided),
            ),
        }
    }
    for name in ("modality", "region"):
        known = [
            (getattr(r, name), getattr(c, name)) for r, c in pairs if getattr(r, name)
        ]
        out[name] = {
            "images": len(known),
            "agreement": _share(sum(bool(r & c) for r, c in known), len(known)),
        }
    negative = [c for r, c in pairs if r.finding is False]
    positive = [c for r, c in pairs if r.finding is True]
    out["finding"] = {
        "negative_references": len(negative),
        "false_finding": _share(
            sum(c.finding is True for c in negative), len(negative)
        ),
        "positive_references": len(positive),
        "missed_finding": _share(
            sum(c.finding is False for c in positive), len(positive)
        ),
    }
    return out


def describe(caption: str) -> dict:
    """A caption's attributes as plain JSON values (for the controls)."""
    found = attributes(caption)
    return {
        "laterality": found.laterality,
        "modality": sorted(found.modality),
        "region": sorted(found.region),
        "finding": found.finding,
    }


def demo_agreement(cases) -> dict:
    """How often the rules read the demo generator's own truth from its captions.

    Args:
        cases: `radcap.data.demo.read_cases` rows (`caption`, `modality`,
            `region`, `lesion`, `side`).

    Returns:
        `{"captions", "laterality", "modality", "region", "finding", "all"}`:
        the share of captions whose attribute the rules read as drawn
        (`all`: every attribute at once).
    """
    hits = {"laterality": 0, "modality": 0, "region": 0, "finding": 0, "all": 0}
    rows = cases.to_dict("records")
    for row in rows:
        found = attributes(row["caption"])
        ok = {
            "laterality": found.laterality == (row["side"] if row["lesion"] else None),
            "modality": found.modality == {row["modality"]},
            "region": found.region == {row["region"]},
            "finding": found.finding is bool(row["lesion"]),
        }
        ok["all"] = all(ok.values())
        for key, value in ok.items():
            hits[key] += value
    return {
        "captions": len(rows),
        **{k: v / max(len(rows), 1) for k, v in hits.items()},
    }


def exact_scores(cases, texts) -> dict:
    """Shares of demo captions exactly as drawn: all, and on held-out pairings.

    Args:
        cases: `radcap.data.demo.read_cases` rows of the captioned images.
        texts: The captions, in the same order.

    Returns:
        `{"exact": share}` plus `"exact_held_out"` when the images include
        hard-demo pairings that training never saw (`Case.held_out`).
    """
    exact = np.array([str(t) == c for t, c in zip(texts, cases["caption"])])
    out = {"exact": float(exact.mean())}
    held = np.array([is_held_out(row) for _, row in cases.iterrows()])
    if held.any():
        out["exact_held_out"] = float(exact[held].mean())
    return out
