"""A synthetic radiology-like dataset that radcap generates itself, for offline runs.

Every image is drawn from a handful of attributes (modality, body region, and a
lesion that is present or absent, on the patient's left or right, small or
large, a nodule or a cyst) and its caption is spelled out from the same
attributes, e.g. "axial ct of the chest shows a small nodule in the right lung".
Since each attribute is drawn independently, no caption can be guessed without
looking at the image. All of it is SYNTHETIC: no patient, no real anatomy.

The hard demo (`findings=2`) draws two lesions in every image, an upper and
a lower one, each on either side with its own size and kind, and names both
in that reading order: "axial ct of the chest shows a small nodule in the
upper right lung and a large cyst in the lower left lung". Which side each
lesion is on, and which size and kind go with which, can only be read by
looking at the right place. Two pairings (`HELD_OUT`) occur only in the test
split, so a decoder that memorises whole captions cannot have seen them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from radcap.core.clock import timed
from radcap.core.config import SPLIT_PERCENT
from radcap.core.files import atomic_path, write_text

MODALITIES = ("x-ray", "ct", "mri")
PLANES = {"x-ray": "frontal", "ct": "axial", "mri": "axial"}
REGIONS = ("chest", "brain", "abdomen")
ORGANS = {"chest": "lung", "brain": "hemisphere", "abdomen": "kidney"}
SIDES = ("left", "right")
SIZES = ("small", "large")
KINDS = ("nodule", "cyst")
SIZE = 224
VERSION = 3  # bump when the drawing changes, so old folders are regenerated
# Hard demo: (upper size and kind, lower size and kind) pairs seen only in test.
HELD_OUT = (
    (("small", "cyst"), ("large", "nodule")),
    (("large", "nodule"), ("small", "cyst")),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """What one synthetic image shows. `side` is the patient's side.

    With `findings=2` (the hard demo) `side`, `size` and `kind` describe the
    upper lesion and `side_2`, `size_2` and `kind_2` the lower one.
    """

    modality: str
    region: str
    lesion: bool
    side: str = "left"
    size: str = "small"
    kind: str = "nodule"
    findings: int = 1
    side_2: str | None = None
    size_2: str | None = None
    kind_2: str | None = None

    @property
    def caption(self) -> str:
        head = f"{PLANES[self.modality]} {self.modality} of the {self.region} shows"
        organ = ORGANS[self.region]
        if not self.lesion:
            return f"{head} no abnormality"
        if self.findings == 2:
            return (
                f"{head} a {self.size} {self.kind} in the upper {self.side} {organ} "
                f"and a {self.size_2} {self.kind_2} in the lower {self.side_2} {organ}"
            )
        return f"{head} a {self.size} {self.kind} in the {self.side} {organ}"

    @property
    def held_out(self) -> bool:
        """A hard-demo pairing that only the test split has (`HELD_OUT`)."""
        return is_held_out(self)


def random_case(rng: np.random.Generator, findings: int = 1) -> Case:
    """Draw every attribute independently.

    Args:
        rng: The random stream.
        findings: 1: a lesion in 3 cases of 4; 2: two lesions, always (the
            hard demo).
    """
    case = Case(
        modality=str(rng.choice(MODALITIES)),
        region=str(rng.choice(REGIONS)),
        lesion=bool(rng.random() < 0.75),
        side=str(rng.choice(SIDES)),
        size=str(rng.choice(SIZES)),
        kind=str(rng.choice(KINDS)),
    )
    if findings == 1:
        return case
    return dataclasses.replace(
        case,
        lesion=True,
        findings=2,
        side_2=str(rng.choice(SIDES)),
        size_2=str(rng.choice(SIZES)),
        kind_2=str(rng.choice(KINDS)),
    )


def _getter(row):
    """Field access for a `Case`, a dict or a `read_cases` row (a Series).

    (A Series' attributes would not do: `row.size` is its length.)
    """
    return row.get if hasattr(row, "get") else lambda k: getattr(row, k, None)


def is_held_out(row) -> bool:
    """Whether a `Case` or `read_cases` row is a hard-demo pairing seen only in test."""
    get = _getter(row)
    pair = ((get("size"), get("kind")), (get("size_2"), get("kind_2")))
    return get("findings") == 2 and pair in HELD_OUT


def finding_sides(row) -> list[str]:
    """The sides of an image's lesions in reading order (none, one or two).

    Args:
        row: A `Case`, or a `read_cases` row.
    """
    get = _getter(row)
    if not get("lesion"):
        return []
    two = get("findings") == 2
    return [get("side"), get("side_2")] if two else [get("side")]


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lesion(img, yy, xx, ly, lx, radius, kind) -> None:
    """Draw a nodule (bright disc) or a cyst (dark centre, thin bright rim)."""
    spot = _ellipse(yy, xx, ly, lx, radius, radius)
    if kind == "nodule":
        img[spot] = 1.0
    else:
        inner = _ellipse(yy, xx, ly, lx, radius - 2.5, radius - 2.5)
        img[spot & ~inner] = 1.0
        img[inner] = 0.0


def render(case: Case, rng: np.random.Generator) -> np.ndarray:
    """Draw one case as a (224, 224) uint8 grayscale image.

    Radiological convention: the patient faces the viewer, so the patient's
    right is on the image's left. A lesion in the "right lung" is drawn in the
    left half of the image. The patient's right lung is drawn at the organ
    `organs[0]` (image left) and the left at `organs[1]`.
    """
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    c = SIZE / 2 + rng.uniform(-6, 6, size=2)
    img = np.zeros((SIZE, SIZE), np.float32)

    # Body outline and the paired organs, one per side.
    if case.region == "chest":
        body = _ellipse(yy, xx, c[0], c[1], 92, 100)
        organs = [(c[0] - 5, c[1] + s * 45, 62, 30) for s in (-1, 1)]
    elif case.region == "brain":
        body = _ellipse(yy, xx, c[0], c[1], 95, 80)
        organs = [(c[0], c[1] + s * 36, 75, 34) for s in (-1, 1)]
    else:  # abdomen
        body = _ellipse(yy, xx, c[0], c[1], 70, 104)
        organs = [(c[0] + 15, c[1] + s * 50, 26, 17) for s in (-1, 1)]
    img[body] = 0.55
    for cy, cx, ry, rx in organs:
        img[_ellipse(yy, xx, cy, cx, ry, rx)] = 0.25 if case.region == "chest" else 0.4
    if case.region == "brain":  # skull ring
        ring = body & ~_ellipse(yy, xx, c[0], c[1], 87, 72)
        img[ring] = 1.0
    if case.region == "abdomen":  # spine
        img[_ellipse(yy, xx, c[0] + 35, c[1], 12, 12)] = 0.95

    if case.lesion and case.findings == 1:
        _, ocx, ory, orx = organs[0 if case.side == "right" else 1]
        radius = (8 if case.size == "small" else 19) * rng.uniform(0.92, 1.08)
        ly = c[0] + rng.uniform(-0.3, 0.3) * ory
        lx = ocx + rng.uniform(-0.25, 0.25) * orx
        _lesion(img, yy, xx, ly, lx, radius, case.kind)
    elif case.lesion:  # the hard demo: an upper and a lower lesion, 64 px apart
        lesions = (
            (case.side, case.size, case.kind, -1),
            (case.side_2, case.size_2, case.kind_2, 1),
        )
        for side, size, kind, level in lesions:
            _, ocx, _, orx = organs[0 if side == "right" else 1]
            radius = (7 if size == "small" else 14) * rng.uniform(0.92, 1.08)
            ly = c[0] + level * 32 + rng.uniform(-4, 4)
            lx = ocx + rng.uniform(-0.2, 0.2) * orx
            _lesion(img, yy, xx, ly, lx, radius, kind)

    # Modality look.
    if case.modality == "x-ray":
        img = 0.15 + 0.8 * img + 0.04 * rng.standard_normal(img.shape)
        img += 0.15 * (yy / SIZE)  # exposure gradient
    elif case.modality == "ct":
        fov = _ellipse(yy, xx, SIZE / 2, SIZE / 2, 110, 110)
        img = img + 0.08 * rng.standard_normal(img.shape)
        img[~fov] = 0.0
    else:  # mri: smooth, with ringing bands
        img = img * (0.75 + 0.25 * np.sin(xx / 5.0)) + 0.02 * rng.standard_normal(
            img.shape
        )
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@timed("draw")
def make_demo(root: str | Path, n: int = 500, seed: int = 0, findings: int = 1) -> Path:
    """Generate the synthetic demo dataset (idempotent).

    Writes `root/images/demo_00000.png ...`, `root/captions.csv` with columns
    `image,caption,split` and a `README.txt` that labels it synthetic. A folder
    already made with the same `n`, `seed` and `findings` is kept as it is.

    Args:
        root: Folder to write into.
        n: Number of images (several hundred: 70% train, 15% validation, 15% test;
            with `findings=2` the held-out pairings go to test on top of its 15%).
        seed: Everything, images included, follows from it.
        findings: 1 for the demo, 2 for the hard demo.

    Returns:
        The path of `captions.csv`.
    """
    if n < 20:
        raise ValueError(
            f"make_demo needs n >= 20 images to fill three splits, got n={n}."
        )
    root = Path(root)
    csv_path = root / "captions.csv"
    stamp = {"n": n, "seed": seed, "version": VERSION}
    if findings != 1:
        stamp["findings"] = findings
    stamp_path = root / "demo.json"
    if (
        csv_path.exists()
        and stamp_path.exists()
        and json.loads(stamp_path.read_text()) == stamp
    ):
        return csv_path

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = [random_case(rng, findings) for _ in range(n)]
    split = np.full(n, "test", dtype=object)
    order = rng.permutation(n)
    order = order[[not cases[i].held_out for i in order]]  # held out: test only
    n_train = int(round(SPLIT_PERCENT[0][1] / 100 * len(order)))
    n_val = int(round(SPLIT_PERCENT[1][1] / 100 * len(order)))
    split[order[:n_train]] = "train"
    split[order[n_train : n_train + n_val]] = "validation"

    rows = []
    for i, case in enumerate(cases):
        name = f"images/demo_{i:05d}.png"
        pixels = render(case, np.random.default_rng([seed, i]))
        Image.fromarray(pixels, mode="L").save(root / name)
        rows.append(
            {
                "image": name,
                "caption": case.caption,
                "split": split[i],
                **dataclasses.asdict(case),
            }
        )
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_text(
        root / "README.txt",
        "SYNTHETIC demo data generated by radcap.data.demo.make_demo: drawings, "
        "not patients.\n"
        "Captions follow from what is drawn. Patient's right is on the image's left.\n",
    )
    write_text(stamp_path, json.dumps(stamp))  # last: the folder is complete
    return csv_path


def read_cases(root: str | Path) -> pd.DataFrame:
    """The drawn attributes of every demo image, indexed by image id.

    Args:
        root: A folder made by `make_demo`.

    Returns:
        A DataFrame with the `Case` fields (`modality`, `region`, `lesion`,
        `side`, `size`, `kind`) and `caption`, `split`, indexed by image id.
    """
    frame = pd.read_csv(Path(root) / "captions.csv")
    frame.index = [Path(p).stem for p in frame["image"]]
    return frame
