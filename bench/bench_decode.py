"""Decoding speed: radcap's batched greedy and beam search against the classic loop.

radcap decodes 64 images at a time, the whole search compiled into one
graph with the model (`radcap.decoding.compiled.CompiledSearch`, as
`Captioner`, the evaluation and the export run it); `numpy_` rates are the
same search as radcap 0.2 ran it, a NumPy loop around a compiled step
(`numpy_search.py` over `radcap.decoding.compiled.CompiledStep`), side by
side in the same run. The classic loop captions one image at a time with
one `model.predict` per word (`classic.classic_caption`). Both models are
untrained, with the `roco` preset's sizes and a 5000-word vocabulary.
`<end>` is picked only at each caption's set length: by default `max_len`
(60) words, the worst case; with `--lengths real` the lengths of real ROCO
captions (`common.real_lengths`). All methods do the same work per caption.
Rates are captions per second, after a warm-up that traces each batch
shape; the methods alternate for a few rounds and the best round of each
counts, so that other work on the machine skews the ratios less. Prints one
JSON object.

    .venv/bin/python bench/bench_decode.py
    .venv/bin/python bench/bench_decode.py --attention --images 64

radcap's searches run with the default `no_repeat_ngram=3` (no trigram
twice in a caption); `greedy_off`/`beam<k>_off` are the same searches with
it turned off, so `no_repeat_cost` is what the check costs.

With `--attention`, the attention model decodes in the same run too, and its
rates are also given as shares of the merge model's (`attention_vs_merge`).
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf
from classic import build_classic, classic_caption
from common import VOCAB_SIZE, machine, random_stats, real_lengths
from numpy_search import Rules as NumpyRules
from numpy_search import beam_search, greedy_search

from radcap.core.config import NO_REPEAT_NGRAM, preset
from radcap.decoding.compiled import CompiledSearch, CompiledStep
from radcap.decoding.search import Result, Rules
from radcap.models.merge import build_captioner

START_ID, END_ID = 1, 2
GREEDY_GOAL = 300  # greedy captions per second / classic's
BEAM3_GOAL = 3  # beam-3 seconds per caption / greedy's, at most


def stop_at(step, lengths, k: int):
    """The step function made to end each caption after its length in words.

    Row `i` (of `len(lengths) * k`, `k` beams per image) gets `<end>` as its
    only choice once `lengths[i // k]` words are written, and never before; a
    length of `max_len` never ends.
    """
    lengths = np.repeat(lengths, k)
    t = 0

    def forced(tokens, state):
        nonlocal t
        log_probs, state, attention = step(tokens, state)
        log_probs = np.array(log_probs)  # (B, vocab_size), writable
        log_probs[:, END_ID] = -np.inf
        ends = lengths == t
        log_probs[ends] = -np.inf
        log_probs[ends, END_ID] = 0.0
        t += 1
        return log_probs, state, attention

    return forced


class Forced:
    """A captioner whose captions end after set lengths, for `CompiledSearch`.

    The length of each image's caption rides in one more feature column;
    `<end>` is the only choice once that many words are written, and never
    before (as `stop_at` does for the NumPy search).
    """

    def __init__(self, model):
        self.model = model
        self.uses_grid = model.uses_grid
        self.feature_dim = model.feature_dim + 1
        self.grid_dim = getattr(model, "grid_dim", None)

    def encode(self, features, grid=None):
        carry, memory = self.model.encode(features[:, :-1], grid)
        wanted = tf.cast(features[:, -1], tf.int32)
        return (*carry, wanted, tf.zeros_like(wanted)), memory

    def step(self, tokens, carry, memory):
        *carry, wanted, t = carry
        logits, carry, attention = self.model.step(tokens, tuple(carry), memory)
        is_end = tf.range(tf.shape(logits)[1])[None, :] == END_ID
        blocked = tf.fill(tf.shape(logits), -np.inf)
        logits = tf.where(
            (wanted == t)[:, None],
            tf.where(is_end, tf.zeros_like(logits), blocked),
            tf.where(is_end, blocked, logits),
        )
        return logits, (*carry, wanted, t + 1), attention


def graph_seconds(
    search,
    features,
    grid,
    lengths,
    max_len,
    batch_size,
    beam,
    no_repeat=NO_REPEAT_NGRAM,
) -> float:
    """Seconds of radcap's compiled search over all of `features`."""
    started = time.perf_counter()
    for s in range(0, len(features), batch_size):
        f = features[s : s + batch_size]
        wanted = np.minimum(lengths[s : s + batch_size], max_len)
        result = Result.of(
            search(
                np.concatenate([f, wanted[:, None].astype(np.float32)], 1),
                None if grid is None else grid[s : s + batch_size],
                start_id=START_ID,
                end_id=END_ID,
                max_len=max_len,
                beam=beam,
                length_penalty=0.0,
                rules=Rules(no_repeat_ngram=no_repeat),
            )
        )
        expected = np.where(wanted < max_len, wanted + 1, max_len)  # with <end>
        assert [len(t) for t in result.tokens] == expected.tolist()
    return time.perf_counter() - started


