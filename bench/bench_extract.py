"""Feature extraction speed: radcap's cache writer against the backbone alone.

Writes JPEG files of ROCO-like sizes (500x400 to 1500x1200, smooth grey
content like scans) into a temporary folder, then measures images per second
of:

- the ceiling: VGG16 alone on in-memory, already preprocessed batches;
- decoding: the decode threads alone (read, decode, resize to 224x224), no
  backbone: the CPU's ceiling, which holds extraction on a GPU machine;
- radcap: `radcap.features.cache.extract` from the files (threaded decoding
  overlapped with the backbone, float16 cache written to disk);
- the classic loop: `load_img`, `preprocess_input` and `model.predict` per image.

The backbone has random weights (no download) and the `roco` preset's batch
of 32; its speed does not depend on the weights. The methods alternate for a
few rounds and the best round of each counts, so that other work on the
machine skews the ratios less. Prints one JSON object.

    .venv/bin/python bench/bench_extract.py
    .venv/bin/python bench/bench_extract.py --images 256 --rounds 3
"""

import argparse
import itertools
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from common import machine
from PIL import Image

from radcap.core.config import preset
from radcap.features.backbone import Extractor, preprocess
from radcap.features.cache import extract

GOAL = 0.9  # radcap images per second / the forward-only ceiling


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` smooth greyscale JPEGs from 500x400 to 1500x1200 pixels."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        width, height = int(rng.integers(500, 1501)), int(rng.integers(400, 1201))
        coarse = rng.integers(0, 256, (height // 40, width // 40), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        noise = rng.normal(0, 8, (height, width))
        pixels = np.clip(np.asarray(image, np.float32) + noise, 0, 255)
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(pixels.astype(np.uint8)).convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def ceiling_rate(model, batch_size: int, batches: int):
    """Images per second of the backbone alone on a preprocessed in-memory batch."""
    forward = tf.function(lambda x: model(x, training=False))
    rng = np.random.default_rng(0)
    batch = preprocess(rng.uniform(0, 255, (batch_size, 224, 224, 3)).astype("float32"))
    forward(batch)  # trace

    def rate():
        started = time.perf_counter()
        for _ in range(batches):
            [np.asarray(out) for out in forward(batch)]
        return batches * batch_size / (time.perf_counter() - started)

    return rate


def decode_rate(extractor, paths, batch_size: int, workers: int):
    """Images per second of `workers` decode threads alone, batch by batch."""

    def rate():
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            for s in range(0, len(paths), batch_size):
                extractor.read_batch(paths[s : s + batch_size], pool)
        return len(paths) / (time.perf_counter() - started)

    return rate


def radcap_rate(config, extractor, paths, root: Path):
    """Images per second of `radcap.features.cache.extract`, files to cache on disk."""
    extractor.forward(np.zeros((config.extract_batch_size, 224, 224, 3), "float32"))
    images = pd.DataFrame({"image_id": [p.stem for p in paths], "path": paths})
    runs = itertools.count()

    def rate():
        split = f"run{next(runs)}"  # a new cache each time
        started = time.perf_counter()
        cached = extract(config, images, split, root, extractor=extractor)
        seconds = time.perf_counter() - started
        assert cached["fc2"].array.shape == (len(paths), 4096)
        return len(paths) / seconds

    return rate


def classic_rate(model, paths):
    """Images per second of the classic loop: one file, one `predict`."""
    vgg16 = keras.applications.vgg16

    def one(path):
        image = keras.utils.load_img(path, target_size=(224, 224))
        x = vgg16.preprocess_input(keras.utils.img_to_array(image)[None])
        return model.predict(x, verbose=0)

    one(paths[0])  # warm-up

    def rate():
        started = time.perf_counter()
        for path in paths:
            one(path)
        return len(paths) / (time.perf_counter() - started)

    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="per round")
    parser.add_argument("--ceiling-batches", type=int, default=2, help="per round")
    parser.add_argument("--classic-images", type=int, default=4, help="per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    bs = args.batch_size
    config = preset("roco", weights=None, extract_batch_size=bs)
    extractor = Extractor(config)
    with tempfile.TemporaryDirectory(prefix="radcap-bench-") as folder:
        root = Path(folder)
        (root / "images").mkdir()
        paths = write_jpegs(root / "images", args.images)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        methods = {
            "ceiling": ceiling_rate(extractor.model, bs, args.ceiling_batches),
            "decode_1_thread": decode_rate(extractor, paths, bs, 1),
            "decode": decode_rate(extractor, paths, bs, extractor.workers),
            "radcap": radcap_rate(config, extractor, paths, root),
            "classic": classic_rate(extractor.model, paths[: args.classic_images]),
        }
        # Alternate the methods for a few rounds; the best round of each counts.
        rounds = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, rate in methods.items():
                rounds[name].append(rate())
    best = {m: max(r) for m, r in rounds.items()}
    ceiling, speed, classic = best["ceiling"], best["radcap"], best["classic"]
    print(
        json.dumps(
            {
                "benchmark": "extract",
                "images": args.images,
                "mean_jpeg_kb": round(megabytes * 1000 / args.images, 1),
                "batch_size": args.batch_size,
                "decode_threads": extractor.workers,
                "ceiling_images_per_s": round(ceiling, 2),
                "decode_images_per_s": round(best["decode"], 2),
                "decode_1_thread_images_per_s": round(best["decode_1_thread"], 2),
                "radcap_images_per_s": round(speed, 2),
                "classic_images": args.classic_images,
                "classic_images_per_s": round(classic, 2),
                "rounds": {m: [round(x, 2) for x in r] for m, r in rounds.items()},
                "share_of_ceiling": round(speed / ceiling, 3),
                "ratio_vs_classic": round(speed / classic, 2),
                "goal": GOAL,
                "met": speed / ceiling >= GOAL,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
