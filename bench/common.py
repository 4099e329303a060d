"""What the benchmarks share: ROCO-like captions (synthetic or real), the machine."""

import csv
import os
import platform
from pathlib import Path

import numpy as np

VOCAB_SIZE = 5000
# ROCO's radiology captions: mean ~20 words, median ~16, a long tail to ~190.
# A log-normal with median 16 and mean 20 has sigma = sqrt(2 ln(20/16)).
MEDIAN_WORDS, MEAN_WORDS, MOST_WORDS = 16, 20, 190


def caption_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Words per caption, `(n,)` int64, with ROCO's length profile (not truncated)."""
    sigma = np.sqrt(2 * np.log(MEAN_WORDS / MEDIAN_WORDS))
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(np.log(MEDIAN_WORDS), sigma, n)
    return np.clip(np.rint(lengths), 1, MOST_WORDS).astype(np.int64)


def caption_tokens(n: int, max_len: int, vocab_size: int = VOCAB_SIZE, seed: int = 0):
    """Encoded captions as radcap stores them, cut at `max_len` words.

    Returns:
        `(n, max_len + 2)` int32: `<start>`=1, random word ids in
        `[4, vocab_size)`, `<end>`=2, then 0-padding.
    """
    lengths = np.minimum(caption_lengths(n, seed), max_len)
    rng = np.random.default_rng(seed + 1)
    tokens = np.zeros((n, max_len + 2), np.int32)
    words = rng.integers(4, vocab_size, (n, max_len), dtype=np.int32)
    inside = np.arange(max_len)[None, :] < lengths[:, None]  # (n, max_len)
    tokens[:, 0] = 1
    tokens[:, 1:-1] = np.where(inside, words, 0)
    tokens[np.arange(n), lengths + 1] = 2
    return tokens


_REPO = Path(__file__).resolve().parents[1]
REAL_CAPTIONS = (
    _REPO.parent / "shared/data/roco_validation_captions_sample.tsv",  # 2,000
    _REPO / "tests/data/roco_captions_sample.tsv",  # 300 of them
)


def real_captions() -> list[str]:
    """Real ROCO captions: the shared 2,000 when present, else the tests' 300."""
    path = next(p for p in REAL_CAPTIONS if p.is_file())
    with open(path, newline="", encoding="utf-8") as f:
        return [row["caption"] for row in csv.DictReader(f, delimiter="\t")]


def real_caption_tokens(
    n: int, max_len: int, vocab_size: int = VOCAB_SIZE, seed: int = 0
):
    """`n` real ROCO captions (drawn with replacement), encoded as radcap does.

    The vocabulary is radcap's, built on all the real captions and cut to the
    `vocab_size - 4` most frequent words, so the model has the same size as
    with `caption_tokens`; rarer words become `<unk>`.

    Returns:
        `(n, max_len + 2)` int32, as `caption_tokens`.
    """
    from radcap.core.text import Vocabulary

    captions = real_captions()
    vocab = Vocabulary.build(captions, max_len=max_len)
    vocab = Vocabulary(vocab.words[4:vocab_size], max_len)
    picks = np.random.default_rng(seed).integers(0, len(captions), n)
    return vocab.encode_batch([captions[i] for i in picks])


def real_lengths(n: int, max_len: int, seed: int = 0) -> np.ndarray:
    """Words per caption of `n` real captions (with replacement), cut at `max_len`."""
    tokens = real_caption_tokens(n, max_len, seed=seed)
    return (tokens != 0).sum(1) - 2


def target_count(tokens: np.ndarray) -> int:
    """Next-word targets in `tokens`: every word and `<end>`, not `<start>`."""
    return int((tokens != 0).sum() - len(tokens))


def random_stats(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation statistics for random features: mean 0, std 1."""
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)


def machine() -> dict:
    """Facts that the figures depend on."""
    import keras
    import tensorflow as tf

    return {
        "cpu_count": len(os.sched_getaffinity(0)),
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        # Other work on the machine skews the figures; this says how much there was.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
