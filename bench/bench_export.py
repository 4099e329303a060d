"""The exported SavedModel against `Captioner.caption`, on the same image files.

Exports a trained run (`radcap.serving.export.export`, default `--beam 1`), loads
the SavedModel in this process with `tf.saved_model.load`, and captions the
same `--images` files both ways: the SavedModel reads the files' bytes and
does everything in its graph; `Captioner.caption` decodes them with Pillow
in threads, runs VGG16 and the same compiled search. The two alternate for
a few rounds and the best round of each counts. Also reports whether the
captions agree, the SavedModel's size, and what a TFLite conversion does.
Prints one JSON object.

    .venv/bin/python bench/bench_export.py --run DIR/checkpoints/demo
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import tensorflow as tf
from common import machine

from radcap import data
from radcap.decoding.captioner import Captioner
from radcap.serving.export import export, folder_size


def tflite(saved_model: Path) -> dict:
    """Try a TFLite conversion: builtin ops only, then with TensorFlow ops."""
    tries = {}
    for name, ops in (
        ("builtins", [tf.lite.OpsSet.TFLITE_BUILTINS]),
        ("with_tf_ops", [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]),
    ):
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model), signature_keys=["serving_default"]
        )
        converter.target_spec.supported_ops = ops
        try:
            flat = converter.convert()
            tries[name] = f"converted: {len(flat) / 2**20:.0f} MB"
        except Exception as err:  # the converter raises many types
            tries[name] = f"failed: {type(err).__name__}: {str(err)[:300]}"
    return tries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default=None, help="where the run's data is")
    parser.add_argument("--no-tflite", action="store_true")
    args = parser.parse_args()

    run = Path(args.run)
    root = args.root or run.parents[1]
    captioner = Captioner.load(run)
    paths = data.load(captioner.config, root).images("test").path.tolist()
    paths = (paths * (args.images // len(paths) + 1))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = export(run, Path(tmp) / "export", beam=args.beam)
        export_seconds = time.perf_counter() - started
        size = folder_size(out)
        model = tf.saved_model.load(str(out))
        serve = model.signatures["serving_default"]

        def saved_model_captions():
            images = tf.constant([Path(p).read_bytes() for p in paths])
            return [c.decode() for c in serve(images=images)["caption"].numpy()]

        def captioner_captions():
            return [str(c) for c in captioner.caption(paths, beam=args.beam)]

        methods = {"saved_model": saved_model_captions, "captioner": captioner_captions}
        captions = {name: method() for name, method in methods.items()}  # warm-up
        rounds = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, method in methods.items():
                started = time.perf_counter()
                method()
                rounds[name].append(len(paths) / (time.perf_counter() - started))
        rates = {name: max(r) for name, r in rounds.items()}
        conversion = {} if args.no_tflite else tflite(out)
    same = sum(a == b for a, b in zip(captions["saved_model"], captions["captioner"]))
    print(
        json.dumps(
            {
                "benchmark": "export",
                "run": str(run),
                "images": len(paths),
                "beam": args.beam,
                "export_seconds": round(export_seconds, 1),
                "saved_model_mb": round(size / 2**20, 1),
                "saved_model_images_per_s": round(rates["saved_model"], 2),
                "captioner_images_per_s": round(rates["captioner"], 2),
                "ratio": round(rates["saved_model"] / rates["captioner"], 3),
                "goal": 0.9,
                "same_captions": f"{same}/{len(paths)}",
                "rounds": {k: [round(x, 2) for x in v] for k, v in rounds.items()},
                "tflite": conversion,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
