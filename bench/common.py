"""What the benchmarks share: ROCO-like synthetic captions and the machine's facts."""

import os
import platform

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
