"""Every caption source read into one manifest, with a report of what was skipped.

A loader returns a `Dataset`: the manifest (one row per caption, columns
`image_id, path, caption, split`) and the skip report (one row per input row
that was dropped, with the reason). Nothing is dropped silently: missing and
0-byte image files, empty or non-UTF-8 captions, paths that leave the dataset
folder, duplicate rows and images listed in two splits all land in the report.
Image files are only looked up here (one `os.stat` each), never decoded: a file
that exists but cannot be decoded is reported later by `radcap.features`.

Layouts:

- demo: `captions.csv` (`image,caption,split`) made by `radcap.demo.make_demo`.
- csv: columns `image` (relative to the CSV's folder), `caption`, optional
  `split`; several rows per image allowed.
- ROCO on Kaggle (`virajbagal/roco-dataset`): `all_data/<split>/radiology/images/
  PMC<id>_<figure>.jpg`, captions in `all_data/<split>/radiology<short>data.csv`
  or `all_data/<split>/radiology/<short>data.csv` (`short` is train, val, test),
  columns `id,name,caption`; captions are quoted and span two lines.
- ROCO, original repository (`razorx89/roco-dataset`): `data/<split>/radiology/
  captions.txt` (`ROCO_00001<TAB> caption`), images `images/ROCO_00001.jpg` or
  the PMC file name listed in `licences.txt` (`ROCO_ID,PMC_ID,CC`).
- ROCOv2: `<split>_captions.csv` (`ID,Caption`), images `<split>/<ID>.jpg`,
  where split is train, valid or test.
- IU X-ray (Kaggle `raddar/chest-xrays-indiana-university`):
  `indiana_reports.csv`, `indiana_projections.csv`, `images/images_normalized/`.
- COCO-style captions JSON: `images` and `annotations` lists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.config import SOURCES
from radcap.text import Vocabulary, clean_caption

MANIFEST_COLUMNS = ["image_id", "path", "caption", "split"]
SKIP_COLUMNS = ["image_id", "path", "reason"]
SPLITS = ("train", "validation", "test")
# Percent of keys per split when a source has no splits of its own.
SPLIT_PERCENT = (("train", 70), ("validation", 15), ("test", 15))
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "restval": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
ROCO_SHORT = {"train": "train", "validation": "val", "test": "test"}
ROCOV2_FOLDERS = {
    "train": ("train",),
    "validation": ("valid", "validation", "val"),
    "test": ("test",),
}
IU_IMAGES = Path("images") / "images_normalized"

# Bytes that are not UTF-8 survive reading as lone surrogates (surrogateescape).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


@dataclasses.dataclass
class Dataset:
    """A manifest of captioned images and the report of what was left out.

    Attributes:
        manifest: One row per caption, columns `MANIFEST_COLUMNS`: `image_id`
            (str, one per image file), `path` (absolute, str), `caption`
            (cleaned by `radcap.text.clean_caption`, never empty) and `split`
            (one of `SPLITS`). An image with several captions has several rows.
        skipped: One row per dropped input row, columns `SKIP_COLUMNS`, with a
            short human `reason` such as "missing image file".
        root: The dataset folder.
    """

    manifest: pd.DataFrame
    skipped: pd.DataFrame
    root: Path

    def split(self, name: str) -> pd.DataFrame:
        """The manifest rows of one split, in manifest order."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}: expected one of {SPLITS}.")
        rows = self.manifest[self.manifest["split"] == name]
        return rows.reset_index(drop=True)

    def images(self, split: str) -> pd.DataFrame:
        """One row per image of a split (columns `image_id, path`), first seen first."""
        rows = self.split(split).drop_duplicates("image_id")
        return rows[["image_id", "path"]].reset_index(drop=True)

    def references(self, split: str) -> dict[str, list[str]]:
        """Every caption of each image of a split: `{image_id: [caption, ...]}`."""
        rows = self.split(split)
        out: dict[str, list[str]] = {}
        for image_id, caption in zip(rows["image_id"], rows["caption"]):
            out.setdefault(image_id, []).append(caption)
        return out

    def counts(self) -> pd.DataFrame:
        """Images and captions per split, indexed by split name."""
        groups = self.manifest.groupby("split")
        counts = {"images": groups["image_id"].nunique(), "captions": groups.size()}
        return pd.DataFrame(counts, index=list(SPLITS)).fillna(0).astype(int)

    def summary(self) -> str:
        """A few printable lines: counts per split and skipped rows by reason."""
        counts = self.counts()
        lines = [f"{self.root}"]
        for split, row in counts.iterrows():
            lines.append(
                f"  {split:<10} {row['images']:>7} images {row['captions']:>7} captions"
            )
        lines.append(f"  skipped    {len(self.skipped):>7} rows")
        for reason, n in Counter(self.skipped["reason"]).most_common():
            lines.append(f"    {n:>7}  {reason}")
        return "\n".join(lines)


