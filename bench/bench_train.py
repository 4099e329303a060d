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
"""

import argparse
import json
import time

import keras
import numpy as np
from classic import build_classic, prefix_samples
from common import VOCAB_SIZE, caption_tokens, machine, random_stats, target_count

from radcap.config import preset
from radcap.model import build_model
from radcap.train import LENGTH_STEP, Batches

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
    if config.attention:
        stats["grid"] = random_stats(512)
    model = build_model(config, VOCAB_SIZE, stats)
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
    widths = np.minimum(-(-widths // LENGTH_STEP) * LENGTH_STEP, tokens.shape[1])
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
    parser.add_argument("--attention", action="store_true", help="radcap + attention")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    config = preset("roco", weights=None, attention=args.attention)
    tokens = caption_tokens(args.captions, config.max_len)
    rng = np.random.default_rng(0)
    arrays = {"features": rng.standard_normal((len(tokens), 4096)).astype("float16")}
    if config.attention:
        arrays["grid"] = rng.standard_normal((len(tokens), 49, 512)).astype("float16")
    classic_tokens = tokens[: args.classic_captions]

    radcap, positions = radcap_epoch(config, tokens, arrays)
    classic, samples = classic_epoch(config, classic_tokens, arrays["features"])
    rates, classic_rates = [], []
    for _ in range(args.rounds):
        rates.append(target_count(tokens) / radcap())
        classic_rates.append(samples / classic())
    best, classic_best = max(rates), max(classic_rates)
    print(
        json.dumps(
            {
                "benchmark": "train",
                "attention": config.attention,
                "captions": len(tokens),
                "targets_per_caption": round(target_count(tokens) / len(tokens), 2),
                "radcap_targets_per_s": round(best, 1),
                "radcap_rounds": [round(r, 1) for r in rates],
                "radcap_positions_per_target": round(positions, 2),
                "classic_captions": len(classic_tokens),
                "classic_samples": samples,
                "classic_targets_per_s": round(classic_best, 1),
                "classic_rounds": [round(r, 1) for r in classic_rates],
                "classic_positions_per_target": config.max_len + 1,
                "ratio": round(best / classic_best, 1),
                "goal": GOAL,
                "met": best / classic_best >= GOAL,
                "sizes": {
                    "vocab_size": VOCAB_SIZE,
                    "embed_dim": config.embed_dim,
                    "units": config.units,
                    "max_len": config.max_len,
                    "batch_size": config.batch_size,
                },
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
