"""The device check: what radcap does on this machine's accelerator, as one JSON file.

Run on a GPU machine with `bench/device_check.sh` (under 5 minutes on one
GPU); it also runs on a CPU, slowly in full or in seconds with `--quick`,
which the test suite does so that it cannot rot. It measures, in order:

- `extraction`: images per second through the backbone (VGG16 with random
  weights: no download, the same speed) from JPEG files;
- `training`: target tokens per second at the `roco` preset's sizes on real
  ROCO caption lengths, in float32 and mixed_float16, XLA off and on (each as
  this machine grants it; a precision it does not grant repeats the figures
  of the one it does, `same_as`), the seconds of the first epoch against a later
  one, the batch shapes of the first epoch (XLA compiles each once), and the
  GPU's utilisation sampled with `nvidia-smi` while the later epoch runs
  (null, with the reason, where there is no `nvidia-smi`);
- `decoding`: captions per second, greedy and beam 3, `max_len` words each;
- `demo`: the BLEU-4 of `radcap demo` on the test split.

A part that fails gives `{"error": ...}` and the others still run. Writes the
JSON to `--out` and prints it.

    bench/device_check.sh [--out device_check.json]
    .venv/bin/python bench/device_check.py --quick --out /tmp/check.json
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_extract import write_jpegs
from common import machine, real_caption_tokens, target_count

from radcap.core.config import preset
from radcap.core.devices import resolve_precision
from radcap.core.files import write_json
from radcap.training.batches import WIDTHS, Batches
from radcap.training.on_device import feed

# Sizes of a full run (a GPU: under 5 minutes) and of `--quick` (a CPU test).
SIZES = {
    "full": dict(
        images=256,
        captions=4096,
        vocab=5000,
        widths=WIDTHS,
        decode=256,
        sizes={},
        demo={},
    ),
    "quick": dict(
        images=4,
        captions=48,
        vocab=200,
        widths=1,  # one XLA compile: each takes seconds on a CPU
        decode=4,
        sizes=dict(embed_dim=8, units=16, attention_units=8, batch_size=16),
        demo=dict(demo_size=20, epochs=1, units=16, embed_dim=8, extract_batch_size=4),
    ),
}
PRECISIONS = ("float32", "mixed_float16")


class Utilisation:
    """The GPU's utilisation in percent, sampled by `nvidia-smi` in a thread."""

    QUERY = ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

    def __init__(self, every: float = 0.2):
        self.every, self.samples = every, []
        self.smi = shutil.which("nvidia-smi")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(self.every):
            done = subprocess.run([self.smi, *self.QUERY], capture_output=True)
            lines = done.stdout.decode().split()
            if done.returncode == 0 and lines and lines[0].isdigit():
                self.samples.append(int(lines[0]))  # the first GPU's

    def __enter__(self):
        if self.smi:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.smi:
            self._thread.join()

    def result(self) -> dict:
        if not self.smi:
            return {"mean_percent": None, "reason": "nvidia-smi not found"}
        if not self.samples:
            return {"mean_percent": None, "reason": "nvidia-smi gave no reading"}
        return {
            "mean_percent": round(float(np.mean(self.samples)), 1),
            "max_percent": max(self.samples),
            "samples": len(self.samples),
        }


