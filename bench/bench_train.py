"""Training speed: radcap's whole-caption batches against one sample per word prefix.

Both models have the `roco` preset's sizes (embedding 256, LSTM 512, batch 64,
`max_len` 60) and a 5000-word vocabulary, and train on the same synthetic
captions (ROCO's length profile) with random 4096-d features. The rate is
target tokens (words and `<end>`) per second of an epoch, after a warm-up
that traces each model and meets each batch shape once. Epochs of the two alternate for
a few rounds and the best of each counts, so that other work on the machine
skews the ratio less. Prints one JSON object.

    .venv/bin/python bench/bench_train.py
    .venv/bin/python bench/bench_train.py --attention --captions 1000
    .venv/bin/python bench/bench_train.py --text real

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

from radcap.batches import Batches
from radcap.config import preset
from radcap.model import build_captioner

GOAL = 30  # radcap target tokens per second / classic's


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


def radcap_epoch(config, tokens, arrays):
    """A timed radcap epoch (warmed up), and padded positions per target."""
    stats = {"fc2": random_stats(4096)}
    if config.uses_grid:
        stats["grid"] = random_stats(512)
    model = build_captioner(config, VOCAB_SIZE, stats)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        ),
    )
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


def classic_epoch(config, tokens, features):
    """A timed classic epoch (warmed up), and its number of samples."""
    model = build_classic(
        VOCAB_SIZE, config.max_len + 1, config.embed_dim, config.units, 4096
    )
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
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    merge = preset("roco", weights=None)
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

    epochs = {}
    for name, config in configs.items():
        inputs = {
            k: v for k, v in arrays.items() if k == "features" or config.attention
        }
        epochs[name], positions = radcap_epoch(config, tokens, inputs)
    classic, samples = classic_epoch(merge, classic_tokens, arrays["features"])
    # Alternate the methods for a few rounds; the best round of each counts.
    rounds = {name: [] for name in [*epochs, "classic"]}
    for _ in range(args.rounds):
        for name, epoch in epochs.items():
            rounds[name].append(target_count(tokens) / epoch())
        rounds["classic"].append(samples / classic())
    best = {name: max(r) for name, r in rounds.items()}
    ratio = best["merge"] / best["classic"]
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
    out |= {"ratio": round(ratio, 1), "goal": GOAL, "met": ratio >= GOAL}
    if args.attention:
        out["attention_vs_merge"] = round(best["attention"] / best["merge"], 3)
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
