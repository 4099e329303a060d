"""Batches per second of the input pipeline alone, on one core, at `roco` sizes.

A GPU trains only as fast as its batches arrive. This measures radcap's input
pipeline without a model: `Batches.dataset()` (tf.data: the epoch's indices
from a generator, a parallel map gathering each batch from the memory-mapped
cache, float16 kept) against the pipeline of radcap 0.4 (`from_generator`
over whole batches, gathered as float32: `generator_dataset` below), both
drained inside a `tf.function` as Keras' train step pulls them.

- Cache: a `(--images, 4096)` float16 `fc2` cache (65,000 rows: ROCO's
  train split, 533 MB), and with attention a `(--grid-images, 49, 512)`
  float16 grid (ROCO's would be 3.3 GB; 16,384 rows, 822 MB, by default:
  a batch gathers 64 rows wherever they lie, so its cost hardly depends on
  the file's length), written to a temporary folder, read through the page
  cache (warmed by a first pass).
- Gathered on the device (`radcap.training.on_device.row_dataset`, what a
  GPU gets when the caches fit on it): the pipeline carries row numbers
  and tokens only; the gather is part of the train step on the device.
- Captions: real ROCO captions (`common.real_caption_tokens`), batch 64,
  bucketed and filled as training does.
- One core: each measurement runs in a process pinned to CPU 0.

The goal: 3 times the batches per second that a GPU would consume, taken
from the train step's FLOPs (`flops.train_step_flops` over the epoch's
batch widths) and the throughputs assumed in `flops.DEVICES`. Methods
alternate for `--rounds` rounds; the best of each counts. Prints one JSON
object.

    .venv/bin/python bench/bench_pipeline.py [--batches 300] [--rounds 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import VOCAB_SIZE, machine, real_caption_tokens
from flops import DEVICES, train_step_flops

from radcap.core.config import preset
from radcap.training.batches import Batches, token_weights
from radcap.training.on_device import row_dataset

GOAL = 3  # the pipeline's batches per second / a device's
ROWS_MORE = 10  # `row_dataset` drains this many times the batches: it is fast


def write_cache(path: Path, shape: tuple, block: int = 1024) -> None:
    """A float16 `.npy` of `shape`: one random block of rows, repeated."""
    array = np.lib.format.open_memmap(path, "w+", np.float16, shape)
    rows = np.random.default_rng(0).standard_normal((block, *shape[1:]), np.float32)
    rows = rows.astype(np.float16)
    for s in range(0, shape[0], block):
        array[s : s + block] = rows[: shape[0] - s]
    array.flush()


def generator_dataset(batches: Batches):
    """radcap 0.4's pipeline: whole batches from a Python generator, float32."""
    import tensorflow as tf

    lengths = batches.lengths

    def batch(index):  # radcap 0.4's `Batches.batch`, filled (a train split)
        width = int(
            batches.widths[np.searchsorted(batches.widths, lengths[index].max())]
        )
        tokens = np.zeros((batches.batch_size, width), np.int32)
        tokens[: len(index)] = batches.tokens[index, :width]
        tokens[len(index) :, 0] = tokens[0, 0]
        rows = batches.rows[index]
        order = np.argsort(rows)  # gather sorted rows from the memory map
        inputs = {}
        for name, array in batches.arrays.items():
            gathered = np.zeros((batches.batch_size, *array.shape[1:]), np.float32)
            gathered[order] = array[rows[order]]
            inputs[name] = gathered
        inputs["tokens"] = tokens[:, :-1]
        return inputs, tokens[:, 1:], token_weights(tokens[:, 1:])

    def generate():
        for index in batches.plan(batches.epoch):
            yield batch(index)

    signature = {
        name: tf.TensorSpec((None, *a.shape[1:]), tf.float32)
        for name, a in batches.arrays.items()
    }
    signature["tokens"] = tf.TensorSpec((None, None), tf.int32)
    pair = tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, None))
    data = tf.data.Dataset.from_generator(generate, output_signature=(signature, *pair))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF
    )
    data = data.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return data.with_options(options).prefetch(2)


