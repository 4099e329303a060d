"""What this machine can do: the training precision a config gets here.

Stage: devices, after the base (`radcap.config`). Imports TensorFlow when
asked.

`precision` (see `radcap.config.PRECISIONS`) is a wish; `resolve_precision`
turns it into the Keras dtype policy this machine can train with, and says
so when it cannot grant it. Mixed precision computes in 16 bits and keeps
the weights, the logits, the softmax and the loss in float32; Keras scales
the loss for float16 (`auto_scale_loss` of `Model.compile`).
"""

from __future__ import annotations

from radcap.config import PRECISIONS

# GPUs with float16 tensor cores: compute capability 7.0 (V100, T4) and up.
FLOAT16_CAPABILITY = (7, 0)


def _accelerators() -> tuple[list, list]:
    """`(gpus, tpus)`: the physical GPUs and the logical TPU cores found."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU"), tf.config.list_logical_devices("TPU")


def _float16_gpus(gpus) -> bool:
    import tensorflow as tf

    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        if tuple(details.get("compute_capability", (0, 0))) < FLOAT16_CAPABILITY:
            return False
    return bool(gpus)


def resolve_precision(asked: str) -> tuple[str, str | None]:
    """The dtype policy to train with here, and why it differs from `asked`.

    Args:
        asked: One of `radcap.config.PRECISIONS`.

    Returns:
        `(policy, note)`: a Keras dtype policy name, and None, or a line that
        names what was asked, what was found and what is used instead.
    """
    if asked not in PRECISIONS:
        raise ValueError(f"precision={asked!r} is invalid: use one of {PRECISIONS}.")
    if asked in ("float32", "mixed_bfloat16"):  # every device computes both
        return asked, None
    gpus, tpus = _accelerators()
    if asked == "auto":
        if tpus:
            return "mixed_bfloat16", None
        return ("mixed_float16" if _float16_gpus(gpus) else "float32"), None
    if not gpus:  # mixed_float16 asked
        found = f"{len(tpus)} TPU cores" if tpus else "no GPU"
        fallback = "mixed_bfloat16" if tpus else "float32"
        return fallback, (
            f"precision mixed_float16 asked, {found} found: float16 is slow or "
            f"missing there; training in {fallback}."
        )
    if not _float16_gpus(gpus):
        return "float32", (
            "precision mixed_float16 asked, but a GPU here predates float16 "
            f"tensor cores (compute capability below {FLOAT16_CAPABILITY[0]}.0): "
            "training in float32."
        )
    return asked, None
