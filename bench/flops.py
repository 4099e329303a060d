"""A train step's floating-point operations, counted from the sizes, and a CPU's peak.

Written once for every bench that needs it: the input pipeline's goal
(`bench_pipeline.py`: how many batches a GPU would consume) and training's
place against this machine's matrix-multiply peak (`profile_train.py`).

Only matrix products are counted (a multiply-add is 2 operations); the
element-wise work (gates, tanh, softmax, Adam) is a few percent at these
sizes. A train step is taken as 3 forward passes (the backward pass computes
a gradient for the inputs and one for the weights of each product, each as
costly as the forward product), the usual rule for dense layers.

Merge captioner, per position of the caption (sizes `e` embed_dim, `u`
units, `V` vocabulary; see `radcap.models.merge`):

- LSTM: `2 * 4u * (e + u)` (input and recurrent products of the 4 gates)
- head: `2 * u * u`, logits: `2 * u * V`
- attention (`a` attention_units, `R` regions): query `2 * u * a`, scores
  `2 * R * a`, context `2 * R * u`

and per image: image projection `2 * F * u` (`F` = 4096), with attention the
grid projection `2 * R * G * u` (`G` = 512) and the keys `2 * R * u * a`.
"""

import time

# Dense throughput a well-fed kernel sustains, in FLOP/s, as assumed here (not
# measured: no GPU was lent). An LSTM at batch 64 reaches less (its products
# are small and come one time step after another), so the batches per second
# derived from these are the most a device could consume: a high bar for the
# input pipeline.
DEVICES = {
    # T4: 8.1 TFLOP/s float32 peak, taken as sustained; 65 TFLOP/s float16
    # tensor-core peak, 40% of it sustained.
    "T4 float32": 8e12,
    "T4 mixed_float16": 0.4 * 65e12,
    # A100: float32 runs on TF32 tensor cores in TensorFlow (156 TFLOP/s peak),
    # float16 at 312 TFLOP/s peak; 40% of each sustained.
    "A100 float32 (TF32)": 0.4 * 156e12,
    "A100 mixed_float16": 0.4 * 312e12,
}


def forward_flops(
    positions: int,
    images: int,
    vocab_size: int,
    embed_dim: int,
    units: int,
    attention: bool = False,
    attention_units: int = 256,
    regions: int = 49,
    feature_dim: int = 4096,
    grid_dim: int = 512,
) -> int:
    """Matrix-product FLOPs of the merge captioner's forward pass.

    Args:
        positions: Token positions run (rows x width, padding included: the
            LSTM and the softmax run over padded positions too).
        images: Rows of the batch (one image each).
        vocab_size, embed_dim, units, attention, attention_units: The model's sizes.
        regions, feature_dim, grid_dim: The features' sizes.
    """
    e, u, v, a, r = embed_dim, units, vocab_size, attention_units, regions
    per_position = 2 * 4 * u * (e + u) + 2 * u * u + 2 * u * v
    per_image = 2 * feature_dim * u
    if attention:
        per_position += 2 * u * a + 2 * r * a + 2 * r * u
        per_image += 2 * r * grid_dim * u + 2 * r * u * a
    return positions * per_position + images * per_image


def train_step_flops(config, vocab_size: int, rows: int, width: int) -> int:
    """FLOPs of one train step: 3 forward passes of a `(rows, width)` batch.

    Args:
        config: A `radcap.core.config.Config` (its sizes and `attention`).
        vocab_size: Token ids.
        rows: Captions in the batch.
        width: Positions per caption (the inputs' width: tokens minus one).
    """
    return 3 * forward_flops(
        rows * width,
        rows,
        vocab_size,
        config.embed_dim,
        config.units,
        config.attention,
        config.attention_units,
    )


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate in FLOP/s, measured with TF.

    An `(n, n) @ (n, n)` product, the fastest of `repeats` after a warm-up:
    what TensorFlow's kernels reach on these cores at their best, the
    physical limit a train step is measured against.
    """
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=0)
    b = tf.random.normal((n, n), seed=1)
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product().numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best