def drain_rate(data, count: int) -> float:
    """Batches per second of `data`, pulled inside a `tf.function`."""
    import tensorflow as tf

    iterator = iter(data.repeat())

    @tf.function
    def drain(n):
        total = tf.constant(0.0)
        for _ in tf.range(n):
            inputs, targets, weights = next(iterator)
            for tensor in tf.nest.flatten(inputs):  # touch every tensor
                total += tf.cast(tf.reshape(tensor, [-1])[0], tf.float32)
            total += tf.reduce_sum(weights[:1])
        return total

    drain(tf.constant(3))  # trace, start the threads
    started = time.perf_counter()
    drain(tf.constant(count))
    return count / (time.perf_counter() - started)


def worker(folder: Path, attention: bool, count: int, rounds: int) -> dict:
    """Both pipelines over one cache, alternating; runs pinned to one core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config = preset("roco", weights=None)
    arrays = {"features": np.load(folder / "features.npy", mmap_mode="r")}
    if attention:
        arrays["grid"] = np.load(folder / "grid.npy", mmap_mode="r")
    tokens = real_caption_tokens(count * config.batch_size, config.max_len)
    rows = np.random.default_rng(1).integers(0, len(arrays["features"]), len(tokens))
    if attention:
        rows %= len(arrays["grid"])
    batches = Batches(tokens, rows, arrays, config.batch_size, True, fill=True)
    empty = len(arrays["features"])  # `row_dataset`'s zero row: after them
    methods = {
        "generator": generator_dataset,
        "tf_data": Batches.dataset,
        "rows": lambda b: row_dataset(b, 0, empty),  # gathered on the device
    }
    rates = {name: [] for name in methods}
    for round_ in range(rounds + 1):  # the first warms the page cache and maps
        for name, make in methods.items():
            many = count * (ROWS_MORE if name == "rows" else 1)
            rate = drain_rate(make(batches), many)
            if round_:
                rates[name].append(round(rate, 1))
    plan = batches.plan(0)
    widths = [batches.batch(i)[0]["tokens"].shape[1] for i in plan[:count]]
    flops = [
        train_step_flops(config.replace(attention=attention), VOCAB_SIZE, 64, w)
        for w in widths
    ]
    return {"rounds": rates, "mean_width": float(np.mean(widths)), "flops": flops}


def report(name: str, run: dict) -> dict:
    """Rates, the improvement, and what each device would consume."""
    best = {method: max(r) for method, r in run["rounds"].items()}
    step = float(np.mean(run["flops"]))
    out = {
        "generator_batches_per_s": best["generator"],
        "tf_data_batches_per_s": best["tf_data"],
        "tf_data_vs_generator": round(best["tf_data"] / best["generator"], 2),
        "rows_batches_per_s": best["rows"],
        "rows_vs_tf_data": round(best["rows"] / best["tf_data"], 2),
        "rounds": run["rounds"],
        "mean_positions_per_caption": round(run["mean_width"], 2),
        "train_step_gflop": round(step / 1e9, 2),
        "devices": {},
    }
    for device, rate in DEVICES.items():
        consumes = rate / step
        out["devices"][device] = {
            "consumes_batches_per_s": round(consumes, 1),
            "goal_batches_per_s": round(GOAL * consumes, 1),
            "met_on_host": best["tf_data"] >= GOAL * consumes,
            "tf_data_share_of_goal": round(best["tf_data"] / (GOAL * consumes), 3),
            "met_on_device": best["rows"] >= GOAL * consumes,
            "rows_share_of_goal": round(best["rows"] / (GOAL * consumes), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=65_000)
    parser.add_argument("--grid-images", type=int, default=16_384)
    parser.add_argument("--batches", type=int, default=300, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        attention = args.worker[1] == "attention"
        run = worker(Path(args.worker[0]), attention, args.batches, args.rounds)
        print(json.dumps(run))
        return

    out = {"benchmark": "pipeline", "batch_size": 64, "cores": 1, "goal": GOAL}
    out["cache"] = {"images": args.images, "grid_images": args.grid_images}
    with tempfile.TemporaryDirectory(prefix="radcap-bench-") as folder:
        write_cache(Path(folder) / "features.npy", (args.images, 4096))
        write_cache(Path(folder) / "grid.npy", (args.grid_images, 49, 512))
        for name in ("merge", "attention"):
            command = [sys.executable, __file__, "--worker", folder, name]
            command += ["--batches", str(args.batches), "--rounds", str(args.rounds)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            out[name] = report(name, json.loads(done.stdout.strip().splitlines()[-1]))
    out["devices_assumed_flop_per_s"] = DEVICES
    out["machine"] = machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
