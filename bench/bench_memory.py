"""Peak memory of one training epoch over ROCO-size cached features.

Writes a 65,000 x 4096 float16 feature cache (532 MB, like ROCO's train
split) into a temporary folder, then trains radcap's model (`roco` preset
sizes, 5000 words) for one epoch over it in a fresh process per caption
count, the way `radcap.training.train.train` does: feature statistics in chunks, then
`Batches` gathering each batch's rows from the memory map. Captions point at
images spread over the whole cache. Peak RSS should stay flat in the number
of captions; each run also splits it into the process's own (anonymous)
memory and file-backed pages (libraries, the memory map). For contrast the
JSON also gives what the classic per-prefix arrays (one float32 copy of the
image vector per target word) would take. Prints one JSON object.

    .venv/bin/python bench/bench_memory.py
    .venv/bin/python bench/bench_memory.py --captions 2000 8000
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import VOCAB_SIZE, caption_tokens, machine, random_stats, target_count

GOAL_GB = 3.0


def write_cache(path: Path, images: int, chunk: int = 4096) -> None:
    """A `(images, 4096)` float16 `.npy` of random features, written in chunks."""
    array = np.lib.format.open_memmap(path, "w+", np.float16, (images, 4096))
    rng = np.random.default_rng(0)
    for s in range(0, images, chunk):
        n = min(chunk, images - s)
        array[s : s + n] = rng.standard_normal((n, 4096), np.float32)
    array.flush()


def proc_status_mb(*fields: str) -> dict:
    """Fields of /proc/self/status (Linux) in MB (10^6 bytes), e.g. RssAnon."""
    lines = Path("/proc/self/status").read_text().splitlines()
    values = dict(line.split(":", 1) for line in lines)
    return {f: round(int(values[f].split()[0]) * 1024 / 1e6, 1) for f in fields}


def train_epoch(cache: Path, captions: int) -> dict:
    """One epoch over `captions` captions; runs in its own process."""
    import keras

    from radcap.core.config import preset
    from radcap.models.merge import build_captioner, feature_stats
    from radcap.training.batches import Batches, token_loss

    config = preset("roco", weights=None)
    features = np.load(cache, mmap_mode="r")  # (images, 4096) float16
    tokens = caption_tokens(captions, config.max_len)
    rows = np.random.default_rng(1).integers(0, len(features), captions)
    model = build_captioner(config, VOCAB_SIZE, {"fc2": random_stats(4096)})
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=token_loss(),
    )
    # Anonymous memory is the process's own; file-backed pages of the memory
    # map count in RSS too but are capped by the cache size and reclaimable.
    peaks = {"RssAnon": 0.0, "RssFile": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            for field, mb in proc_status_mb(*peaks).items():
                peaks[field] = max(peaks[field], mb)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    feature_stats(features, np.unique(rows))  # as radcap.training.train.train does
    batches = Batches(tokens, rows, {"features": features}, config.batch_size, True)
    model.fit(batches.dataset(), epochs=1, shuffle=False, verbose=0)
    stop.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB
    return {
        "captions": captions,
        "targets": target_count(tokens),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_anon_mb": peaks["RssAnon"],
        "peak_file_backed_mb": peaks["RssFile"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=65_000)
    parser.add_argument("--captions", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(train_epoch(Path(args.worker[0]), int(args.worker[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="radcap-bench-") as folder:
        cache = Path(folder) / "train.npy"
        write_cache(cache, args.images)
        runs = []
        for n in args.captions:
            worker = [sys.executable, __file__, "--worker", str(cache), str(n)]
            done = subprocess.run(worker, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))

    peaks = [r["peak_rss_mb"] for r in runs]
    anon = [r["peak_anon_mb"] for r in runs]
    more = max(runs[-1]["captions"] - runs[0]["captions"], 1)
    cache_mb = args.images * 4096 * 2 / 1e6
    # A full epoch maps at most the whole cache: an upper bound (it counts the
    # cache pages already in the file-backed peak twice).
    bound = max(anon) + max(r["peak_file_backed_mb"] for r in runs) + cache_mb
    # The classic way: per target word, a float32 image vector and a prefix of 61.
    roco_targets = target_count(caption_tokens(65_000, 60))
    print(
        json.dumps(
            {
                "benchmark": "memory",
                "cache_images": args.images,
                "cache_mb": round(cache_mb, 1),
                "runs": runs,
                "peak_rss_gb": round(max(peaks) / 1000, 2),
                "anon_growth_kb_per_caption": round(
                    (anon[-1] - anon[0]) * 1e3 / more, 2
                ),
                "rss_growth_kb_per_caption": round(
                    (peaks[-1] - peaks[0]) * 1e3 / more, 2
                ),
                "full_epoch_bound_gb": round(bound / 1000, 2),
                "classic_prefix_arrays_gb_at_65000_captions": round(
                    roco_targets * (4096 * 4 + 61 * 4) / 1e9, 1
                ),
                "goal_gb": GOAL_GB,
                "met": max(max(peaks), bound) / 1000 < GOAL_GB,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
