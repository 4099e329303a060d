"""Loaders of the caption layouts other than ROCO: CSV, demo, ROCOv2, IU X-ray, COCO.

- csv: columns `image` (relative to the CSV's folder), `caption`, optional
  `split` and `image_id`; several rows per image allowed; `,`, `;` or tabs.
- demo: `captions.csv` (`image,caption,split`) made by `radcap.data.demo`.
- ROCOv2: `<split>_captions.csv` (`ID,Caption`), images `<split>/<ID>.jpg`,
  where split is train, valid or test.
- IU X-ray (Kaggle `raddar/chest-xrays-indiana-university`):
  `indiana_reports.csv`, `indiana_projections.csv`, `images/images_normalized/`.
- COCO-style captions JSON: `images` and `annotations` lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from radcap.data.manifest import (
    Dataset,
    build,
    from_table,
    hash_split,
    join,
    read_table,
    read_text,
    split_or_hash,
    text_column,
)

ROCOV2_FOLDERS = {
    "train": ("train",),
    "validation": ("valid", "validation", "val"),
    "test": ("test",),
}
IU_IMAGES = Path("images") / "images_normalized"


def load_csv(csv_path: str | Path, root: str | Path | None = None) -> Dataset:
    """A generic caption CSV.

    Args:
        csv_path: CSV with columns `image` (a path relative to `root`) and
            `caption`, optionally `split` (train/validation/test; val, valid,
            dev also read) and `image_id` (default: the image path relative to
            `root`, with `/` separators). Several rows may name one image.
            Separated by commas, or by `;` or tabs (a header with no comma but
            those is read so: spreadsheets in many languages save `;`).
        root: Folder the image paths start from; default the CSV's folder.
            Paths that lead outside it (`../..`, absolute paths) are skipped.

    Returns:
        The `Dataset`. Rows without a split get `hash_split(image_id)`.

    Raises:
        ValueError: The CSV lacks the `image` or `caption` column, or is no CSV.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent if root is None else Path(root)
    frame = read_table(csv_path, ["image", "caption"], ("split", "image_id"))
    return from_table(frame, root, lambda key: key)


def load_demo(root: str | Path) -> Dataset:
    """The demo folder made by `radcap.data.demo.make_demo`; ids are file stems."""
    root = Path(root)
    csv_path = root / "captions.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"No demo dataset in {root} (captions.csv missing): make one with "
            f"radcap.data.demo.make_demo({str(root)!r})."
        )
    frame = read_table(csv_path, ["image", "caption", "split"])
    return from_table(frame, root, lambda key: Path(key).stem)


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
        frame = read_table(root / f"{found[0]}_captions.csv", ["id", "caption"])
        images = os.path.abspath(root / found[0])
        split_ids = [i.strip() for i in text_column(frame["id"])]
        ids += split_ids
        paths += [join(images, f"{i}.jpg") if i else "" for i in split_ids]
        captions += text_column(frame["caption"])
        splits += [split] * len(split_ids)
    if not ids and not any(root.glob("*_captions.csv")):
        raise FileNotFoundError(
            f"No ROCOv2 caption files in {root}: expected train_captions.csv, "
            "valid_captions.csv and test_captions.csv beside the train/, valid/ "
            "and test/ image folders."
        )
    return build(ids, paths, captions, splits, root)


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
    reports = read_table(root / "indiana_reports.csv", ["uid", *fields])
    texts = {}
    for uid, *parts in zip(*(text_column(reports[c]) for c in ("uid", *fields))):
        texts[uid.strip()] = " ".join(p.strip() for p in parts if p.strip())
    views = read_table(
        root / "indiana_projections.csv", ["uid", "filename", "projection"]
    )
    images = os.path.abspath(root / IU_IMAGES)
    ids, paths, captions, splits, skipped = [], [], [], [], []
    for uid, filename, view in zip(
        *(text_column(views[c]) for c in ("uid", "filename", "projection"))
    ):
        uid, filename, path = uid.strip(), filename.strip(), join(images, filename)
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
    return build(ids, paths, captions, splits, root, skipped)


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
        data = json.loads(read_text(captions_json))
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
            join(images, str(entry.get("file_name") or "")),
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
        splits.append(split_or_hash(split or own_split, image_id))
    return build(ids, paths, captions, splits, image_dir, skipped)
