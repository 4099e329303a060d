"""The transformer decoder: its key/value cache, and its speed beside the merge model's.

Three measurements, each side by side in one process, the methods
alternating for a few rounds with the best round of each counting:

1. Greedy decoding of `--words` (60) words for 64 images with the
   transformer's key/value cache (`TransformerCaptioner.step`, one new
   position per step) against the same search recomputing the whole prefix
   at every step (the blocks run over every position written so far; the
   image memory's keys and values are projected once in both).
2. Greedy captions per second: transformer and merge model, every caption
   `max_len` words long (`bench_decode.py`'s worst case).
3. Training targets per second: transformer and merge model (the `roco`
   preset's sizes, 5000 words, the synthetic caption profile of
   `bench_train.py`). Last, because after `fit` the same process decodes
   both models more slowly (about 0.6x), which would skew step 2.

    .venv/bin/python bench/bench_transformer.py

Prints one JSON object.
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf
from bench_decode import END_ID, START_ID, decode_seconds
from bench_train import radcap_epoch
from common import VOCAB_SIZE, caption_tokens, machine, random_stats, target_count
from keras import ops

from radcap.core.config import preset
from radcap.decoding.compiled import CompiledStep
from radcap.decoding.search import Rules, greedy_search
from radcap.models.merge import build_captioner

CACHE_GOAL = 3  # cached 60-word greedy decode, times faster than recomputing


class RecomputingStep:
    """The transformer's greedy step without a cache: every step runs
    `call_with_cache` over the whole prefix and keeps the last position's logits."""

    def __init__(self, model):
        self.model = model

        def run(prefix, memory):
            logits = model.call_with_cache(prefix, memory)[0][:, -1]  # no cache
            return ops.log_softmax(logits, axis=-1)

        self._run = tf.function(run, reduce_retracing=True)
        self.attention = True

    def start(self, features, grid):
        _, memory = self.model.encode(features, grid)
        empty = np.zeros((len(features), 0), np.int32)
        return (empty, *(np.asarray(m) for m in memory))

    def __call__(self, tokens, state):
        prefix = np.concatenate([state[0], tokens[:, None]], axis=1)
        log_probs = np.asarray(self._run(prefix, state[1:]))
        blank = np.zeros((len(tokens), 1), np.float32)
        return log_probs, (prefix, *state[1:]), blank


def forced_length(step, words):
    """`step` that never writes `<end>`, so every caption has `words` words."""

    def forced(tokens, state):
        log_probs, state, attention = step(tokens, state)
        log_probs = np.array(log_probs)
        log_probs[:, END_ID] = -np.inf
        return log_probs, state, attention

    return forced


def greedy_seconds(step, features, grid, words) -> float:
    started = time.perf_counter()
    state = step.start(features, grid)
    result = greedy_search(
        forced_length(step, words),
        state,
        len(features),
        START_ID,
        END_ID,
        words,
        Rules(no_repeat_ngram=0),
    )
    assert all(len(t) == words for t in result.tokens)
    return time.perf_counter() - started, result.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--captions", type=int, default=1000, help="training epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    merge = preset("roco", weights=None)
    transformer = merge.replace(decoder="transformer", max_len=args.words)
    stats = {"fc2": random_stats(4096), "grid": random_stats(512)}
    model = build_captioner(transformer, VOCAB_SIZE, stats)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((args.images, 4096)).astype(np.float32)
    grid = rng.standard_normal((args.images, 49, 512)).astype(np.float32)

    # 1. The cache against recomputing the prefix (same captions, checked).
    cached, recomputing = CompiledStep(model), RecomputingStep(model)
    for step in (cached, recomputing):  # warm-up: trace the shapes
        greedy_seconds(step, features, grid, 3)
    cache_rounds = {"cached": [], "recomputing": []}
    for _ in range(args.rounds):
        a, tokens_a = greedy_seconds(cached, features, grid, args.words)
        b, tokens_b = greedy_seconds(recomputing, features, grid, args.words)
        assert tokens_a == tokens_b, "the cache changed the captions"
        cache_rounds["cached"].append(args.images / a)
        cache_rounds["recomputing"].append(args.images / b)
    cache_best = {k: max(v) for k, v in cache_rounds.items()}

    # 2. Greedy decoding, side by side, max_len words each.
    steps = {
        "merge": CompiledStep(build_captioner(merge, VOCAB_SIZE, stats)),
        "transformer": CompiledStep(
            build_captioner(merge.replace(decoder="transformer"), VOCAB_SIZE, stats)
        ),
    }
    lengths = np.full(args.images, merge.max_len)
    grids = {"merge": None, "transformer": grid}
    for name, step in steps.items():
        decode_seconds(step, features, grids[name], lengths, 2, args.images, 1)
    decode_rounds = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            seconds = decode_seconds(
                step, features, grids[name], lengths, merge.max_len, args.images, 1
            )
            decode_rounds[name].append(args.images / seconds)
    decode_best = {k: max(v) for k, v in decode_rounds.items()}

    # 3. Training, side by side (last: a process that has trained decodes
    # more slowly afterwards, so decoding is measured first).
    tokens = caption_tokens(args.captions, merge.max_len)
    arrays = {
        "features": rng.standard_normal((len(tokens), 4096)).astype("float16"),
        "grid": rng.standard_normal((len(tokens), 49, 512)).astype("float16"),
    }
    epochs = {
        "merge": radcap_epoch(merge, tokens, {"features": arrays["features"]})[0],
        "transformer": radcap_epoch(
            merge.replace(decoder="transformer"), tokens, arrays
        )[0],
    }
    train_rounds = {name: [] for name in epochs}
    for _ in range(args.rounds):
        for name, epoch in epochs.items():
            train_rounds[name].append(target_count(tokens) / epoch())
    train_best = {k: max(v) for k, v in train_rounds.items()}

    speedup = cache_best["cached"] / cache_best["recomputing"]
    out = {
        "benchmark": "transformer",
        "images": args.images,
        "words": args.words,
        "cached_captions_per_s": round(cache_best["cached"], 2),
        "recomputing_captions_per_s": round(cache_best["recomputing"], 2),
        "cache_speedup": round(speedup, 2),
        "cache_goal": CACHE_GOAL,
        "cache_met": speedup >= CACHE_GOAL,
        "cache_rounds": {k: [round(x, 2) for x in v] for k, v in cache_rounds.items()},
        "train_targets_per_s": {k: round(v, 1) for k, v in train_best.items()},
        "train_transformer_vs_merge": round(
            train_best["transformer"] / train_best["merge"], 3
        ),
        "greedy_captions_per_s": {k: round(v, 2) for k, v in decode_best.items()},
        "greedy_transformer_vs_merge": round(
            decode_best["transformer"] / decode_best["merge"], 3
        ),
        "sizes": {
            "vocab_size": VOCAB_SIZE,
            "units": merge.units,
            "heads": merge.heads,
            "decoder_layers": merge.decoder_layers,
            "merge_embed_dim": merge.embed_dim,
            "max_len": merge.max_len,
            "batch_size": merge.batch_size,
        },
        "machine": machine(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
