"""Evaluation that tells the truth: caption metrics, baselines, controls, diversity.

N-gram metrics flatter captioners that collapse to a few generic sentences, so
`evaluate` scores a run next to what it has to beat and says how varied its
captions are:

- **Metrics**: BLEU-1..4, METEOR, ROUGE-L and CIDEr from `pycocoevalcap`.
- **Baselines**, scored on the same images with the same metrics: the most
  frequent training caption for every image (`frequency`), and the caption of
  the most similar training image by cosine similarity of the cached fc2
  features (`nearest_neighbour`; Kougia et al. 2019 found it beats many
  published medical captioners).
- **Controls**: the captions the model writes for an all-black, an all-white and
  a noise image. A model that reports a lesion in a blank image is not looking.
- **Diversity**: share of distinct captions, vocabulary words used, share of
  captions copied verbatim from the training captions, mean caption length
  against the references'.

Two scorings (`scoring=`), and which one to quote:

- `"coco"` (default): the COCO caption evaluation. Captions are cleaned by
  `radcap.text.clean_caption` (lowercase, punctuation that is not part of a
  token dropped; "t2-weighted", "3.5" kept), and BLEU is the corpus BLEU of
  the whole split. Quote this to compare with image-captioning papers. The PTB
  tokenizer is not used (it needs Java and the captions are already clean).
- `"imageclef"`: as the ImageCLEFmedical caption task's evaluator does it.
  Each caption is lowercased, every run of digits becomes the word "number",
  and ASCII punctuation is deleted ("t2-weighted" -> "tnumberweighted"; an en
  dash stays, as in that evaluator); each metric is computed per caption and
  averaged over captions. BLEU and METEOR then differ from the corpus figures
  (per-caption METEOR runs well above corpus METEOR: 0.92 against 0.70 on the
  demo); ROUGE-L and CIDEr are per-caption means in both scorings. Quote this
  beside ImageCLEFmedical results. That task's headline
  metrics (BERTScore, ROUGE-1, BLEURT, CLIPScore) need large models and are
  not computed here.

METEOR needs Java; where it is missing METEOR is left out and `metrics.json`
says so.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import string
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.text import clean_caption

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
TABLE_COLUMNS = (*METRICS, "distinct", "copied")
SCORINGS = ("coco", "imageclef")
CONTROLS = ("black", "white", "noise")

_DIGITS = re.compile(r"\d+")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def java_available() -> bool:
    """Whether METEOR can run (it is a Java program)."""
    return shutil.which("java") is not None


def distinct_share(captions) -> float:
    """Share of distinct captions: 1.0 when all differ, 1/N when all are the same."""
    captions = list(captions)
    return len(set(captions)) / len(captions) if captions else 0.0


def imageclef_normalize(caption: str) -> str:
    """Normalise a caption as the ImageCLEFmedical caption evaluator does.

    Lowercase, every run of digits replaced by "number", then every ASCII
    punctuation character deleted (not replaced by a space), whitespace
    collapsed.

    >>> imageclef_normalize("Axial T2-weighted MRI (arrow): a 3.5 cm mass.")
    'axial tnumberweighted mri arrow a numbernumber cm mass'
    """
    text = _DIGITS.sub("number", str(caption).lower())
    return " ".join(text.translate(_NO_PUNCTUATION).split())


def _normalizer(scoring: str):
    if scoring not in SCORINGS:
        raise ValueError(
            f"scoring={scoring!r} is unknown: use 'coco' (COCO caption evaluation, "
            "for captioning papers) or 'imageclef' (ImageCLEFmedical style)."
        )
    return clean_caption if scoring == "coco" else imageclef_normalize


def score(
    references: dict,
    candidates: dict,
    meteor: bool | None = None,
    scoring: str = "coco",
) -> dict:
    """Score generated captions against references.

    Args:
        references: image_id → list of reference captions.
        candidates: image_id → generated caption (same keys).
        meteor: Compute METEOR; default: when Java is installed.
        scoring: `"coco"` (corpus BLEU over `clean_caption`ed text) or
            `"imageclef"` (ImageCLEFmedical normalisation, every metric
            averaged per caption); see the module docstring.

    Returns:
        `{"BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr", "distinct"}` plus `"METEOR"`
        (or `"METEOR_skipped"` with the reason), floats in [0, 1] (CIDEr up to 10).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    normalize = _normalizer(scoring)
    per_caption = scoring == "imageclef"
    missing = set(references) ^ set(candidates)
    if missing:
        raise ValueError(
            f"references and candidates differ in {len(missing)} image ids, "
            f"e.g. {sorted(missing)[:3]}: give one generated caption per image."
        )
    if not candidates:
        raise ValueError("Nothing to score: no captions given.")
    gts = {k: [normalize(r) for r in refs] for k, refs in references.items()}
    # An empty candidate breaks the scorers; a placeholder word scores as wrong.
    res = {k: [normalize(c) or "<empty>"] for k, c in candidates.items()}
    out = {}
    bleu, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    if per_caption:
        bleu = [np.mean(scores) for scores in per_image]
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if meteor is None:
        meteor = java_available()
    if meteor:
        try:
            out["METEOR"] = _meteor(gts, res, per_caption)
        except Exception as err:  # a JVM that fails to start, or dies mid-way
            out["METEOR_skipped"] = (
                f"METEOR failed ({type(err).__name__}: {err}); check that `java "
                "-version` runs and that 2 GB of memory are free for it."
            )
    else:
        out["METEOR_skipped"] = (
            "Java not found: METEOR is a Java program. Install a JRE."
        )
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["distinct"] = distinct_share(candidates.values())
    return out


