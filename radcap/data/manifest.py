"""The manifest: every caption source read into one table, plus a skip report.

Caption cleaning (`radcap.core.text`) decides whether a caption has words at
all, so text normalisation sits below the data stage.

A loader returns a `Dataset`: the manifest (one row per caption, columns
`image_id, path, caption, split`) and the skip report (one row per input row
that was dropped, with the reason). Nothing is dropped silently: missing and
0-byte image files, empty or non-UTF-8 captions, paths that leave the dataset
folder (symbolic links followed), duplicate rows and images listed in two
splits all land in the report. Image files are only looked up here (one
`os.stat` each), never decoded: a file that exists but cannot be decoded is
reported later by `radcap.features.cache`. The loaders of each layout live in
`radcap.data.layouts` and `radcap.data.roco`; this module is what they share.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.config import SPLIT_PERCENT, SPLITS
from radcap.core.files import atomic_path, write_json
from radcap.core.text import Vocabulary, clean_caption

MANIFEST_COLUMNS = ["image_id", "path", "caption", "split"]
SKIP_COLUMNS = ["image_id", "path", "reason"]
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

# Bytes that are not UTF-8 survive reading as lone surrogates (surrogateescape).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


@dataclasses.dataclass
class Dataset:
    """A manifest of captioned images and the report of what was left out.

    Attributes:
        manifest: One row per caption, columns `MANIFEST_COLUMNS`: `image_id`
            (str, one per image file), `path` (absolute, str), `caption`
            (cleaned by `radcap.core.text.clean_caption`, never empty) and `split`
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


def read_table(
    path: Path, expected: list[str], optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A CSV as text columns, with column names matched case-insensitively.

    Separated by commas, or by `;` or tabs when the header has no comma but
    those (spreadsheets save `;` where the comma is the decimal mark).
    """
    try:
        frame = pd.read_csv(
            path,
            sep=_separator(path),
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
    header = [str(c).strip().lower() for c in frame.columns]
    # pandas renames a repeated header "caption" to "caption.1".
    twice = [
        c
        for c in (*expected, *optional)
        if header.count(c) > 1
        or any(re.fullmatch(rf"{re.escape(c)}\.\d+", h) for h in header)
    ]
    if twice:
        raise ValueError(
            f"{path} has the column {twice[0]!r} more than once (columns "
            f"{[str(c) for c in frame.columns]}): radcap would not know which one "
            "to read. Rename or remove the extra column."
        )
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


def _separator(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as file:
        header = file.readline(65536)
    return "," if "," in header else max(",;\t", key=header.count)


def text_column(column) -> list[str]:
    return [v if isinstance(v, str) else "" for v in column]


def read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", "surrogateescape")


def join(folder: str, name: str) -> str:
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


class _Inside:
    """Whether a path lies inside `root` once symbolic links are followed.

    Folders are resolved once each and cached (81k ROCO rows share a few
    folders); a file that is itself a link is resolved on its own.
    """

    def __init__(self, root: Path):
        self.prefix = os.path.join(os.path.realpath(root), "")
        self.lexical = os.path.join(str(root), "")
        self.folders: dict[str, str] = {}

    def __call__(self, path: str) -> bool:
        if not path.startswith(self.lexical):
            return False
        folder, name = os.path.split(path)
        if folder not in self.folders:
            self.folders[folder] = os.path.join(os.path.realpath(folder), "")
        real = self.folders[folder] + name
        if os.path.islink(real):
            real = os.path.realpath(real)
        return real.startswith(self.prefix)


def build(ids, paths, captions, splits, root, skipped=()) -> Dataset:
    """Check every row and keep the good ones; the one place rows are dropped.

    Args:
        ids, paths, captions, splits: Parallel lists; `paths` absolute and
            normalised ("" for none), `captions` raw text, `splits` names
            (anything outside `SPLITS` is reported as an unknown split).
        root: Dataset folder; a path outside it (symbolic links followed)
            is refused.
        skipped: Rows a loader already dropped, as `[image_id, path, reason]`.
    """
    root = Path(os.path.abspath(root))
    inside = _Inside(root)
    problems: dict[str, str | None] = {}
    first_path: dict[str, str] = {}
    first_split: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], [list(row) for row in skipped]
    for image_id, path, raw, split in zip(ids, paths, captions, splits):
        caption = ""
        if not path:
            reason = "no image file name"
        elif not inside(path):
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


def split_or_hash(raw: str, key: str) -> str:
    raw = raw.strip()
    return SPLIT_NAMES.get(raw.lower(), raw) if raw else hash_split(key)


def from_table(frame: pd.DataFrame, root: Path, id_of) -> Dataset:
    """Rows of an `image, caption[, split, image_id]` table; ids from `id_of(path)`.

    The path relative to `root` (with `/`) is also the key of `hash_split`.
    """
    base = os.path.abspath(root)
    inside = os.path.join(base, "")
    names = text_column(frame["image"])
    paths = [join(base, name) for name in names]
    keys = [
        os.path.relpath(p, base).replace(os.sep, "/") if p.startswith(inside) else n
        for p, n in zip(paths, names)
    ]
    ids = [id_of(key) for key in keys]
    if "image_id" in frame:
        ids = [
            given.strip() or i for given, i in zip(text_column(frame["image_id"]), ids)
        ]
    raw_splits = text_column(frame["split"]) if "split" in frame else [""] * len(frame)
    splits = [split_or_hash(s, key) for s, key in zip(raw_splits, keys)]
    return build(ids, paths, text_column(frame["caption"]), splits, root)


# The dataset profile.


def profile(dataset: Dataset, vocab_min_count: int = 1, max_len: int = 40) -> dict:
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


def save_profile(dataset: Dataset, folder: str | Path, **kwargs) -> dict:
    """Write `profile.json`, `manifest.csv` and `skipped.csv` into `folder`.

    Args:
        dataset: A loaded `Dataset`.
        folder: Where to write (made if needed).
        **kwargs: `vocab_min_count`, `max_len` for `profile`.

    Returns:
        The profile dict.
    """
    folder = Path(folder)
    summary = profile(dataset, **kwargs)
    write_json(folder / "profile.json", summary)
    # Paths that were not UTF-8 on disk are written with backslash escapes.
    for name, frame in (("manifest", dataset.manifest), ("skipped", dataset.skipped)):
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False, errors="backslashreplace")
    return summary