def decode_seconds(
    step, features, grid, lengths, max_len, batch_size, beam, no_repeat=NO_REPEAT_NGRAM
) -> float:
    """Seconds of the NumPy search (radcap 0.2's) over all of `features`."""
    started = time.perf_counter()
    for s in range(0, len(features), batch_size):
        f = features[s : s + batch_size]
        state = step.start(f, None if grid is None else grid[s : s + batch_size])
        wanted = np.minimum(lengths[s : s + batch_size], max_len)
        forced = stop_at(step, wanted, beam)
        args = dict(
            batch_size=len(f),
            start_id=START_ID,
            end_id=END_ID,
            rules=NumpyRules(no_repeat_ngram=no_repeat),
        )
        if beam == 1:
            result = greedy_search(forced, state, max_len=max_len, **args)
        else:
            result = beam_search(forced, state, max_len=max_len, beam=beam, **args)
        expected = np.where(wanted < max_len, wanted + 1, max_len)  # with <end>
        assert [len(t) for t in result.tokens] == expected.tolist()
    return time.perf_counter() - started


def classic_seconds(model, features, lengths, max_len) -> float:
    """Seconds of the classic loop over `features`, one image at a time.

    Each caption takes as many steps as radcap's: its words and `<end>`.
    """
    started = time.perf_counter()
    for f, length in zip(features, lengths):
        steps = min(int(length) + 1, max_len)
        words = classic_caption(model, f, START_ID, END_ID, steps, True)
        assert len(words) == steps
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="for radcap")
    parser.add_argument("--classic-images", type=int, default=2, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beams", type=int, nargs="+", default=[3, 5])
    parser.add_argument(
        "--attention", action="store_true", help="also radcap + attention"
    )
    parser.add_argument(
        "--lengths",
        choices=("max", "real"),
        default="max",
        help="max: every caption has max_len words; real: the lengths of real "
        "ROCO captions",
    )
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    merge = preset("roco", weights=None)
    stats = {"fc2": random_stats(4096), "grid": random_stats(512)}
    models = {"": build_captioner(merge, VOCAB_SIZE, stats)}
    if args.attention:
        attention = merge.replace(attention=True)
        models["attention_"] = build_captioner(attention, VOCAB_SIZE, stats)
    steps = {prefix: CompiledStep(m) for prefix, m in models.items()}
    searches = {prefix: CompiledSearch(Forced(m)) for prefix, m in models.items()}
    rng = np.random.default_rng(0)
    features = rng.standard_normal((args.images, 4096)).astype(np.float32)
    grid = rng.standard_normal((args.images, 49, 512)).astype(np.float32)
    grids = {prefix: grid if step.uses_grid else None for prefix, step in steps.items()}

    classic = build_classic(
        VOCAB_SIZE, merge.max_len + 1, merge.embed_dim, merge.units, 4096
    )
    classic_features = features[: args.classic_images]
    if args.lengths == "real":
        lengths = real_lengths(args.images, merge.max_len)
    else:
        lengths = np.full(args.images, merge.max_len)
    beams = [1, *args.beams]
    n = args.batch_size

    # name -> (seconds function, its step or search, prefix, beam, no_repeat)
    methods = {}
    for prefix in models:
        for beam in beams:
            name = prefix + ("greedy" if beam == 1 else f"beam{beam}")
            methods[name] = (
                graph_seconds,
                searches[prefix],
                prefix,
                beam,
                NO_REPEAT_NGRAM,
            )
            methods["numpy_" + name] = (
                decode_seconds,
                steps[prefix],
                prefix,
                beam,
                NO_REPEAT_NGRAM,
            )
            if not prefix:
                methods[name + "_off"] = (
                    graph_seconds,
                    searches[prefix],
                    prefix,
                    beam,
                    0,
                )
    for seconds, how, prefix, beam, no_repeat in methods.values():  # warm-up: trace
        g = grids[prefix]
        g = None if g is None else g[:n]
        seconds(how, features[:n], g, lengths[:n], merge.max_len, n, beam, no_repeat)
    classic_caption(classic, features[0], START_ID, END_ID, 1)

    # Alternate the methods for a few rounds; the best round of each counts.
    rounds = {name: [] for name in [*methods, "classic"]}
    for _ in range(args.rounds):
        for name, (seconds, how, prefix, beam, no_repeat) in methods.items():
            took = seconds(
                how, features, grids[prefix], lengths, merge.max_len, n, beam, no_repeat
            )
            rounds[name].append(len(features) / took)
        seconds = classic_seconds(
            classic, classic_features, lengths[: len(classic_features)], merge.max_len
        )
        rounds["classic"].append(len(classic_features) / seconds)
    rates = {name: max(r) for name, r in rounds.items()}
    greedy, classic_speed = rates["greedy"], rates["classic"]

    out = {
        "benchmark": "decode",
        "images": args.images,
        "batch_size": n,
        "lengths": args.lengths,
        "mean_words_per_caption": round(
            float(np.minimum(lengths, merge.max_len).mean()), 2
        ),
    }
    for prefix in models:
        out[f"{prefix}greedy_captions_per_s"] = round(rates[f"{prefix}greedy"], 2)
        for beam in args.beams:
            rate = rates[f"{prefix}beam{beam}"]
            out[f"{prefix}beam{beam}_captions_per_s"] = round(rate, 2)
            out[f"{prefix}beam{beam}_cost_vs_greedy"] = round(
                rates[f"{prefix}greedy"] / rate, 2
            )
    out |= {
        "classic_images": args.classic_images,
        "classic_captions_per_s": round(classic_speed, 3),
        "rounds": {name: [round(x, 3) for x in r] for name, r in rounds.items()},
        "greedy_ratio": round(greedy / classic_speed, 1),
        "greedy_goal": GREEDY_GOAL,
        "greedy_met": greedy / classic_speed >= GREEDY_GOAL,
    }
    out["graph_vs_numpy"] = {
        name: round(rates[name] / rates["numpy_" + name], 3)
        for name, method in methods.items()
        if "numpy_" + name in methods
    }
    out["no_repeat_ngram"] = NO_REPEAT_NGRAM
    out["no_repeat_cost"] = {
        name: round(rates[f"{name}_off"] / rates[name], 3)
        for name in ("greedy", *(f"beam{b}" for b in args.beams))
    }
    if "beam3" in rates:
        out["beam3_goal"] = BEAM3_GOAL
        out["beam3_met"] = greedy / rates["beam3"] <= BEAM3_GOAL
    if args.attention:
        out["attention_vs_merge"] = {
            name: round(rates[f"attention_{name}"] / rates[name], 3)
            for name in ("greedy", *(f"beam{b}" for b in args.beams))
        }
    out["machine"] = machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