def _meteor(gts: dict, res: dict, per_caption: bool) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        total, per_image = scorer.compute_score(gts, res)
    finally:
        if hasattr(scorer, "close"):
            scorer.close()
    return float(np.mean(per_image) if per_caption else total)


def diversity(captions, train_captions) -> dict:
    """How varied generated captions are, and how much they copy.

    Captions are compared after `clean_caption`.

    Args:
        captions: Generated captions, one per image.
        train_captions: Every caption of the training split.

    Returns:
        `distinct`: share of distinct captions; `words_used`: number of
        distinct words; `copied`: share of captions that equal a training
        caption word for word; `mean_length`: mean words per caption.
    """
    captions = [clean_caption(c or "") for c in captions]
    train = {clean_caption(c) for c in train_captions}
    n = max(len(captions), 1)
    return {
        "distinct": distinct_share(captions),
        "words_used": len({w for c in captions for w in c.split()}),
        "copied": sum(c in train for c in captions) / n,
        "mean_length": sum(len(c.split()) for c in captions) / n,
    }


def most_frequent_caption(captions) -> str:
    """The commonest caption (after `clean_caption`); ties go to the first seen."""
    counts = collections.Counter(clean_caption(c) for c in captions)
    if not counts:
        raise ValueError("No training captions: the frequency baseline needs some.")
    return counts.most_common(1)[0][0]


