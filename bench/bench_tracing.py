"""CPU-seconds of the first calls: tracing a training step and a search.

Every training and every first caption of a process pays for tracing its
graphs once: radcap's test suite trains and captions in a few hundred
processes, and a user's first caption waits for it. Two causes are
measured here, each against what radcap did before, side by side in fresh
processes (one per measurement, so nothing is cached):

- `train`: one epoch of a small merge captioner, `fit` from a fresh model.
  `built` makes the optimizer's state when it compiles
  (`radcap.training.recipe.build_optimizer`); `lazy` leaves it to Keras,
  which makes it while tracing the first step, so that TensorFlow traces
  the whole step twice.
- `search`: the first greedy and beam-3 captions of a fresh `CompiledSearch`,
  traced with AutoGraph off (radcap) and on (before).

The modes alternate for `--rounds` rounds; the best of each counts. Prints
one JSON object.

    .venv/bin/python bench/bench_tracing.py [--rounds 3]
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
import tensorflow as tf
from radcap.core.config import preset
from radcap.training import recipe

kind, mode = sys.argv[1:3]
config = preset("demo", units=64, embed_dim=32, batch_size=16)
rng = np.random.default_rng(0)
if kind == "train":
    if mode == "lazy":
        recipe.build_optimizer = lambda model: None
    model = recipe.new_captioner(config, 40, verbose=False)
    tokens = rng.integers(4, 40, (64, 12)).astype("int32")
    inputs = {"features": rng.random((64, 4096), "float32"), "tokens": tokens}
    started = time.process_time()
    model.fit(inputs, np.roll(tokens, -1, 1), batch_size=16, epochs=1, verbose=0)
else:
    if mode == "autograph":
        function = tf.function
        tf.function = lambda *a, **k: function(*a, **{**k, "autograph": True})
    from radcap.decoding.compiled import CompiledSearch
    from radcap.decoding.search import Rules

    model = recipe.new_captioner(config, 40, verbose=False)
    search = CompiledSearch(model)
    features = rng.random((8, 4096), "float32")
    started = time.process_time()
    for beam in (1, 3):
        search(features, start_id=1, end_id=2, max_len=20, beam=beam,
               length_penalty=0.0, rules=Rules())
print(json.dumps(time.process_time() - started))
"""

MODES = {"train": ("built", "lazy"), "search": ("plain", "autograph")}


def measure(kind: str, mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best = {
        kind: {mode: float("inf") for mode in modes} for kind, modes in MODES.items()
    }
    for _ in range(args.rounds):
        for kind, modes in MODES.items():
            for mode in modes:
                best[kind][mode] = min(best[kind][mode], measure(kind, mode))
    out = {
        kind: {m: round(s, 2) for m, s in modes.items()} for kind, modes in best.items()
    }
    out["train"]["saved"] = round(best["train"]["lazy"] - best["train"]["built"], 2)
    out["search"]["saved"] = round(
        best["search"]["autograph"] - best["search"]["plain"], 2
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