def hash_split(key: str) -> str:
    """A split that depends on `key` only: 70% train, 15% validation, 15% test.

    The same key (an image path, a patient id) always lands in the same split,
    whatever else the dataset holds, so adding images never moves old ones.
    """
    bucket = zlib.crc32(str(key).encode("utf-8", "surrogateescape")) % 100
    for split, percent in SPLIT_PERCENT:
        if bucket < percent:
            return split
        bucket -= percent
    return SPLITS[-1]


# Reading files: every value is text, bytes that are not UTF-8 kept as surrogates.


def _read_table(
    path: Path, expected: list[str], optional: tuple[str, ...] = (), sep: str = ","
) -> pd.DataFrame:
    """A CSV as text columns, with column names matched case-insensitively."""
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=object,
            keep_default_na=False,
            encoding="utf-8-sig",
            encoding_errors="surrogateescape",
        )
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path} is empty: expected a header with columns {expected}."
        ) from None
    except pd.errors.ParserError as err:
        raise ValueError(
            f"{path} is not a readable CSV ({err}). Fields with commas or line "
            "breaks must be in double quotes."
        ) from None
    names = {str(c).strip().lower(): c for c in frame.columns}
    missing = [c for c in expected if c not in names]
    if missing:
        also = f" (optional {list(optional)})" if optional else ""
        raise ValueError(
            f"{path} has columns {[str(c) for c in frame.columns]}, expected "
            f"{expected}{also}; missing {missing}. Rename the columns, or use the "
            "loader for this layout."
        )
    wanted = [c for c in (*expected, *optional) if c in names]
    return frame[[names[c] for c in wanted]].set_axis(wanted, axis=1)


def _text(column) -> list[str]:
    return [v if isinstance(v, str) else "" for v in column]


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", "surrogateescape")


def _join(folder: str, name: str) -> str:
    """`folder/name` normalised without touching the disk; "" for no name."""
    name = name.strip().replace("\\", "/")
    return os.path.normpath(os.path.join(folder, name)) if name else ""


def _stat_problem(path: str) -> str | None:
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "missing image file"
    except OSError as err:
        return f"image file not readable ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "image path is not a file"
    if info.st_size == 0:
        return "empty image file (0 bytes)"
    return None


def _build(ids, paths, captions, splits, root, skipped=()) -> Dataset:
    """Check every row and keep the good ones; the one place rows are dropped.

    Args:
        ids, paths, captions, splits: Parallel lists; `paths` absolute and
            normalised ("" for none), `captions` raw text, `splits` names
            (anything outside `SPLITS` is reported as an unknown split).
        root: Dataset folder; a path outside it is refused.
        skipped: Rows a loader already dropped, as `[image_id, path, reason]`.
    """
    root = Path(os.path.abspath(root))
    prefix = os.path.join(str(root), "")
    problems: dict[str, str | None] = {}
    first_path: dict[str, str] = {}
    first_split: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], [list(row) for row in skipped]
    for image_id, path, raw, split in zip(ids, paths, captions, splits):
        caption = ""
        if not path:
            reason = "no image file name"
        elif not path.startswith(prefix):
            reason = "path outside dataset root"
        else:
            if path not in problems:
                problems[path] = _stat_problem(path)
            reason = problems[path]
        if reason is None:
            if _NOT_UTF8.search(raw):
                reason = "caption is not valid UTF-8"
            elif not raw.strip():
                reason = "empty caption"
            elif not (caption := clean_caption(raw)):
                reason = "caption has no words (only punctuation)"
            elif split not in SPLITS:
                reason = f"unknown split {split!r} (expected one of {SPLITS})"
            elif first_path.setdefault(image_id, path) != path:
                reason = "image id already used for another file"
            elif first_split.setdefault(image_id, split) != split:
                reason = f"image already in the {first_split[image_id]} split"
            elif (image_id, caption) in seen:
                reason = "duplicate row"
        if reason is None:
            seen.add((image_id, caption))
            kept.append((image_id, path, caption, split))
        else:
            dropped.append([image_id, path, reason])
    return Dataset(
        manifest=pd.DataFrame(kept, columns=MANIFEST_COLUMNS),
        skipped=pd.DataFrame(dropped, columns=SKIP_COLUMNS),
        root=root,
    )