def nearest_neighbours(
    train_features, features, rows=None, center: bool = True, chunk: int = 4096
) -> np.ndarray:
    """Row of the most similar training image for every query row, by cosine.

    Similarities come from matrix products of unit-length rows, `chunk`
    training rows at a time (the training array may be memory-mapped), so
    memory stays at `len(features) * chunk` floats. Ties go to the row that
    comes first in `rows`.

    Args:
        train_features: `(M, dim)` training features, any float dtype.
        features: `(N, dim)` query features.
        rows: Training rows to search (e.g. those with a readable image);
            default all.
        center: Subtract the mean of the searched training rows first. A
            direction that every image shares (strong in the features of a
            random-weights backbone) would otherwise put all cosines near 1.
        chunk: Training rows per matrix product.

    Returns:
        `(N,)` int64 row numbers into `train_features`.
    """
    rows = np.arange(len(train_features)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise ValueError(
            "No training features: the nearest-neighbour baseline needs some."
        )
    mean = np.float32(0.0)
    if center:
        total = np.zeros(train_features.shape[-1], np.float64)
        for s in range(0, len(rows), chunk):
            total += np.asarray(train_features[rows[s : s + chunk]], np.float64).sum(0)
        mean = (total / len(rows)).astype(np.float32)

    def unit(x):
        x = np.asarray(x, np.float32) - mean
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    queries = unit(features)  # (N, dim)
    best = np.full(len(queries), -np.inf, np.float32)
    index = np.zeros(len(queries), np.int64)
    for s in range(0, len(rows), chunk):
        block = rows[s : s + chunk]
        sims = queries @ unit(train_features[block]).T  # (N, chunk)
        j = np.argmax(sims, axis=1)  # (N,)
        top = sims[np.arange(len(queries)), j]
        better = top > best
        best[better], index[better] = top[better], block[j[better]]
    return index


def baseline_captions(
    train, train_references: dict, features, center: bool = True
) -> dict[str, list[str]]:
    """Both baselines' captions for the query images.

    Args:
        train: The training split's cached fc2 `radcap.features.Features`;
            images whose file could not be read (zero rows) are left out.
        train_references: `{image_id: [caption, ...]}` of the training split.
        features: `(N, 4096)` fc2 features of the images to caption.
        center: See `nearest_neighbours`.

    Returns:
        `{"frequency": [caption] * N, "nearest_neighbour": [caption, ...]}`:
        the nearest training image's first caption.
    """
    failed = set(train.skipped["image_id"].astype(str))
    rows = [
        i for i, k in enumerate(train.ids) if k in train_references and k not in failed
    ]
    if not rows:
        raise ValueError(
            "None of the cached training images has a caption: the baselines need "
            "the training split (check the dataset's skip report)."
        )
    frequent = most_frequent_caption(
        c for refs in train_references.values() for c in refs
    )
    nearest = nearest_neighbours(train.array, features, rows, center)
    captions = [train_references[train.ids[j]][0] for j in nearest]
    return {"frequency": [frequent] * len(features), "nearest_neighbour": captions}


def control_images(folder: str | Path, size: int = 224, seed: int = 0) -> dict:
    """Write the control images as PNGs: all black, all white, uniform noise.

    Args:
        folder: Where to write `black.png`, `white.png`, `noise.png` (made if needed).
        size: Side in pixels.
        seed: Seed of the noise.

    Returns:
        `{name: path}` in `CONTROLS` order.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = {
        "black": np.zeros((size, size), np.uint8),
        "white": np.full((size, size), 255, np.uint8),
        "noise": np.random.default_rng(seed).integers(0, 256, (size, size), np.uint8),
    }
    paths = {}
    for name in CONTROLS:
        paths[name] = folder / f"{name}.png"
        Image.fromarray(pixels[name]).save(paths[name])  # 8-bit grayscale
    return paths


def caption_controls(captioner, folder: str | Path, beam: int = 1) -> dict:
    """Caption the control images with a trained captioner, through its backbone.

    Args:
        captioner: A `radcap.decode.Captioner`.
        folder: Where the control PNGs are written.
        beam: Beam width; 1 is greedy.

    Returns:
        `{"black": caption, "white": caption, "noise": caption}`.
    """
    paths = control_images(folder, captioner.config.image_size, captioner.config.seed)
    texts = captioner.caption(list(paths.values()), beam=beam)
    return dict(zip(paths, texts))


def decodings(config, beams=None) -> list[int]:
    """Beam widths to evaluate: greedy (1) and the config's beam."""
    beams = beams or sorted({1, config.beam})
    return [int(b) for b in beams]


def evaluate(
    run_dir: str | Path,
    root: str | Path = ".",
    split: str = "test",
    beams=None,
    dataset=None,
    verbose: bool = True,
    scoring: str = "coco",
    baselines: bool = True,
    controls: bool = True,
    samples: int = 5,
    meteor: bool | None = None,
) -> dict:
    """Caption a split with a trained run; write `metrics.json` and `report.md`.

    Each image is captioned once per decoding and scored against all its
    references; the baselines are scored on the same images. Also writes
    `captions_<split>.csv` (references, every decoding and baseline) and the
    control images under `controls/`, all in the run folder.

    Args:
        run_dir: A run folder made by `radcap.train.train`.
        root: Folder that the run config's data and feature paths start from.
        split: Split to evaluate.
        beams: Beam widths to compare; default greedy and the config's beam.
        dataset: A `radcap.datasets.Dataset`; default loaded from the config.
        verbose: Print the metrics table and the controls.
        scoring: `"coco"` or `"imageclef"` (see the module docstring).
        baselines: Score the frequency and nearest-neighbour baselines (reads
            the training split's cached features, extracting them if needed).
        controls: Caption the black, white and noise control images.
        samples: Sample captions shown in `report.md`.
        meteor: Compute METEOR; default: when Java is installed.

    Returns:
        The metrics dict: the greedy scores under the metric keys (and its
        `copied`, `words_used`, `mean_length`), `"split"`, `"images"`,
        `"decoding"`, `"scoring"`, `"results"` with every decoding's scores,
        `"baselines"` (`"frequency"`, `"nearest_neighbour"`, same keys),
        `"controls"` (`{name: caption}`), `"diversity"` (the references'
        figures) and `"beats_baselines"` (whether the greedy decoding, or the
        first one asked for, scores above both baselines on BLEU-4 and CIDEr).
        Where the controls cannot run (no backbone weights here),
        `"controls_skipped"` says why.
    """
    from radcap.decode import Captioner
    from radcap.features import extract

    _normalizer(scoring)
    run_dir = Path(run_dir)
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
    if not ids:
        raise ValueError(
            f"No {split} image to evaluate: the split is empty or none of its images "
            "could be read (see the feature cache's skipped.csv)."
        )
    train_references = dataset.references("train")
    train_captions = [c for refs in train_references.values() for c in refs]

    def scored(texts):
        return {
            **score(references, dict(zip(ids, texts)), meteor, scoring),
            **diversity(texts, train_captions),
        }

    results, captions = {}, {}
    for beam in decodings(config, beams):
        name = "greedy" if beam == 1 else f"beam-{beam}"
        texts = captioner.caption_features(
            fc2.array[keep], None if grid is None else grid[keep], beam=beam
        )
        captions[name] = texts
        results[name] = scored(texts)
        results[name]["decoding"] = {
            "beam": beam,
            "length_penalty": config.length_penalty if beam > 1 else None,
        }

    baseline_results = {}
    if baselines:
        train = extract(config, dataset.images("train"), "train", root)[config.layer]
        for name, texts in baseline_captions(
            train, train_references, fc2.array[keep]
        ).items():
            captions[name] = texts
            baseline_results[name] = scored(texts)
        baseline_results["frequency"]["caption"] = captions["frequency"][0]
    control_captions = {}
    skipped_controls = None
    if controls:
        from radcap.features import WeightsError

        try:
            control_captions = caption_controls(captioner, run_dir / "controls")
        except WeightsError as err:  # scoring cached features needs no backbone
            skipped_controls = str(err)

    all_refs = [clean_caption(r) for refs in references.values() for r in refs]
    main = "greedy" if "greedy" in results else next(iter(results))
    first = results[main]
    metrics = {
        **{k: v for k, v in first.items() if k != "decoding"},
        "split": split,
        "images": len(ids),
        "decoding": main,
        "scoring": scoring,
        "reference_distinct": distinct_share(r[0] for r in references.values()),
        "skipped_images": len(failed),
        "results": results,
        "baselines": baseline_results,
        "controls": control_captions,
        "diversity": {
            "reference_mean_length": float(np.mean([len(r.split()) for r in all_refs])),
            "reference_words_used": len({w for r in all_refs for w in r.split()}),
            "train_distinct_captions": len({clean_caption(c) for c in train_captions}),
        },
    }
    if skipped_controls:
        metrics["controls_skipped"] = skipped_controls
    if baseline_results:
        metrics["beats_baselines"] = {
            key: bool(first[key] > max(b[key] for b in baseline_results.values()))
            for key in ("BLEU-4", "CIDEr")
        }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table = pd.DataFrame(
        {
            "image_id": ids,
            "references": [" | ".join(references[i]) for i in ids],
            **captions,
        }
    )
    table.to_csv(run_dir / f"captions_{split}.csv", index=False)
    (run_dir / "report.md").write_text(
        report_markdown(metrics, table.head(samples), config.name)
    )
    if verbose:
        print(metrics_table(metrics).to_string(float_format=lambda x: f"{x:.3f}"))
        for name, text in control_captions.items():
            print(f"control {name}: {text}")
        print(f"Wrote {run_dir / 'metrics.json'} and {run_dir / 'report.md'}")
    return metrics


def metrics_table(metrics: dict) -> pd.DataFrame:
    """A table with a row per decoding and per baseline, a column per metric.

    Columns are BLEU-1..4, METEOR (when computed), ROUGE-L, CIDEr, `distinct`
    and `copied` (when present).
    """
    rows = dict(metrics["results"])
    rows.update(
        {f"baseline: {name}": r for name, r in metrics.get("baselines", {}).items()}
    )
    return pd.DataFrame(
        {name: {k: r[k] for k in TABLE_COLUMNS if k in r} for name, r in rows.items()}
    ).T


def compare_runs(run_dirs) -> pd.DataFrame:
    """One table for several evaluated runs: a row per run and decoding, baselines last.

    Args:
        run_dirs: Run folders that `evaluate` has written `metrics.json` into,
            evaluated on the same split (the baselines are taken from the first
            run that has them).

    Returns:
        A DataFrame indexed by `"<run> <decoding>"` and `"baseline: <name>"`,
        with the columns of `metrics_table`.
    """
    tables, baselines = [], None
    for run_dir in map(Path, run_dirs):
        path = run_dir / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"No {path}: evaluate that run first (radcap.evaluate.evaluate or "
                "`radcap evaluate --run ...`)."
            )
        metrics = json.loads(path.read_text())
        if baselines is None and metrics.get("baselines"):
            baselines = metrics["baselines"]
        table = metrics_table({"results": metrics["results"]})
        table.index = [f"{run_dir.name} {name}" for name in table.index]
        tables.append(table)
    if baselines:
        tables.append(metrics_table({"results": {}, "baselines": baselines}))
    return pd.concat(tables)


