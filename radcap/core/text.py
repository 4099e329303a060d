"""Caption cleaning and the vocabulary: words to token ids and back.

The data stage already cleans captions with it, so it sits in the base.
"""

from __future__ import annotations

import collections
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from radcap.core.files import read_json, write_text

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
# The caption scores every evaluation reports (its metrics, the model card).
SCORES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

# Keep hyphens, periods and slashes inside words and numbers ("t2-weighted",
# "3.5", "c5/6"), drop other ASCII punctuation; parentheses become spaces.
# Characters beyond ASCII have been sorted out by `fold_unicode` already.
_DROP = re.compile(r"[^a-z0-9\-./%\s\u0080-\U0010ffff]")
_EDGE = re.compile(r"(?<!\w)[\-./]+|[\-./]+(?!\w)")
_SPACE = re.compile(r"\s+")
# The micro sign (NFKC makes it a Greek mu) outside a Greek word: "5 µm" -> "5 um".
_GREEK = "\u0370-\u03ff\u1f00-\u1fff"
_MICRO = re.compile(f"(?<![{_GREEK}])\u03bc(?![{_GREEK}])")
# A degree sign after a number is a word ("45°" -> "45 degrees"); elsewhere
# ("n°1") it is a symbol.
_DEGREES = re.compile("(?<=[0-9])\\s?\u00b0")
# A vulgar fraction after a digit gets a space, so "1½" becomes "1 1/2", not "11/2".
_FRACTION = re.compile("(?<=[0-9])([\u00bc-\u00be\u2150-\u215e])")
# Letters and signs that have an ASCII spelling but no Unicode decomposition.
_SPELLED = {
    "\u00d7": "x",  # multiplication sign: "5×3 cm" -> "5x3 cm"
    "\u2044": "/",  # fraction slash (NFKC writes "½" as "1⁄2")
    "\u2212": "-",  # minus sign
    "\u00df": "ss",
    "\u00e6": "ae",
    "\u0153": "oe",
    "\u00f8": "o",
    "\u0142": "l",
    "\u0111": "d",
    "\u00f0": "d",
    "\u00fe": "th",
}


def fold_unicode(text: str) -> str:
    """Medical text as written, in the characters the vocabulary uses.

    Unicode NFKC first ("ﬁ" -> "fi", "²" -> "2", "™" -> "TM"), then per
    character: Latin letters lose their accents ("Ménétrier" -> "Menetrier",
    "Sjögren" -> "Sjogren"), "×" becomes "x", the micro sign "u" ("µm" ->
    "um"), "°" after a number " degrees", every dash, hyphen and minus "-",
    every Unicode space a space; invisible format characters go. Letters,
    marks and digits of every other script are kept ("α-fetoprotein",
    Arabic, Chinese); other symbols and punctuation become spaces. ASCII
    text comes back unchanged.

    >>> fold_unicode("Ménétrier’s disease, 5×3\u2009cm – 10\u00a0µm")
    'Menetrier s disease, 5x3 cm - 10 um'
    """
    if text.isascii():
        return text
    text = _DEGREES.sub(" degrees ", _FRACTION.sub(r" \1", text))
    text = unicodedata.normalize("NFKC", text)
    text = _MICRO.sub("u", text)
    out = []
    latin = False  # the last letter kept was Latin: its combining marks go
    for ch in text:
        if ch.isascii():
            out.append(ch)
            latin = ch.isalpha()
            continue
        category = unicodedata.category(ch)
        if ch in _SPELLED:
            out.append(_SPELLED[ch])
            latin = ch.isalpha()
        elif ch.isspace() or category == "Zs":
            out.append(" ")
        elif category == "Pd":
            out.append("-")
        elif category == "Cf":
            continue  # zero-width spaces and joiners, byte-order marks
        elif category[0] == "L":
            latin = "LATIN" in unicodedata.name(ch, "")
            if latin:
                ch = "".join(
                    c
                    for c in unicodedata.normalize("NFKD", ch)
                    if not unicodedata.combining(c)
                )
            out.append(ch)
        elif category[0] == "M":
            if not latin:
                out.append(ch)  # vowel signs of Arabic, Devanagari...
        elif category[0] == "N":
            out.append(ch)
            latin = False
        else:
            out.append(" ")  # quotes, arrows, "≥", "®", "※"...
    return "".join(out)


def clean_caption(caption: str) -> str:
    """Normalise a caption for training and scoring.

    Folds Unicode to the vocabulary's characters (`fold_unicode`: accents,
    "×", "µ", dashes and spaces; other scripts kept), lowercases, turns all
    whitespace (newlines included) into single spaces, keeps punctuation
    that is part of a token ("t2-weighted", "3.5 cm", "c5/6", "50%"), and
    drops the rest ("(arrow)" -> "arrow").

    >>> clean_caption(" Axial T2-weighted MRI (arrow): a 3.5 cm mass.\\n")
    'axial t2-weighted mri arrow a 3.5 cm mass'
    """
    text = _DROP.sub(" ", fold_unicode(str(caption)).lower())
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

    def check_beam(self, beam: int) -> None:
        """Refuse a beam wider than the vocabulary, saying the widest one.

        A beam keeps each step's best tokens, so it holds at most one per
        token of the vocabulary.

        Raises:
            ValueError: `beam` is greater than `size`.
        """
        if beam > self.size:
            raise ValueError(
                f"beam={beam} is wider than the vocabulary: it has {self.size} "
                f"tokens, so the largest beam is {self.size}. Use a beam of "
                f"{self.size} or less."
            )

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
        """Ids to text by the rule of `caption_ids`."""
        ids = np.array([int(i) for i in ids], np.int64).reshape(1, -1)
        import keras  # lazily: Keras takes seconds to import

        looked_up, keep = (
            keras.ops.convert_to_numpy(x)[0] for x in self.caption_ids(ids)
        )
        return " ".join(self.words[i] for i in looked_up[keep])

    def caption_ids(self, ids):
        """Which ids are a caption's words, in `keras.ops` (also the export's graph).

        A row's words stop before its first `<end>`; `<pad>` and `<start>` are
        skipped; an id outside the vocabulary reads as `<unk>`.

        Args:
            ids: `(B, T)` integer ids.

        Returns:
            `(ids, keep)`: `(B, T)` int64 ids to look up in `words`, and
            `(B, T)` bool, which of them are the caption's words.
        """
        import keras

        o = keras.ops
        ids = o.cast(ids, "int64")
        ended = o.cumsum(o.cast(ids == self.end_id, "int32"), axis=1) > 0
        keep = o.logical_not(ended) & (ids != self.pad_id) & (ids != self.start_id)
        inside = (ids >= 0) & (ids < self.size)
        return o.where(inside, ids, self.unk_id), keep

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
