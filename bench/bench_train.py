"""Training speed: radcap's whole-caption batches against one sample per word prefix.

Both models have the `roco` preset's sizes (embedding 256, LSTM 512, batch 64,
`max_len` 60; `--embed-dim` and `--units` change them for both) and a
5000-word vocabulary, in each `--precision` asked (both models alike), and
train on the same synthetic captions (ROCO's length profile) with random
4096-d features. The rate is target tokens (words and `<end>`) per second of
an epoch, after a warm-up that traces each model and meets each batch shape
once. Epochs of the methods alternate for a few rounds and the best of each
counts, so that other work on the machine skews the ratio less. Prints one
JSON object.

    .venv/bin/python bench/bench_train.py
    .venv/bin/python bench/bench_train.py --attention --captions 1000
    .venv/bin/python bench/bench_train.py --text real
    .venv/bin/python bench/bench_train.py --units 256 --precision float32 mixed_bfloat16

With `--text real`, the captions are real ROCO captions (`common.real_captions`,
drawn with replacement) encoded with radcap's vocabulary cut to 5000 words:
their true lengths and word frequencies instead of the synthetic profile.

With `--attention`, radcap with attention trains in the same run too, and its
rate is also given as a share of the merge model's (`attention_vs_merge`).
"""

import argparse
import json
import time

import keras
import numpy as np
from classic import build_classic, prefix_samples
from common import (
    VOCAB_SIZE,
    caption_tokens,
    machine,
    random_stats,
    real_caption_tokens,
    target_count,
)

from radcap.core.config import preset
from radcap.training.batches import Batches
from radcap.training.recipe import new_captioner

GOAL = 40  # radcap target tokens per second / classic's


class Clock(keras.callbacks.Callback):
    """Times a `fit` from its start to the end of its last step.

    Left out: the iterator teardown after `fit` returns, a fixed ~2 s per
    call with radcap's generator dataset that does not grow with the epoch.
    """

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.started


def timed(fit):
    """`fit(callbacks)` as a function that returns the seconds one call takes."""
    clock = Clock()

    def run():
        fit([clock])
        return clock.seconds

    return run


def radcap_epoch(config, tokens, arrays, precision="float32"):
    """A timed radcap epoch (warmed up), and padded positions per target."""
    stats = {"fc2": random_stats(4096)}
    if config.uses_grid:
        stats["grid"] = random_stats(512)
    model = new_captioner(config, VOCAB_SIZE, stats, precision)
    rows = np.arange(len(tokens))
    batches = Batches(tokens, rows, arrays, config.batch_size, True, config.seed)
    # Warm-up: trace the train step, and meet every batch width once (the
    # first step at a new width is slower).
    model.fit(batches.dataset(), shuffle=False, verbose=0)

    # Positions the LSTM and the softmax run over: batch size x (padded width - 1).
    plan = batches.plan(0)
    widths = np.array([batches.lengths[i].max() for i in plan])
    positions = sum(len(i) * (w - 1) for i, w in zip(plan, widths))
    epoch = timed(
        lambda c: model.fit(batches.dataset(), shuffle=False, verbose=0, callbacks=c)
    )
    return epoch, positions / target_count(tokens)


def classic_epoch(config, tokens, features, precision="float32"):
    """A timed classic epoch (warmed up), and its number of samples."""
    keras.config.set_dtype_policy(precision)
    try:
        model = build_classic(
            VOCAB_SIZE, config.max_len + 1, config.embed_dim, config.units, 4096
        )
    finally:
        keras.config.set_dtype_policy("float32")
    inputs, targets = prefix_samples(tokens, np.arange(len(tokens)), features)
    warm = 3 * config.batch_size
    model.fit(
        {k: v[:warm] for k, v in inputs.items()},
        targets[:warm],
        batch_size=config.batch_size,
        verbose=0,
    )
    epoch = timed(
        lambda c: model.fit(
            inputs, targets, batch_size=config.batch_size, verbose=0, callbacks=c
        )
    )
    return epoch, len(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1500, help="radcap's epoch")
    parser.add_argument("--classic-captions", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--attention", action="store_true", help="also radcap + attention"
    )
    parser.add_argument("--text", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--embed-dim", type=int, default=256, help="both models")
    parser.add_argument("--units", type=int, default=512, help="LSTM units, both")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["float32"],
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        help="each is timed, radcap and classic alike (default float32)",
    )
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    merge = preset("roco", weights=None, embed_dim=args.embed_dim, units=args.units)
    configs = {"merge": merge}
    if args.attention:
        configs["attention"] = merge.replace(attention=True)
    make = caption_tokens if args.text == "synthetic" else real_caption_tokens
    tokens = make(args.captions, merge.max_len)
    rng = np.random.default_rng(0)
    arrays = {"features": rng.standard_normal((len(tokens), 4096)).astype("float16")}
    if args.attention:
        arrays["grid"] = rng.standard_normal((len(tokens), 49, 512)).astype("float16")
    classic_tokens = tokens[: args.classic_captions]

    # "merge", "attention", "classic", each with "_<precision>" after float32
    epochs, samples = {}, 0
    for precision in args.precision:
        tag = "" if precision == "float32" else f"_{precision}"
        for name, config in configs.items():
            inputs = {
                k: v for k, v in arrays.items() if k == "features" or config.attention
            }
            epochs[name + tag], positions = radcap_epoch(
                config, tokens, inputs, precision
            )
        epochs["classic" + tag], samples = classic_epoch(
            merge, classic_tokens, arrays["features"], precision
        )
    # Alternate the methods for a few rounds; the best round of each counts.
    rounds = {name: [] for name in epochs}
    for _ in range(args.rounds):
        for name, epoch in epochs.items():
            count = samples if name.startswith("classic") else target_count(tokens)
            rounds[name].append(count / epoch())
    best = {name: max(r) for name, r in rounds.items()}
    out = {
        "benchmark": "train",
        "text": args.text,
        "captions": len(tokens),
        "targets_per_caption": round(target_count(tokens) / len(tokens), 2),
        "radcap_positions_per_target": round(positions, 2),
        "classic_captions": len(classic_tokens),
        "classic_samples": samples,
        "classic_positions_per_target": merge.max_len + 1,
    }
    for name, rates in rounds.items():
        out[f"{name}_targets_per_s"] = round(best[name], 1)
        out[f"{name}_rounds"] = [round(r, 1) for r in rates]
    # Each precision's ratio against the classic model in the same precision,
    # and against the classic model in float32 (as the tutorials train it).
    for precision in args.precision:
        tag = "" if precision == "float32" else f"_{precision}"
        ratio = best["merge" + tag] / best["classic" + tag]
        out[f"ratio{tag}"] = round(ratio, 1)
        out[f"met{tag}"] = ratio >= GOAL
        if tag and "classic" in best:
            out[f"ratio{tag}_vs_classic_float32"] = round(
                best["merge" + tag] / best["classic"], 1
            )
        if args.attention:
            out[f"attention_vs_merge{tag}"] = round(
                best["attention" + tag] / best["merge" + tag], 3
            )
    out["goal"] = GOAL
    out["sizes"] = {
        "vocab_size": VOCAB_SIZE,
        "embed_dim": merge.embed_dim,
        "units": merge.units,
        "attention_units": merge.attention_units,
        "max_len": merge.max_len,
        "batch_size": merge.batch_size,
    }
    out["machine"] = machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
