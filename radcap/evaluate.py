"""Caption metrics as the COCO caption evaluation code defines them, and run evaluation.

BLEU-1..4, METEOR, ROUGE-L and CIDEr come from `pycocoevalcap`, fed with
captions already cleaned by `radcap.text.clean_caption` (lowercase, punctuation
dropped), so the PTB tokenizer, which needs Java, is not used. METEOR needs
Java too; where it is missing METEOR is left out and `metrics.json` says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from radcap.text import clean_caption

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def java_available() -> bool:
    """Whether METEOR can run (it is a Java program)."""
    return shutil.which("java") is not None


def distinct_share(captions) -> float:
    """Share of distinct captions: 1.0 when all differ, 1/N when all are the same."""
    captions = list(captions)
    return len(set(captions)) / len(captions) if captions else 0.0


def score(references: dict, candidates: dict, meteor: bool | None = None) -> dict:
    """Score generated captions against references.

    Args:
        references: image_id → list of reference captions.
        candidates: image_id → generated caption (same keys).
        meteor: Compute METEOR; default: when Java is installed.

    Returns:
        `{"BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr", "distinct"}` plus `"METEOR"`
        (or `"METEOR_skipped"` with the reason), floats in [0, 1] (CIDEr up to 10).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    missing = set(references) ^ set(candidates)
    if missing:
        raise ValueError(f"references and candidates differ in {len(missing)} image ids, "
                         f"e.g. {sorted(missing)[:3]}.")
    if not candidates:
        raise ValueError("Nothing to score: no captions given.")
    gts = {k: [clean_caption(r) for r in refs] for k, refs in references.items()}
    # An empty candidate breaks the scorers; a placeholder word scores as wrong.
    res = {k: [clean_caption(c) or "<empty>"] for k, c in candidates.items()}
    out = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if meteor is None:
        meteor = java_available()
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        scorer.close() if hasattr(scorer, "close") else None
    else:
        out["METEOR_skipped"] = "Java not found: METEOR is a Java program. Install a JRE."
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["distinct"] = distinct_share(candidates.values())
    return out


def decodings(config, beams=None) -> list[int]:
    """Beam widths to evaluate: greedy (1) and the config's beam."""
    beams = beams or sorted({1, config.beam})
    return [int(b) for b in beams]


def evaluate(run_dir: str | Path, root: str | Path = ".", split: str = "test",
             beams=None, dataset=None, verbose: bool = True) -> dict:
    """Caption a split with a trained run and write `metrics.json` into the run folder.

    Each image is captioned once and scored against all its references.

    Args:
        run_dir: A run folder made by `radcap.train.train`.
        root: Folder that the run config's data and feature paths start from.
        split: Split to evaluate.
        beams: Beam widths to compare; default greedy and the config's beam.
        dataset: A `radcap.datasets.Dataset`; default loaded from the config.
        verbose: Print the metrics table.

    Returns:
        The metrics dict: the greedy scores under the metric keys, `"split"`,
        `"decoding"`, and `"results"` with the scores of every decoding.
    """
    from radcap.decode import Captioner
    from radcap.features import extract

    captioner = Captioner.load(run_dir)
    config = captioner.config
    if dataset is None:
        from radcap import datasets

        dataset = datasets.load(config, root)
    cached = extract(config, dataset.images(split), split, root)
    fc2 = cached[config.layer]
    grid = cached[config.grid_layer].array if config.attention else None
    failed = set(fc2.skipped["image_id"].astype(str))
    references = {k: v for k, v in dataset.references(split).items() if k not in failed}
    keep = [i for i, image_id in enumerate(fc2.ids) if image_id in references]
    ids = [fc2.ids[i] for i in keep]

    results, captions = {}, {}
    for beam in decodings(config, beams):
        name = "greedy" if beam == 1 else f"beam-{beam}"
        texts = captioner.caption_features(
            fc2.array[keep], None if grid is None else grid[keep], beam=beam)
        captions[name] = texts
        results[name] = score(references, dict(zip(ids, texts)))
        results[name]["decoding"] = {"beam": beam, "length_penalty":
                                     config.length_penalty if beam > 1 else None}

    metrics = {**{k: v for k, v in results["greedy"].items() if k != "decoding"},
               "split": split, "images": len(ids), "decoding": "greedy",
               "reference_distinct": distinct_share(r[0] for r in references.values()),
               "skipped_images": len(failed), "results": results}
    run_dir = Path(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table = pd.DataFrame({"image_id": ids,
                          "references": [" | ".join(references[i]) for i in ids],
                          **captions})
    table.to_csv(run_dir / f"captions_{split}.csv", index=False)
    if verbose:
        print(metrics_table(metrics).to_string(float_format=lambda x: f"{x:.3f}"))
    return metrics


def metrics_table(metrics: dict) -> pd.DataFrame:
    """A table with a row per decoding and a column per metric."""
    rows = {name: {k: r[k] for k in (*METRICS, "distinct") if k in r}
            for name, r in metrics["results"].items()}
    return pd.DataFrame(rows).T
