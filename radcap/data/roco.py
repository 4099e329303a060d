"""ROCO: its two layouts, their loaders, and finding a complete copy on this machine.

Works offline (`radcap.data.download` fetches ROCO and builds on this module).

- ROCO on Kaggle (`virajbagal/roco-dataset`): `all_data/<split>/radiology/images/
  PMC<id>_<figure>.jpg`, captions in `all_data/<split>/radiology<short>data.csv`
  or `all_data/<split>/radiology/<short>data.csv` (`short` is train, val, test),
  columns `id,name,caption`; captions are quoted and span two lines.
- ROCO, original repository (`razorx89/roco-dataset`): `data/<split>/radiology/
  captions.txt` (`ROCO_00001<TAB> caption`), images `images/ROCO_00001.jpg` or
  the PMC file name listed in `licences.txt` (`ROCO_ID,PMC_ID,CC`).
"""

from __future__ import annotations

import os
from pathlib import Path

from radcap.core.config import SPLITS
from radcap.data.manifest import (
    Dataset,
    build,
    join,
    read_table,
    read_text,
    text_column,
)

ROCO_SHORT = {"train": "train", "validation": "val", "test": "test"}
# Where Kaggle notebooks mount the dataset once it is added as an input.
KAGGLE_INPUT = Path("/kaggle/input/roco-dataset")


def roco_caption_csv(
    base: str | Path, split: str, category: str = "radiology"
) -> Path | None:
    """The caption CSV of one split in the Kaggle ROCO layout, or None.

    Kaggle holds each file twice, as `<split>/radiology<short>data.csv` and
    `<split>/radiology/<short>data.csv`; the first one found is the one read.

    Args:
        base: The `all_data` folder.
        split: One of `SPLITS`.
        category: `"radiology"` or `"non-radiology"`.
    """
    base = Path(base)
    short = ROCO_SHORT[split]
    folder = base / split
    candidates = dict.fromkeys(
        [
            folder / f"{category}{short}data.csv",
            folder / f"{category.replace('-', '')}{short}data.csv",
            folder / category / f"{short}data.csv",
        ]
    )
    return next((p for p in candidates if p.is_file()), None)


def roco_layout(root: str | Path) -> tuple[str, Path]:
    """Which ROCO layout `root` holds: `("kaggle" | "original", base folder)`.

    `root` may be the folder that holds `all_data` (a Kaggle download or the
    Kaggle input mount), `all_data` itself, the clone of the original
    repository (holding `data`) or its `data` folder.

    Raises:
        FileNotFoundError: Neither layout is there; the message says what was
            looked for and how to get ROCO.
    """
    root = Path(root)
    for base in (root / "all_data", root):
        if any(roco_caption_csv(base, split, "radiology") for split in SPLITS):
            return "kaggle", base
    for base in (root / "data", root):
        if any((base / s / "radiology" / "captions.txt").is_file() for s in SPLITS):
            return "original", base
    raise FileNotFoundError(
        f"No ROCO dataset in {root}: expected all_data/<split>/radiology"
        "<train|val|test>data.csv (the Kaggle copy) or data/<split>/radiology/"
        "captions.txt (razorx89/roco-dataset). Get it with `radcap download roco "
        f"--dest {root}`, attach virajbagal/roco-dataset in a Kaggle notebook, "
        "or use the demo preset."
    )


def load_roco(root: str | Path, include_nonradiology: bool = False) -> Dataset:
    """ROCO in either layout (see `roco_layout`), with its own splits.

    Image ids are the ROCO ids (`ROCO_00002`). Missing and 0-byte images,
    empty captions and duplicate rows go to the skip report.

    Args:
        root: The dataset folder.
        include_nonradiology: Also read the `non-radiology` folders.
    """
    root = Path(root)
    layout, base = roco_layout(root)
    read = _roco_kaggle if layout == "kaggle" else _roco_original
    categories = ["radiology"]
    if include_nonradiology:
        categories.append("non-radiology")
    ids, paths, captions, splits, skipped = [], [], [], [], []
    for split in SPLITS:
        for category in categories:
            part = read(base, split, category)
            ids += part[0]
            paths += part[1]
            captions += part[2]
            splits += [split] * len(part[0])
            skipped += part[3]
    return build(ids, paths, captions, splits, root, skipped)