def _split_or_hash(raw: str, key: str) -> str:
    raw = raw.strip()
    return SPLIT_NAMES.get(raw.lower(), raw) if raw else hash_split(key)


def _from_table(frame: pd.DataFrame, root: Path, id_of) -> Dataset:
    """Rows of an `image, caption[, split, image_id]` table; ids from `id_of(path)`.

    The path relative to `root` (with `/`) is also the key of `hash_split`.
    """
    base = os.path.abspath(root)
    inside = os.path.join(base, "")
    names = _text(frame["image"])
    paths = [_join(base, name) for name in names]
    keys = [
        os.path.relpath(p, base).replace(os.sep, "/") if p.startswith(inside) else n
        for p, n in zip(paths, names)
    ]
    ids = [id_of(key) for key in keys]
    if "image_id" in frame:
        ids = [given.strip() or i for given, i in zip(_text(frame["image_id"]), ids)]
    raw_splits = _text(frame["split"]) if "split" in frame else [""] * len(frame)
    splits = [_split_or_hash(s, key) for s, key in zip(raw_splits, keys)]
    return _build(ids, paths, _text(frame["caption"]), splits, root)


def load_csv(csv_path: str | Path, root: str | Path | None = None) -> Dataset:
    """A generic caption CSV.

    Args:
        csv_path: CSV with columns `image` (a path relative to `root`) and
            `caption`, optionally `split` (train/validation/test; val, valid,
            dev also read) and `image_id` (default: the image path relative to
            `root`, with `/` separators). Several rows may name one image.
        root: Folder the image paths start from; default the CSV's folder.
            Paths that lead outside it (`../..`, absolute paths) are skipped.

    Returns:
        The `Dataset`. Rows without a split get `hash_split(image_id)`.

    Raises:
        ValueError: The CSV lacks the `image` or `caption` column, or is no CSV.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent if root is None else Path(root)
    frame = _read_table(csv_path, ["image", "caption"], ("split", "image_id"))
    return _from_table(frame, root, lambda key: key)


def load_demo(root: str | Path) -> Dataset:
    """The demo folder made by `radcap.demo.make_demo`; image ids are file stems."""
    root = Path(root)
    csv_path = root / "captions.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"No demo dataset in {root} (captions.csv missing): make one with "
            f"radcap.demo.make_demo({str(root)!r})."
        )
    frame = _read_table(csv_path, ["image", "caption", "split"])
    return _from_table(frame, root, lambda key: Path(key).stem)


# ROCO.


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
    return _build(ids, paths, captions, splits, root, skipped)


def _roco_kaggle(base: Path, split: str, category: str):
    """Ids, paths, raw captions and skipped rows of one Kaggle caption CSV."""
    csv_path = roco_caption_csv(base, split, category)
    if csv_path is None:
        return [], [], [], []
    frame = _read_table(csv_path, ["id", "name", "caption"])
    images = os.path.abspath(base / split / category / "images")
    names = _text(frame["name"])
    ids = [i.strip() or Path(n).stem for i, n in zip(_text(frame["id"]), names)]
    paths = [_join(images, name) for name in names]
    return ids, paths, _text(frame["caption"]), []


def _roco_original(base: Path, split: str, category: str):
    """Ids, paths, raw captions and skipped rows of one `captions.txt`."""
    folder = base / split / category
    captions_path = folder / "captions.txt"
    if not captions_path.is_file():
        return [], [], [], []
    pmc_names = {}
    if (folder / "licences.txt").is_file():
        licences = _read_table(folder / "licences.txt", ["roco_id", "pmc_id"])
        pmc_names = dict(zip(_text(licences["roco_id"]), _text(licences["pmc_id"])))
    images = folder / "images"
    listing = set(os.listdir(images)) if images.is_dir() else set()
    images = os.path.abspath(images)
    ids, paths, captions, skipped = [], [], [], []
    for number, line in enumerate(_read_text(captions_path).split("\n"), 1):
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
        paths.append(_join(images, name))
        captions.append(caption)
    return ids, paths, captions, skipped


def load_rocov2(root: str | Path) -> Dataset:
    """ROCOv2: `<split>_captions.csv` (`ID,Caption`) and images `<split>/<ID>.jpg`.

    The split folders are `train`, `valid` (read as validation) and `test`.
    """
    root = Path(root)
    ids, paths, captions, splits = [], [], [], []
    for split, folders in ROCOV2_FOLDERS.items():
        found = [f for f in folders if (root / f"{f}_captions.csv").is_file()]
        if not found:
            continue
        frame = _read_table(root / f"{found[0]}_captions.csv", ["id", "caption"])
        images = os.path.abspath(root / found[0])
        split_ids = [i.strip() for i in _text(frame["id"])]
        ids += split_ids
        paths += [_join(images, f"{i}.jpg") if i else "" for i in split_ids]
        captions += _text(frame["caption"])
        splits += [split] * len(split_ids)
    if not ids and not any(root.glob("*_captions.csv")):
        raise FileNotFoundError(
            f"No ROCOv2 caption files in {root}: expected train_captions.csv, "
            "valid_captions.csv and test_captions.csv beside the train/, valid/ "
            "and test/ image folders."
        )
    return _build(ids, paths, captions, splits, root)


def load_iu_xray(
    root: str | Path,
    projection: str | None = "Frontal",
    fields: tuple[str, ...] = ("findings", "impression"),
) -> Dataset:
    """IU X-ray (Indiana University chest x-rays, the Kaggle copy).

    The caption of an image is its report's `fields` joined by a space. Splits
    follow `hash_split(uid)`, so all images of one patient share a split.

    Args:
        root: Folder with `indiana_reports.csv`, `indiana_projections.csv` and
            `images/images_normalized/`.
        projection: Keep only this projection (`"Frontal"` or `"Lateral"`,
            any case); `None` keeps all. Other projections are reported.
        fields: Report columns that make the caption, in order.
    """
    root = Path(root)
    if not fields:
        raise ValueError("load_iu_xray needs at least one report field, got none.")
    fields = tuple(f.lower() for f in fields)
    reports = _read_table(root / "indiana_reports.csv", ["uid", *fields])
    texts = {}
    for uid, *parts in zip(*(_text(reports[c]) for c in ("uid", *fields))):
        texts[uid.strip()] = " ".join(p.strip() for p in parts if p.strip())
    views = _read_table(
        root / "indiana_projections.csv", ["uid", "filename", "projection"]
    )
    images = os.path.abspath(root / IU_IMAGES)
    ids, paths, captions, splits, skipped = [], [], [], [], []
    for uid, filename, view in zip(
        *(_text(views[c]) for c in ("uid", "filename", "projection"))
    ):
        uid, filename, path = uid.strip(), filename.strip(), _join(images, filename)
        if projection and view.strip().lower() != projection.lower():
            reason = f"{view.strip() or 'unknown'} projection ({projection} chosen)"
        elif uid not in texts:
            reason = "no report with this uid"
        elif not texts[uid]:
            reason = f"report has no {' or '.join(fields)} text"
        else:
            ids.append(filename)
            paths.append(path)
            captions.append(texts[uid])
            splits.append(hash_split(uid))
            continue
        skipped.append([filename, path, reason])
    return _build(ids, paths, captions, splits, root, skipped)


def load_coco(
    captions_json: str | Path, image_dir: str | Path, split: str | None = None
) -> Dataset:
    """A COCO-style captions file: `{"images": [...], "annotations": [...]}`.

    Every annotation is one manifest row, so an image has several captions.

    Args:
        captions_json: The JSON file; `images` entries need `id` and
            `file_name`, `annotations` entries `image_id` and `caption`.
        image_dir: Folder the `file_name`s are in.
        split: Put every image in this split (e.g. "validation" for
            `captions_val2017.json`); default an image's own `"split"` key,
            else `hash_split(image_id)`.
    """
    captions_json = Path(captions_json)
    try:
        data = json.loads(_read_text(captions_json))
    except json.JSONDecodeError as err:
        raise ValueError(f"{captions_json} is not valid JSON ({err}).") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{captions_json} has keys {found}, expected lists 'images' and "
            "'annotations' (COCO captions format)."
        )
    images = os.path.abspath(image_dir)
    files = {
        str(entry.get("id")): (
            _join(images, str(entry.get("file_name") or "")),
            str(entry.get("split") or ""),
        )
        for entry in data["images"]
    }
    ids, paths, captions, splits, skipped = [], [], [], [], []
    for annotation in data["annotations"]:
        image_id = str(annotation.get("image_id"))
        if image_id not in files:
            skipped.append([image_id, "", "annotation for an image not in 'images'"])
            continue
        path, own_split = files[image_id]
        ids.append(image_id)
        paths.append(path)
        caption = annotation.get("caption")
        captions.append(caption if isinstance(caption, str) else "")
        splits.append(_split_or_hash(split or own_split, image_id))
    return _build(ids, paths, captions, splits, image_dir, skipped)


def load(config, root: str | Path = ".") -> Dataset:
    """The dataset a `Config` names, read from `config.dataset_dir(root)`.

    Args:
        config: A `radcap.config.Config`; `source` picks the loader: `"demo"`
            (generated there first if needed), `"csv"` (`caption_file` in that
            folder), `"roco"` (that folder, or the Kaggle input mount when the
            folder holds no ROCO; `include_nonradiology`), `"rocov2"`,
            `"iu_xray"` (`projection`, `report_fields`), or `"coco"`
            (`caption_file` is the JSON, the images are in `images/`).
        root: Folder that `config.data_dir` is relative to.

    Returns:
        The `Dataset`.
    """
    folder = config.dataset_dir(root)
    source = config.source
    if source == "demo":
        from radcap.demo import make_demo

        make_demo(folder, n=config.demo_size, seed=config.seed)
        return load_demo(folder)
    if source == "csv":
        return load_csv(folder / config.caption_file)
    if source == "roco":
        try:
            roco_layout(folder)
        except FileNotFoundError:
            from radcap.download import find_roco

            mounted = find_roco()
            if mounted is None:
                raise
            folder = mounted
        return load_roco(folder, config.include_nonradiology)
    if source == "rocov2":
        return load_rocov2(folder)
    if source == "iu_xray":
        fields = tuple(f.strip() for f in config.report_fields.split(","))
        return load_iu_xray(folder, config.projection, fields)
    if source == "coco":
        return load_coco(folder / config.caption_file, folder / "images")
    raise ValueError(f"Unknown dataset source {source!r}: expected one of {SOURCES}.")


# The dataset report.


def report(dataset: Dataset, vocab_min_count: int = 1, max_len: int = 40) -> dict:
    """Counts, skipped rows, caption lengths and vocabulary of a dataset.

    Args:
        dataset: A loaded `Dataset`.
        vocab_min_count: The vocabulary keeps train words seen this often.
        max_len: Caption length the model keeps; the share of longer captions
            is reported.

    Returns:
        A JSON-ready dict: `splits` (`{split: {"images", "captions"}}`),
        `images`, `captions`, `skipped` (`{"rows", "by_reason"}`),
        `caption_words` (`mean`, `median`, `p95`, `max`, `over_max_len`: the
        share of captions longer than `max_len`) and `vocabulary` (`size`
        with the 4 special tokens, `min_count`, `coverage` of each split's
        words by the vocabulary built on the train split).
    """
    manifest = dataset.manifest
    counts = dataset.counts()
    lengths = np.array([len(c.split()) for c in manifest["caption"]], dtype=float)
    if len(lengths):
        words = {
            "mean": round(float(lengths.mean()), 2),
            "median": float(np.median(lengths)),
            "p95": round(float(np.percentile(lengths, 95)), 2),
            "max": int(lengths.max()),
            "over_max_len": round(float((lengths > max_len).mean()), 4),
        }
    else:
        words = dict.fromkeys(("mean", "median", "p95", "max", "over_max_len"))
    train = dataset.split("train")["caption"]
    vocab = Vocabulary.build(train, vocab_min_count, max_len)
    by_reason = Counter(dataset.skipped["reason"]).most_common()
    return {
        "root": str(dataset.root),
        "splits": {
            split: {k: int(v) for k, v in row.items()}
            for split, row in counts.iterrows()
        },
        "images": int(manifest["image_id"].nunique()),
        "captions": len(manifest),
        "skipped": {"rows": len(dataset.skipped), "by_reason": dict(by_reason)},
        "caption_words": words,
        "vocabulary": {
            "size": len(vocab),
            "min_count": vocab_min_count,
            "max_len": max_len,
            "coverage": {
                split: round(vocab.coverage(dataset.split(split)["caption"]), 4)
                for split in SPLITS
            },
        },
    }


def save_report(dataset: Dataset, folder: str | Path, **kwargs) -> dict:
    """Write `report.json`, `manifest.csv` and `skipped.csv` into `folder`.

    Args:
        dataset: A loaded `Dataset`.
        folder: Where to write (made if needed).
        **kwargs: `vocab_min_count`, `max_len` for `report`.

    Returns:
        The report dict.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = report(dataset, **kwargs)
    (folder / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    # Paths that were not UTF-8 on disk are written with backslash escapes.
    for name, frame in (("manifest", dataset.manifest), ("skipped", dataset.skipped)):
        frame.to_csv(folder / f"{name}.csv", index=False, errors="backslashreplace")
    return summary
