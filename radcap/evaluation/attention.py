"""Where an attending model looks: the side words of the demo against the drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radcap.data import load as load_dataset
from radcap.data.demo import SIDES, finding_sides, read_cases
from radcap.features.splits import load_split


def lesion_half_share(attention: np.ndarray, side: str) -> float:
    """Share of one word's attention on the image half that holds a `side` lesion.

    Args:
        attention: `(regions,)` weights over a square grid (49 for 7x7).
        side: The patient's side, `"left"` or `"right"`; the patient's right
            is the image's left.

    Returns:
        Mass on that half, the middle column counted half: 0.5 means no
        preference, 1.0 all of it on the lesion's half.
    """
    side_len = int(round(np.sqrt(attention.shape[-1])))
    grid = np.asarray(attention, np.float64).reshape(side_len, side_len)
    columns = grid.sum(0) / grid.sum()
    weight = np.clip(side_len / 2 - np.arange(side_len), 0, 1)  # image-left half
    left = float((columns * weight).sum())
    return left if side == "right" else 1.0 - left


def side_word_attention(captioner, root: str | Path = ".", split: str = "test") -> dict:
    """Where an attending model looks when it writes "left" or "right" on the demo.

    Args:
        captioner: A `radcap.decoding.captioner.Captioner` with attention or the
            transformer decoder, trained on the demo or the hard demo.
        root: Folder that the run config's paths start from.
        split: Demo split to look at.

    Returns:
        As `side_shares`.
    """
    config = captioner.config
    if not captioner.uses_grid:
        raise ValueError(
            f"Run {config.name!r} does not attend over the image; train with "
            "attention or the transformer decoder."
        )
    cases = read_cases(config.dataset_dir(root))
    part = load_split(config, load_dataset(config, root), split, root)
    return side_shares(captioner, part, cases)


def side_shares(captioner, part, cases) -> dict:
    """Attention on the correct half for every side word of greedy captions.

    The k-th side word of a caption is about the image's k-th lesion in
    reading order (`radcap.data.demo.finding_sides`: one on the demo, the
    upper then the lower one on the hard demo); side words beyond the
    image's lesions are not counted.

    Args:
        captioner: An attending `radcap.decoding.captioner.Captioner`.
        part: The `radcap.features.splits.Split` to caption.
        cases: `radcap.data.demo.read_cases` of its dataset.

    Returns:
        `{"words", "mean_share", "median_share", "share_above_half"}`: 0.5 is
        what attention blind to the side would give.
    """
    result = captioner.search(*part.image_features(), beam=1)
    shares = []
    for image_id, tokens, attention in zip(
        part.image_ids, result.tokens, result.attention
    ):
        sides = finding_sides(cases.loc[image_id])
        written = [
            position
            for position, word in enumerate(captioner.vocab.decode(tokens).split())
            if word in SIDES
        ]
        for position, side in zip(written, sides):
            shares.append(lesion_half_share(attention[position], side))
    shares = np.array(shares)
    if not len(shares):
        nan = float("nan")
        return {
            "words": 0,
            "mean_share": nan,
            "median_share": nan,
            "share_above_half": nan,
        }
    return {
        "words": len(shares),
        "mean_share": float(shares.mean()),
        "median_share": float(np.median(shares)),
        "share_above_half": float((shares > 0.5).mean()),
    }