def markdown_table(table: pd.DataFrame) -> str:
    """A metrics table (`metrics_table`, `compare_runs`) as a Markdown table."""
    head = ["run", *table.columns]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for name, row in table.iterrows():
        cells = [f"{row[c]:.3f}" if pd.notna(row[c]) else "" for c in table.columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def report_markdown(metrics: dict, samples: pd.DataFrame, run_name: str = "") -> str:
    """`report.md`: the metrics table, the verdict, controls, diversity, samples.

    Args:
        metrics: As returned by `evaluate`.
        samples: Rows of `captions_<split>.csv` to show.
        run_name: Shown in the title and the table's row names.
    """
    table = metrics_table(metrics)
    table.index = [
        name if name.startswith("baseline") else f"{run_name} {name}".strip()
        for name in table.index
    ]
    lines = [
        f"# Evaluation of {run_name or 'the run'} on the {metrics['split']} split",
        "",
        f"{metrics['images']} images, scoring `{metrics['scoring']}`"
        + (
            f", {metrics['skipped_images']} unreadable images left out."
            if metrics["skipped_images"]
            else "."
        ),
        "`distinct`: share of distinct captions; `copied`: share copied verbatim "
        "from the training captions.",
        "",
        markdown_table(table),
    ]
    if "METEOR_skipped" in metrics:
        lines += ["", f"METEOR left out: {metrics['METEOR_skipped']}"]
    if "beats_baselines" in metrics:
        verdict = [
            f"{key} {'beats' if ok else 'does NOT beat'} both baselines"
            for key, ok in metrics["beats_baselines"].items()
        ]
        lines += ["", f"{metrics['decoding']} decoding: {'; '.join(verdict)}."]
    if metrics.get("controls"):
        lines += [
            "",
            "## Controls",
            "",
            "Captions of images that show nothing. A finding here means the model "
            "writes it without looking.",
            "",
        ]
        lines += [f"- {name}: {text!r}" for name, text in metrics["controls"].items()]
    if metrics.get("controls_skipped"):
        lines += ["", f"Controls not run: {metrics['controls_skipped']}"]
    div = metrics["diversity"]
    lines += [
        "",
        "## Diversity",
        "",
        f"- words used: {metrics['words_used']} (references: "
        f"{div['reference_words_used']})",
        f"- mean length: {metrics['mean_length']:.2f} words (references: "
        f"{div['reference_mean_length']:.2f})",
        f"- distinct captions: {metrics['distinct']:.3f} (references: "
        f"{metrics['reference_distinct']:.3f})",
        f"- copied from training captions: {metrics['copied']:.3f}",
    ]
    if len(samples):
        lines += ["", "## Samples", ""]
        for row in samples.to_dict("records"):
            lines.append(f"**{row['image_id']}**")
            lines.append("")
            lines += [
                f"- {key}: {value}" for key, value in row.items() if key != "image_id"
            ]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
