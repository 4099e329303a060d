"""Data: caption sources read into one manifest with a skip report, the
synthetic demo, ROCO found or downloaded, and image files (DICOM included)
read as a viewer shows them. Imports no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from radcap.core.config import SOURCES, SPLITS
from radcap.data.demo import make_demo
from radcap.data.layouts import (
    load_coco,
    load_csv,
    load_demo,
    load_iu_xray,
    load_rocov2,
)
from radcap.data.manifest import (
    MANIFEST_COLUMNS,
    SKIP_COLUMNS,
    Dataset,
    hash_split,
    profile,
    save_profile,
)
from radcap.data.roco import find_roco, load_roco, roco_layout

__all__ = [
    "MANIFEST_COLUMNS",
    "SKIP_COLUMNS",
    "SPLITS",
    "Dataset",
    "hash_split",
    "load",
    "profile",
    "save_profile",
]


def load(config, root: str | Path = ".") -> Dataset:
    """The dataset a `Config` names, read from `config.dataset_dir(root)`.

    Args:
        config: A `radcap.core.config.Config`; `source` picks the loader: `"demo"`
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
        make_demo(
            folder, n=config.demo_size, seed=config.seed, findings=config.demo_findings
        )
        return load_demo(folder)
    if source == "csv":
        return load_csv(folder / config.caption_file)
    if source == "roco":
        try:
            roco_layout(folder)
        except FileNotFoundError:
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
