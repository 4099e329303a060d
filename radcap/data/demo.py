"""A synthetic radiology-like dataset that radcap generates itself, for offline runs.

Every image is drawn from a handful of attributes (modality, body region, and a
lesion that is present or absent, on the patient's left or right, small or
large, a nodule or a cyst) and its caption is spelled out from the same
attributes, e.g. "axial ct of the chest shows a small nodule in the right lung".
Since each attribute is drawn independently, no caption can be guessed without
looking at the image. All of it is SYNTHETIC: no patient, no real anatomy.

Stage: data. Imports only the base (`radcap.config`, `radcap.files`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from radcap.config import SPLIT_PERCENT
from radcap.files import atomic_path, write_text

MODALITIES = ("x-ray", "ct", "mri")
PLANES = {"x-ray": "frontal", "ct": "axial", "mri": "axial"}
REGIONS = ("chest", "brain", "abdomen")
ORGANS = {"chest": "lung", "brain": "hemisphere", "abdomen": "kidney"}
SIDES = ("left", "right")
SIZES = ("small", "large")
KINDS = ("nodule", "cyst")
SIZE = 224
VERSION = 3  # bump when the drawing changes, so old folders are regenerated


@dataclasses.dataclass(frozen=True)
class Case:
    """What one synthetic image shows. `side` is the patient's side."""

    modality: str
    region: str
    lesion: bool
    side: str = "left"
    size: str = "small"
    kind: str = "nodule"

    @property
    def caption(self) -> str:
        head = f"{PLANES[self.modality]} {self.modality} of the {self.region} shows"
        if not self.lesion:
            return f"{head} no abnormality"
        where = f"{self.side} {ORGANS[self.region]}"
        return f"{head} a {self.size} {self.kind} in the {where}"


def random_case(rng: np.random.Generator) -> Case:
    """Draw every attribute independently (a lesion in 3 cases of 4)."""
    return Case(
        modality=str(rng.choice(MODALITIES)),
        region=str(rng.choice(REGIONS)),
        lesion=bool(rng.random() < 0.75),
        side=str(rng.choice(SIDES)),
        size=str(rng.choice(SIZES)),
        kind=str(rng.choice(KINDS)),
    )


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render(case: Case, rng: np.random.Generator) -> np.ndarray:
    """Draw one case as a (224, 224) uint8 grayscale image.

    Radiological convention: the patient faces the viewer, so the patient's
    right is on the image's left. A lesion in the "right lung" is drawn in the
    left half of the image.
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

    if case.lesion:
        # patient's right = image left
        sx = -1 if case.side == "right" else 1
        _, ocx, ory, orx = organs[0 if sx < 0 else 1]
        radius = (8 if case.size == "small" else 19) * rng.uniform(0.92, 1.08)
        ly = c[0] + rng.uniform(-0.3, 0.3) * ory
        lx = ocx + rng.uniform(-0.25, 0.25) * orx
        spot = _ellipse(yy, xx, ly, lx, radius, radius)
        if case.kind == "nodule":
            img[spot] = 1.0
        else:  # cyst: dark centre, thin bright rim
            inner = _ellipse(yy, xx, ly, lx, radius - 2.5, radius - 2.5)
            img[spot & ~inner] = 1.0
            img[inner] = 0.0

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


def make_demo(root: str | Path, n: int = 500, seed: int = 0) -> Path:
    """Generate the synthetic demo dataset (idempotent).

    Writes `root/images/demo_00000.png ...`, `root/captions.csv` with columns
    `image,caption,split` and a `README.txt` that labels it synthetic. A folder
    already made with the same `n` and `seed` is kept as it is.

    Args:
        root: Folder to write into.
        n: Number of images (several hundred: 70% train, 15% validation, 15% test).
        seed: Everything, images included, follows from it.

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
    stamp_path = root / "demo.json"
    if (
        csv_path.exists()
        and stamp_path.exists()
        and json.loads(stamp_path.read_text()) == stamp
    ):
        return csv_path

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = [random_case(rng) for _ in range(n)]
    order = rng.permutation(n)
    n_train = int(round(SPLIT_PERCENT[0][1] / 100 * n))
    n_val = int(round(SPLIT_PERCENT[1][1] / 100 * n))
    split = np.empty(n, dtype=object)
    split[order[:n_train]] = "train"
    split[order[n_train : n_train + n_val]] = "validation"
    split[order[n_train + n_val :]] = "test"

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
