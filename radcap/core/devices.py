"""What this machine can do: the training precision and devices a config gets here.

TensorFlow is imported when asked.

`precision` (see `radcap.core.config.PRECISIONS`) is a wish; `resolve_precision`
turns it into the Keras dtype policy this machine can train with, and says
so when it cannot grant it. Mixed precision computes in 16 bits and keeps
the weights, the logits, the softmax and the loss in float32; Keras scales
the loss for float16 (`auto_scale_loss` of `Model.compile`).

`strategy` (see `radcap.core.config.STRATEGIES`) is the same kind of wish for the
devices one training uses; `resolve_strategy` turns it into a
`tf.distribute.Strategy`. Under it each batch of the config's `batch_size`
is the global batch, split across the replicas.
"""

from __future__ import annotations

import glob
import os

from radcap.core.config import PRECISIONS, STRATEGIES

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
        asked: One of `radcap.core.config.PRECISIONS`.

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


_tpu_strategy = []  # a TPU system is initialised once per process


def _tpu_here() -> bool:
    """Whether this looks like a TPU machine (Colab, Kaggle, a Cloud TPU VM)."""
    names = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")
    return any(os.environ.get(n) for n in names) or bool(glob.glob("/dev/accel*"))


def _connect_tpu():
    """`(TPUStrategy, None)` over this machine's TPU, or `(None, why not)`."""
    import tensorflow as tf

    if _tpu_strategy:
        return _tpu_strategy[0], None
    if not _tpu_here():
        return None, "no TPU found"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "local")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        _tpu_strategy.append(tf.distribute.TPUStrategy(resolver))
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first = str(error).strip().splitlines()[0][:200]
        return None, f"a TPU was found but did not start ({first})"
    return _tpu_strategy[0], None


def resolve_strategy(asked: str):
    """The `tf.distribute.Strategy` to train with here, and why it differs from `asked`.

    Args:
        asked: One of `radcap.core.config.STRATEGIES`: `auto` (a TPU, else two or
            more GPUs mirrored, else one device), `tpu`, `mirrored` (every
            GPU; every logical CPU device where there is no GPU, as a test
            sets up), or `none`.

    Returns:
        `(strategy, note)`: the strategy, and None, or a line that names what
        was asked, what was found and what is used instead.
    """
    import tensorflow as tf

    if asked not in STRATEGIES:
        raise ValueError(f"strategy={asked!r} is invalid: use one of {STRATEGIES}.")
    one = tf.distribute.get_strategy()  # the default: one device, no replicas
    if asked == "none":
        return one, None
    note = None
    if asked in ("auto", "tpu"):
        tpu, why = _connect_tpu()
        if tpu is not None:
            return tpu, None
        if asked == "tpu" or why != "no TPU found":
            note = f"strategy {asked} asked, {why}"
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    devices = gpus if gpus or asked != "mirrored" else cpus
    if len(devices) >= 2:
        mirrored = tf.distribute.MirroredStrategy(devices)
        return mirrored, note and f"{note}: mirroring over {len(devices)} devices."
    if asked == "mirrored":
        found = f"{len(gpus)} GPU" if gpus else "no GPU"
        note = f"strategy mirrored asked, {found} found"
    return one, note and f"{note}: training on one device."


def strategy_name(strategy) -> str:
    """`tpu`, `mirrored` or `none`: what `resolve_strategy` granted."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    return (
        "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "none"
    )