def device() -> dict:
    """The accelerator this check ran on."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"gpu": None, "gpus": 0}
    details = tf.config.experimental.get_device_details(gpus[0])
    return {
        "gpu": details.get("device_name", "GPU"),
        "gpus": len(gpus),
        "compute_capability": list(details.get("compute_capability", ())),
    }


def extraction(folder: Path, size: dict) -> dict:
    """Images per second from JPEG files through the backbone, after a warm-up."""
    from radcap.features.backbone import Extractor

    batch = min(32, size["images"])
    config = preset("roco", weights=None, extract_batch_size=batch)
    paths = [str(p) for p in write_jpegs(folder, size["images"])]
    extractor = Extractor(config)
    extractor.run(paths[:batch], lambda *a: None, desc="warm-up")
    started = time.perf_counter()
    extractor.run(paths, lambda *a: None, desc="extraction")
    seconds = time.perf_counter() - started
    return {"images": len(paths), "images_per_s": round(len(paths) / seconds, 2)}


def epoch_seconds(model, data) -> float:
    """Seconds of one `fit` epoch over the dataset `data`."""
    started = time.perf_counter()
    model.fit(data, shuffle=False, verbose=0)
    return time.perf_counter() - started


def train_rates(size: dict) -> tuple[dict, object]:
    """Targets per second in each precision, XLA off and on; the float32 model."""
    from radcap.training.recipe import new_captioner

    config = preset("roco", weights=None, **size["sizes"])
    tokens = real_caption_tokens(size["captions"], config.max_len, size["vocab"])
    rng = np.random.default_rng(0)
    arrays = {"features": rng.standard_normal((len(tokens), 4096)).astype("float16")}
    stats = {"fc2": (np.zeros(4096, "float32"), np.ones(4096, "float32"))}
    rows = np.arange(len(tokens))
    batches = Batches(
        tokens, rows, arrays, config.batch_size, True, widths=size["widths"]
    )
    shapes = {batches.batch(i)[0]["tokens"].shape for i in batches.plan(0)}
    out, kept = {}, None
    for asked in PRECISIONS:
        precision, _ = resolve_precision(asked)
        for xla in ("off", "on"):
            same = f"{precision}_xla_{xla}"  # what this machine granted
            if asked != precision and same in out:  # e.g. float16 on a CPU
                out[f"{asked}_xla_{xla}"] = {**out[same], "same_as": same}
                continue
            run = config.replace(jit_compile=xla)
            model = new_captioner(run, size["vocab"], stats, precision, verbose=False)
            fitted, (data,) = feed(model, [batches])  # as training feeds it
            first = epoch_seconds(fitted, data)  # traces; XLA compiles
            batches.epoch = 1
            with Utilisation() as gpu:
                later = epoch_seconds(fitted, data)
            batches.epoch = 0
            out[f"{asked}_xla_{xla}"] = {
                "precision": model.dtype_policy.name,
                "jit_compile": bool(model.jit_compile),
                "features_gathered_on": "host" if fitted is model else "device",
                "targets_per_s": round(target_count(tokens) / later, 1),
                "first_epoch_s": round(first, 2),
                "later_epoch_s": round(later, 2),
                "shapes_first_epoch": len(shapes),
                "gpu_utilisation": gpu.result(),
            }
            if (asked, xla) == ("float32", "off"):
                kept = model
    return out, (kept, config)


def decoding(model, config, size: dict) -> dict:
    """Captions per second, greedy and beam 3, every caption `max_len` words."""
    from radcap.decoding.compiled import CompiledSearch
    from radcap.decoding.search import Rules

    search = CompiledSearch(model)
    features = np.random.default_rng(1).standard_normal((size["decode"], 4096))
    features = features.astype("float32")
    rules = Rules(never=(0, 1, 2, 3))  # no <end>: every caption max_len words
    out = {"images": size["decode"], "words_per_caption": config.max_len}
    for name, beam in (("greedy", 1), ("beam3", 3)):
        settings = dict(start_id=1, end_id=2, max_len=config.max_len, beam=beam)
        search(features[:2], rules=rules, **settings)  # trace
        started = time.perf_counter()
        search(features, rules=rules, **settings)
        seconds = time.perf_counter() - started
        out[f"{name}_captions_per_s"] = round(size["decode"] / seconds, 2)
    return out


def demo_bleu(root: Path, size: dict) -> dict:
    """`radcap demo`'s test BLEU-4: draw, extract, train, evaluate."""
    from radcap.evaluation.evaluate import evaluate
    from radcap.training.train import train

    config = preset("demo", **size["demo"])
    started = time.perf_counter()
    summary = train(config, root=root, verbose=False)
    metrics = evaluate(
        config.run_dir(root),
        root=root,
        verbose=False,
        baselines=False,
        controls=False,
        meteor=False,
    )
    return {
        "bleu4": round(float(metrics["BLEU-4"]), 4),
        "epochs_run": summary["epochs_run"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def part(out: dict, name: str, measure):
    """`out[name] = measure()`, or the error it raised; returns the result."""
    started = time.perf_counter()
    try:
        out[name] = measure()
    except Exception as error:  # one failed part must not lose the others
        out[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
    out[name]["part_seconds"] = round(time.perf_counter() - started, 1)
    return out[name]


def check(quick: bool, folder: Path) -> dict:
    """Every part of the check, in order; `folder` holds its files."""
    size = SIZES["quick" if quick else "full"]
    out = {"benchmark": "device_check", "quick": quick, "device": device()}
    part(out, "extraction", lambda: extraction(folder / "jpegs", size))
    trained = {}

    def training():
        rates, trained["model"] = train_rates(size)
        return rates

    part(out, "training", training)
    if "model" in trained:
        part(out, "decoding", lambda: decoding(*trained["model"], size))
    else:
        out["decoding"] = {"error": "training failed: no model to decode with"}
    part(out, "demo", lambda: demo_bleu(folder / "demo", size))
    out["machine"] = machine()
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CPU test's sizes")
    parser.add_argument("--out", default="device_check.json", help="the JSON file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    (Path(args.out).parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="radcap-check-") as folder:
        (Path(folder) / "jpegs").mkdir()
        out = check(args.quick, Path(folder))
    out["seconds"] = round(time.perf_counter() - started, 1)
    write_json(Path(args.out), out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
