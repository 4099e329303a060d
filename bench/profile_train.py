"""Where training time goes: one train step of each model on a fixed-shape batch.

Times `train_on_batch` (forward, backward and Adam; the fastest of a few
interleaved repeats) on 64 captions of a typical batch width for radcap's
merge model, the same with a 64-word vocabulary (what is left without the
5000-way softmax), radcap with attention, and the classic model on 64 prefix
samples, and radcap's forward pass alone. Shares are derived by difference.
`--embed-dim`, `--units` and `--precision` set both models' sizes and dtype
policy (default: the `roco` preset's, float32).

Training's place against the hardware: each radcap step's FLOPs
(`flops.train_step_flops`, counted from the sizes) over its time is its
achieved FLOP/s, given as a share of this machine's float32 matrix-multiply
peak (`flops.matmul_peak`, a large matmul timed with TensorFlow in the same
run, between the steps' repeats). Prints one JSON object.

    .venv/bin/python bench/profile_train.py
    .venv/bin/python bench/profile_train.py --units 256 --precision mixed_bfloat16
"""

import argparse
import json
import time

import keras
import numpy as np
from classic import build_classic
from common import VOCAB_SIZE, machine, random_stats
from flops import matmul_peak, train_step_flops

from radcap.core.config import preset
from radcap.training.batches import token_weights
from radcap.training.recipe import new_captioner


def train_step(model, inputs, targets, weights=None):
    """A function running one `train_on_batch`, traced already."""
    model.train_on_batch(inputs, targets, sample_weight=weights)
    return lambda: model.train_on_batch(inputs, targets, sample_weight=weights)


def radcap_step(config, vocab_size: int, width: int, precision: str, forward=False):
    stats = {"fc2": random_stats(4096), "grid": random_stats(512)}
    model = new_captioner(config, vocab_size, stats, precision)
    rng = np.random.default_rng(0)
    n = config.batch_size
    tokens = rng.integers(4, vocab_size, (n, width + 1), dtype=np.int32)
    inputs = {"features": rng.standard_normal((n, 4096), np.float32)}
    if config.attention:
        inputs["grid"] = rng.standard_normal((n, 49, 512), np.float32)
    inputs["tokens"] = tokens[:, :-1]
    if forward:
        model.predict_on_batch(inputs)
        return lambda: model.predict_on_batch(inputs)
    return train_step(model, inputs, tokens[:, 1:], token_weights(tokens[:, 1:]))


def classic_step(config, precision: str):
    prefix_len = config.max_len + 1
    keras.config.set_dtype_policy(precision)
    try:
        model = build_classic(
            VOCAB_SIZE, prefix_len, config.embed_dim, config.units, 4096
        )
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    n = config.batch_size
    inputs = {
        "features": rng.standard_normal((n, 4096), np.float32),
        "prefix": rng.integers(1, VOCAB_SIZE, (n, prefix_len), dtype=np.int32),
    }
    return train_step(model, inputs, rng.integers(1, VOCAB_SIZE, n))


def achieved(config, ms: dict, rows: int, width: int, peak: float) -> dict:
    """Each radcap train step's FLOPs, its GFLOP/s and its share of `peak`."""
    models = {
        "radcap_merge": (config, VOCAB_SIZE),
        "radcap_vocab64": (config, 64),
        "radcap_attention": (config.replace(attention=True), VOCAB_SIZE),
    }
    out = {"matmul_peak_gflop_per_s": round(peak / 1e9, 1)}
    for name, (sizes, vocab) in models.items():
        flops = train_step_flops(sizes, vocab, rows, width)
        rate = flops / (ms[name] / 1000)
        out[f"{name}_gflop"] = round(flops / 1e9, 2)
        out[f"{name}_gflop_per_s"] = round(rate / 1e9, 1)
        out[f"{name}_share_of_peak"] = round(rate / peak, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=23, help="positions per caption")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
    )
    args = parser.parse_args()

    config = preset("roco", weights=None, embed_dim=args.embed_dim, units=args.units)
    width, precision = args.width, args.precision
    steps = {
        "radcap_merge": radcap_step(config, VOCAB_SIZE, width, precision),
        "radcap_forward": radcap_step(config, VOCAB_SIZE, width, precision, True),
        "radcap_vocab64": radcap_step(config, 64, width, precision),
        "radcap_attention": radcap_step(
            config.replace(attention=True), VOCAB_SIZE, width, precision
        ),
        "classic": classic_step(config, precision),
    }
    # Interleaved, fastest of the repeats: other work on the machine skews less.
    ms = {name: float("inf") for name in steps}
    peaks = []
    for _ in range(args.repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            ms[name] = min(ms[name], 1000 * (time.perf_counter() - started))
        peaks.append(matmul_peak())  # beside the steps: the same conditions
    peak = max(peaks)
    n, prefix_len = config.batch_size, config.max_len + 1
    merge = ms["radcap_merge"]
    print(
        json.dumps(
            {
                "benchmark": "profile_train",
                "batch": n,
                "radcap_positions": args.width,
                "classic_positions": prefix_len,
                **{f"{name}_ms": round(t, 1) for name, t in ms.items()},
                "embed_dim": args.embed_dim,
                "units": args.units,
                "precision": precision,
                "softmax_share_of_merge": round(1 - ms["radcap_vocab64"] / merge, 2),
                "forward_share_of_merge": round(ms["radcap_forward"] / merge, 2),
                "attention_extra_vs_merge": round(
                    ms["radcap_attention"] / merge - 1, 2
                ),
                "radcap_positions_per_s": round(n * args.width / merge * 1000),
                **achieved(config, ms, n, args.width, peak),
                "classic_positions_per_s": round(n * prefix_len / ms["classic"] * 1000),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