def _roco_kaggle(base: Path, split: str, category: str):
    """Ids, paths, raw captions and skipped rows of one Kaggle caption CSV."""
    csv_path = roco_caption_csv(base, split, category)
    if csv_path is None:
        return [], [], [], []
    frame = read_table(csv_path, ["id", "name", "caption"])
    images = os.path.abspath(base / split / category / "images")
    names = text_column(frame["name"])
    ids = [i.strip() or Path(n).stem for i, n in zip(text_column(frame["id"]), names)]
    paths = [join(images, name) for name in names]
    return ids, paths, text_column(frame["caption"]), []


def _roco_original(base: Path, split: str, category: str):
    """Ids, paths, raw captions and skipped rows of one `captions.txt`."""
    folder = base / split / category
    captions_path = folder / "captions.txt"
    if not captions_path.is_file():
        return [], [], [], []
    pmc_names = {}
    if (folder / "licences.txt").is_file():
        licences = read_table(folder / "licences.txt", ["roco_id", "pmc_id"])
        pmc_names = dict(
            zip(text_column(licences["roco_id"]), text_column(licences["pmc_id"]))
        )
    images = folder / "images"
    listing = set(os.listdir(images)) if images.is_dir() else set()
    images = os.path.abspath(images)
    ids, paths, captions, skipped = [], [], [], []
    for number, line in enumerate(read_text(captions_path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        roco_id, tab, caption = line.partition("\t")
        roco_id = roco_id.strip()
        if not tab:
            where = f"{captions_path}:{number}"
            skipped.append(["", where, "line without a tab after the id"])
            continue
        name = f"{roco_id}.jpg"
        if name not in listing and roco_id in pmc_names:
            name = pmc_names[roco_id]
        ids.append(roco_id)
        paths.append(join(images, name))
        captions.append(caption)
    return ids, paths, captions, skipped


def check_roco_layout(root: str | Path) -> list[str]:
    """What the Kaggle ROCO layout lacks in `root`; an empty list when complete.

    Args:
        root: The folder holding `all_data`, or `all_data` itself.

    Returns:
        One entry per missing piece, e.g. `"all_data/test/radiology/images/"`,
        relative to `root`.
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root} (no such folder)"]
    base = root / "all_data" if (root / "all_data").is_dir() else root
    missing = []
    for split in SPLITS:
        folder = base / split
        if roco_caption_csv(base, split) is None:
            short = ROCO_SHORT[split]
            missing.append(
                f"{(folder / f'radiology{short}data.csv').relative_to(root)} "
                f"(or {(folder / 'radiology' / f'{short}data.csv').relative_to(root)})"
            )
        images = folder / "radiology" / "images"
        if not images.is_dir():
            missing.append(f"{images.relative_to(root)}/")
        else:
            with os.scandir(images) as entries:
                if next(entries, None) is None:
                    missing.append(f"{images.relative_to(root)}/ (empty)")
    return missing


def find_roco(
    local_dir: str | Path | None = None, kaggle_input: str | Path | None = None
) -> Path | None:
    """A complete ROCO copy already on this machine, without downloading.

    Args:
        local_dir: A folder to try after the Kaggle input mount.
        kaggle_input: The Kaggle mount to try first; default `KAGGLE_INPUT`.

    Returns:
        The Kaggle mount if it passes `check_roco_layout`, else `local_dir` if
        it passes that check or holds the original layout of the
        razorx89/roco-dataset repository; otherwise None.
    """
    mount = Path(kaggle_input or KAGGLE_INPUT)
    if mount.is_dir() and not check_roco_layout(mount):
        return mount
    if local_dir is not None and Path(local_dir).is_dir():
        local_dir = Path(local_dir)
        if not check_roco_layout(local_dir):
            return local_dir
        try:
            if roco_layout(local_dir)[0] == "original":
                return local_dir
        except FileNotFoundError:
            pass
    return None
