"""Where an attention model looks: the side words of the demo against the drawing.

Stage: evaluation. Imports the base, `radcap.data` and `radcap.splits`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radcap.data import load as load_dataset
from radcap.data.demo import SIDES, read_cases
from radcap.splits import load_split


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
    """Where an attention model looks when it writes "left" or "right" on the demo.

    For every side word generated (greedy) for an image that has a lesion,
    the share of that word's attention on the image half holding the lesion
    (`lesion_half_share`).

    Args:
        captioner: A `radcap.captioner.Captioner` trained with attention on the demo.
        root: Folder that the run config's paths start from.
        split: Demo split to look at.

    Returns:
        `{"words", "mean_share", "median_share", "share_above_half"}`; 0.5 is
        what attention blind to the side would give.
    """
    config = captioner.config
    if not captioner.attention:
        raise ValueError(f"Run {config.name!r} has no attention; train with attention.")
    cases = read_cases(config.dataset_dir(root))
    part = load_split(config, load_dataset(config, root), split, root)
    result = captioner.search(*part.image_features(), beam=1)
    shares = []
    for image_id, tokens, attention in zip(
        part.image_ids, result.tokens, result.attention
    ):
        row = cases.loc[image_id]
        for position, word in enumerate(captioner.vocab.decode(tokens).split()):
            if word in SIDES and row["lesion"]:
                shares.append(lesion_half_share(attention[position], row["side"]))
    shares = np.array(shares)
    return {
        "words": len(shares),
        "mean_share": float(shares.mean()) if len(shares) else float("nan"),
        "median_share": float(np.median(shares)) if len(shares) else float("nan"),
        "share_above_half": float((shares > 0.5).mean())
        if len(shares)
        else float("nan"),
    }
