"""Trust figures of trained demo runs: familiarity, repetition, clinical checks.

For each run folder given (default the demo and the attention demo under
`--root`), after `radcap demo [--attention]`:

- familiarity: the share of test images flagged, the controls' scores, and
  how many of 33 real photographs and non-demo images (tests/real_images.py)
  are flagged, with the least unusual one's score over the threshold;
- repetition: test-split BLEU-4 and the captions with a repeated 3-gram
  (test split, controls, real images), with `no_repeat_ngram` 3 and 0;
- clinical: the model's and both baselines' figures from `metrics.json`.

Prints one JSON object.

    .venv/bin/python bench/bench_trust.py --root /tmp/demo-work
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_images import write_real_images  # noqa: E402

from radcap import data  # noqa: E402
from radcap.decoding.captioner import Captioner  # noqa: E402
from radcap.evaluation.baselines import control_images  # noqa: E402
from radcap.evaluation.metrics import score  # noqa: E402
from radcap.features.splits import load_split  # noqa: E402


def repeats(caption) -> bool:
    words = str(caption).split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


def run_figures(run_dir: Path, root: Path, real: list, controls: list) -> dict:
    captioner = Captioner.load(run_dir)
    config = captioner.config
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = load_split(config, data.load(config, root), "test", root)
    features, grid = test.image_features()
    arrays, _ = captioner.image_features(real + controls)
    out = {"familiarity": {k: v for k, v in metrics["familiarity"].items()}}
    real_scores = captioner.familiarity.scores(arrays["block_means"][: len(real)])
    threshold = captioner.familiarity.threshold
    out["familiarity"]["real_images"] = len(real)
    out["familiarity"]["real_flagged"] = int((real_scores > threshold).sum())
    least = int(np.argmin(real_scores))
    out["familiarity"]["real_least_unusual"] = {
        "image": real[least].name,
        "score_over_threshold": round(float(real_scores[least] / threshold), 2),
    }
    grid_real = arrays.get(config.grid_layer) if captioner.attention else None
    out["no_repeat_ngram"] = {}
    for n in (3, 0):
        row = {}
        for beam in (1, config.beam):
            texts = captioner.caption_features(
                features, grid, beam=beam, no_repeat_ngram=n
            )
            name = "greedy" if beam == 1 else f"beam-{beam}"
            scores = score(test.references(), dict(zip(test.image_ids, texts)), False)
            row[f"{name}_BLEU-4"] = round(scores["BLEU-4"], 4)
            row[f"{name}_repeated"] = sum(map(repeats, texts))
        others = captioner.caption(arrays["fc2"], grid=grid_real, no_repeat_ngram=n)
        row["real_and_controls_repeated"] = sum(map(repeats, others))
        out["no_repeat_ngram"][str(n)] = row
    clinical = {"model": metrics["clinical"]}
    clinical |= {k: v["clinical"] for k, v in metrics["baselines"].items()}
    out["clinical"] = {
        name: {
            "side_agreement": c["laterality"]["agreement"],
            "side_contradiction": c["laterality"]["contradiction"],
            "modality_agreement": c["modality"]["agreement"],
            "region_agreement": c["region"]["agreement"],
            "false_finding": c["finding"]["false_finding"],
            "missed_finding": c["finding"]["missed_finding"],
        }
        for name, c in clinical.items()
    }
    out["extractor_vs_demo_truth"] = metrics["clinical"].get("extractor_vs_demo_truth")
    out["bleu4_coco_vs_nltk"] = [metrics["BLEU-4"], metrics["nltk"]["BLEU-4"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--run", action="append", help="run folders")
    args = parser.parse_args()
    runs = args.run or [
        args.root / "checkpoints/demo",
        args.root / "checkpoints/demo-attention",
    ]
    folder = Path(tempfile.mkdtemp(prefix="radcap-trust-"))
    real = write_real_images(folder)
    controls = list(control_images(folder / "controls").values())
    out = {"benchmark": "trust"}
    for run in map(Path, runs):
        out[run.name] = run_figures(run, args.root, real, controls)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
