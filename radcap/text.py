"""Caption cleaning and the vocabulary: words to token ids and back.

Stage: the base, beside `config`; imports only `radcap.files`. The data
stage already cleans captions with it, so it sits below data.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from radcap.files import read_json, write_text

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

# Keep hyphens, periods and slashes inside words and numbers ("t2-weighted",
# "3.5", "c5/6"), drop other punctuation; parentheses become spaces.
_DROP = re.compile(r"[^a-z0-9\-./%\s]")
_EDGE = re.compile(r"(?<![a-z0-9])[\-./]+|[\-./]+(?![a-z0-9])")
_SPACE = re.compile(r"\s+")


def clean_caption(caption: str) -> str:
    """Normalise a caption for training and scoring.

    Lowercases, turns all whitespace (newlines included) into single spaces,
    keeps punctuation that is part of a token ("t2-weighted", "3.5 cm",
    "c5/6", "50%"), and drops the rest ("(arrow)" -> "arrow").

    >>> clean_caption(" Axial T2-weighted MRI (arrow): a 3.5 cm mass.\\n")
    'axial t2-weighted mri arrow a 3.5 cm mass'
    """
    text = _DROP.sub(" ", str(caption).lower())
    text = _EDGE.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


class Vocabulary:
    """Words to ids with `<pad>`=0, `<start>`=1, `<end>`=2, `<unk>`=3.

    Args:
        words: The words after the four special tokens, in id order.
        max_len: Most words kept per caption, `<start>`/`<end>` not counted.
    """

    def __init__(self, words: Iterable[str], max_len: int):
        self.words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_len = int(max_len)

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_len: int = 40):
        """Build from (train split) captions, most frequent words first."""
        counts = collections.Counter(
            w for c in captions for w in clean_caption(c).split()
        )
        words = sorted(
            (w for w, n in counts.items() if n >= min_count),
            key=lambda w: (-counts[w], w),
        )
        return cls(words, max_len)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def size(self) -> int:
        return len(self.words)

    def encode(self, caption: str) -> list[int]:
        """`<start>`, word ids (unknown as `<unk>`, at most `max_len`), `<end>`."""
        ids = [self.index.get(w, self.unk_id) for w in clean_caption(caption).split()]
        return [self.start_id] + ids[: self.max_len] + [self.end_id]

    def encode_batch(self, captions: Iterable[str]) -> np.ndarray:
        """Encode and right-pad with `<pad>` to `max_len + 2` columns. int32."""
        rows = [self.encode(c) for c in captions]
        out = np.zeros((len(rows), self.max_len + 2), np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text: stops at `<end>`, skips `<start>` and `<pad>`."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return " ".join(words)

    def coverage(self, captions: Iterable[str]) -> float:
        """Share of words in `captions` that the vocabulary knows."""
        words = [w for c in captions for w in clean_caption(c).split()]
        return sum(w in self.index for w in words) / max(len(words), 1)

    def to_dict(self) -> dict:
        """`{"max_len", "words"}`, JSON-ready."""
        return {"max_len": self.max_len, "words": self.words}

    @classmethod
    def from_dict(cls, data, source: str | Path = "the vocabulary") -> Vocabulary:
        """The inverse of `to_dict`; `source` names the file in errors."""
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("words"), list)
            or not isinstance(data.get("max_len"), int)
        ):
            raise ValueError(
                f"{source} is not a radcap vocabulary: expected a JSON object with "
                "'words' (a list) and 'max_len' (an integer)."
            )
        if data["words"][: len(SPECIALS)] != list(SPECIALS):
            raise ValueError(
                f"{source} is not a radcap vocabulary (special tokens differ)."
            )
        return cls(data["words"][len(SPECIALS) :], data["max_len"])

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically (never half-written)."""
        write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by `save`."""
        return cls.from_dict(read_json(path, "vocabulary"), path)
