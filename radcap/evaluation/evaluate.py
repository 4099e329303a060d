"""`evaluate`: a trained run scored on a split, beside its baselines and controls.

`evaluate` reads as its steps: load the run and the split, score every
decoding, score the baselines, caption the controls, assemble the metrics,
write `metrics.json`, `captions_<split>.csv`, `report.md` and the model card
(`radcap.models.card`), each atomically, the run folder held against a second
writer, last `evaluation.json`: the model file, settings and digests they
belong to. The outputs count as one unit: `reuse` takes them only when that
last file says they are complete and current, so an evaluation killed midway
never passes an earlier model's report, captions or model card off as this one's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radcap import __version__
from radcap.core.clock import timed
from radcap.core.files import (
    atomic_path,
    file_digest,
    folder_lock,
    read_json,
    write_json,
    write_text,
)
from radcap.core.locks import check_writable
from radcap.core.text import clean_caption
from radcap.data import Dataset
from radcap.data import load as load_dataset
from radcap.data.demo import read_cases
from radcap.decoding.captioner import Captioner
from radcap.evaluation.attention import side_shares
from radcap.evaluation.baselines import (
    BASELINES,
    baseline_captions,
    caption_controls,
    retrieval_run,
)
from radcap.evaluation.clinical import (
    clinical_scores,
    demo_agreement,
    describe,
    exact_scores,
)
from radcap.evaluation.metrics import (
    distinct_share,
    diversity,
    java_available,
    normalizer,
    score,
    start_meteor,
)
from radcap.evaluation.notes import familiarity_note
from radcap.evaluation.report import metrics_table, report_markdown
from radcap.features.backbone import WeightsError, shared_extractor
from radcap.features.splits import Split, load_split
from radcap.models import runs
from radcap.models.card import model_card

# Evaluation writes its files into the run folder; a Kaggle input is read-only.
_READ_ONLY_REMEDY = (
    "Evaluation writes its results into the run folder: copy the run into a "
    "writable working folder with radcap.training.resume.copy_run(run_dir, root) "
    "(notebook 03's RESUME_FROM), then evaluate the copy."
)


def decodings(config, beams=None) -> list[int]:
    """Beam widths to evaluate: greedy (1) and the config's beam."""
    beams = beams or sorted({1, config.beam})
    return [int(b) for b in beams]


def decoding_name(beam: int) -> str:
    """`"greedy"` for beam 1, else `"beam-<k>"`: the rows of the tables."""
    return "greedy" if beam == 1 else f"beam-{beam}"


@timed("evaluate")
def evaluate(
    run_dir: str | Path,
    root: str | Path = ".",
    split: str = "test",
    beams=None,
    dataset: Dataset | None = None,
    verbose: bool = True,
    scoring: str = "coco",
    baselines: bool = True,
    controls: bool = True,
    samples: int = 5,
    meteor: bool | None = None,
    reuse: bool = False,
) -> dict:
    """Caption a split with a trained run; write `metrics.json` and `report.md`.

    Each image is captioned once per decoding and scored against all its
    references, the baselines on the same images. Also writes, in the run
    folder, `captions_<split>.csv` and the control images (`controls/`).

    Args:
        run_dir: A run folder made by `radcap.training.train.train`.
        root: Folder that the run config's data and feature paths start from.
        split: Split to evaluate.
        beams: Beam widths to compare; default greedy and the config's beam.
        dataset: The loaded manifest; default loaded from the run's config.
        verbose: Print the metrics table and the controls.
        scoring: `"coco"` or `"imageclef"` (see `radcap.evaluation.metrics`).
        baselines: Score the frequency and nearest-neighbour baselines (reads
            the training split's cached features, extracting them if needed).
        controls: Caption the black, white and noise control images.
        samples: Sample captions shown in `report.md`.
        meteor: Compute METEOR; default: when Java is installed.
        reuse: Return the run's `metrics.json` as it is when the last
            complete evaluation (`evaluation.json`) was made for the same
            model file, familiarity reference, radcap version and settings
            (split, beams, scoring, baselines, controls, samples, METEOR) and
            its outputs are unchanged since; else evaluate.

    Returns:
        The metrics dict: the greedy scores under the metric keys (and its
        `copied`, `words_used`, `mean_length`), `"split"`, `"images"`,
        `"decoding"`, `"scoring"`, `"results"` with every decoding's scores,
        `"baselines"` (`"frequency"`, `"nearest_neighbour"`, `"retrieval"`
        from the run `"retrieval_baseline"` names, or says why not), `"controls"`
        (`{name: caption}`), `"diversity"` (the references' figures),
        `"beats_baselines"` (whether the first decoding beats the first two
        baselines on BLEU-4 and CIDEr), `"nltk"`, `"clinical"`, `"familiarity"`
        and `"evaluated"` (the stamp `reuse` checks); `"controls_skipped"`.
    """
    normalizer(scoring)  # an unknown scoring fails before any work
    run_dir = runs.check(run_dir)
    settings = dict(split=split, beams=beams, scoring=scoring, baselines=baselines)
    settings.update(controls=controls, samples=samples, meteor=meteor)
    stamp = _stamp(run_dir, **settings)
    if reuse and (saved := _saved(run_dir, stamp, verbose)):
        return saved
    check_writable(run_dir, "run folder", _READ_ONLY_REMEDY)
    captioner = _load(run_dir, beams)  # a beam it cannot run fails here
    if meteor is not False:
        start_meteor()  # Java boots while the captions are decoded
    config = captioner.config
    dataset = dataset if dataset is not None else load_dataset(config, root)
    test, train, cases = _splits(config, dataset, split, root)
    with folder_lock(run_dir, "run folder"):
        captions, results, baseline_results = _score_all(
            captioner, test, train, beams, baselines, meteor, scoring, cases
        )
        control_captions, skipped_controls = _controls(captioner, run_dir, controls)
        metrics = _assemble(test, train, scoring, results, baseline_results)
        metrics["retrieval_baseline"] = baselines and retrieval_run(run_dir)[1]
        _add_controls(metrics, captioner, test, control_captions, skipped_controls)
        if cases is not None:
            _add_demo_truth(metrics, captioner, test, cases)
        metrics["evaluated"] = stamp
        card = model_card(run_dir, captioner.model, dataset, metrics)
        _write(run_dir, metrics, test, captions, samples, config.name, card)
    if verbose:
        _say(metrics, captioner, control_captions, run_dir)
    return metrics


def _load(run_dir: Path, beams) -> Captioner:
    """The run's captioner, its beams checked before any work (not after greedy)."""
    captioner = Captioner.load(run_dir)
    for beam in decodings(captioner.config, beams):
        captioner.check_beam(beam)
    return captioner


def _say(metrics: dict, captioner, control_captions: dict, run_dir: Path) -> None:
    print(metrics_table(metrics).to_string(float_format=lambda x: f"{x:.3f}"))
    for name, text in control_captions.items():
        note = familiarity_note(text.familiarity, captioner.familiarity)
        print(f"control {name}: {text}" + (f"\n  {note}" if note else ""))
    print(f"Wrote {run_dir / runs.METRICS} and {run_dir / runs.REPORT}")


def _splits(config, dataset, split: str, root):
    """`(split to evaluate, training split, cases)`, or why there is nothing.

    `cases` is the demo's drawn truth of the evaluated images
    (`radcap.data.demo.read_cases`), None for other datasets.
    """
    test = load_split(config, dataset, split, root)
    if not test.image_ids:
        raise ValueError(
            f"No {split} image to evaluate: the split is empty or none of its images "
            "could be read (see the feature cache's skipped.csv)."
        )
    cases = None
    if config.source == "demo":
        cases = read_cases(config.dataset_dir(root)).loc[test.image_ids]
    return test, load_split(config, dataset, "train", root), cases


def _stamp(run_dir: Path, beams, meteor, **settings) -> dict:
    """What an evaluation depends on: the run's files, radcap and the settings."""
    config = runs.load_config(run_dir)
    familiarity = run_dir / runs.FAMILIARITY
    return {
        "model": file_digest(run_dir / runs.MODEL),
        "familiarity": file_digest(familiarity) if familiarity.is_file() else None,
        "radcap": __version__,
        "beams": decodings(config, beams),
        "meteor": java_available() if meteor is None else bool(meteor),
        **settings,
    }


def _saved(run_dir: Path, stamp: dict, verbose: bool) -> dict | None:
    """The saved metrics when the outputs are a complete evaluation for `stamp`.

    Complete: the marker `runs.EVALUATION`, written after every output, names
    `stamp` (the model file's digest among it) and each output's digest as
    it is now. Anything else (no marker, a marker of another model, an
    output from a later evaluation that was killed midway, a damaged file)
    means: evaluate again.
    """
    names = sorted(runs.evaluation_outputs(stamp["split"]))
    try:
        done = read_json(run_dir / runs.EVALUATION, "evaluation marker")
        if done["evaluated"] != stamp or sorted(done["outputs"]) != names:
            return None
        if any(file_digest(run_dir / n) != done["outputs"][n] for n in names):
            return None
        saved = read_json(run_dir / runs.METRICS, "metrics file")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: evaluate again
    if not isinstance(saved, dict) or saved.get("evaluated") != stamp:
        return None
    if verbose:
        print(
            f"{run_dir / runs.METRICS} is up to date (same model and settings): "
            "reusing it."
        )
    return saved


def _score_all(captioner, test, train, beams, baselines, meteor, scoring, cases):
    """`(captions, results, baseline_results)`: every decoding and baseline, scored.

    With the demo's `cases`, each also gets `exact` (the share of captions
    exactly as drawn) and, on the hard demo, `exact_held_out` (the same on
    the pairings that training never saw).
    """
    config = captioner.config
    features, grid = test.image_features()
    references = test.references()

    def scored(texts):
        candidates = dict(zip(test.image_ids, texts))
        out = {
            **score(references, candidates, meteor, scoring),
            **diversity(texts, train.captions["caption"]),
            "clinical": clinical_scores(references, candidates),
        }
        if cases is not None:
            out.update(exact_scores(cases, texts))
        return out

    captions, results, baseline_results = {}, {}, {}
    for beam in decodings(config, beams):
        name = decoding_name(beam)
        captions[name] = captioner.caption_features(features, grid, beam=beam)
        results[name] = scored(captions[name])
        results[name]["decoding"] = {
            "beam": beam,
            "length_penalty": config.length_penalty if beam > 1 else None,
        }
    if baselines:
        found = baseline_captions(train, features, captioner.run_dir, grid)
        for name, texts in found.items():
            captions[name] = texts
            baseline_results[name] = scored(texts)
        baseline_results["frequency"]["caption"] = captions["frequency"][0]
    return captions, results, baseline_results


def _add_demo_truth(metrics: dict, captioner, test: Split, cases) -> None:
    """What only the demo allows: the clinical rules against the drawn truth,
    and where an attending model looks when it writes a side."""
    metrics["clinical"]["extractor_vs_demo_truth"] = demo_agreement(cases)
    if captioner.uses_grid:
        metrics["side_attention"] = side_shares(captioner, test, cases)


def _add_controls(metrics, captioner, test, control_captions, skipped) -> None:
    """The controls' captions, what they claim, and every familiarity figure."""
    metrics["controls"] = {k: str(v) for k, v in control_captions.items()}
    if skipped:
        metrics["controls_skipped"] = skipped
    metrics["clinical"]["controls"] = {
        name: describe(text) for name, text in control_captions.items()
    }
    metrics["familiarity"] = _familiarity(captioner, test, control_captions)


def _familiarity(captioner, test: Split, control_captions: dict) -> dict:
    """How many test images the run finds unfamiliar, and the controls' flags."""
    reference = captioner.familiarity
    if reference is None:
        return {"unknown": captioner.familiarity_hint}
    scores = reference.scores(test.image_block_means())
    flagged = ~reference.familiar(scores)
    return {
        "threshold": reference.threshold,
        "images": len(scores),
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()),
        "max_score": float(scores.max()),
        "controls": {
            name: {"score": text.familiarity, "familiar": text.familiar}
            for name, text in control_captions.items()
        },
    }


@timed("controls")
def _controls(captioner, run_dir: Path, wanted: bool) -> tuple[dict, str | None]:
    """The control images' captions, or why they could not be made."""
    if not wanted:
        return {}, None
    try:
        if not captioner.has_extractor:  # the backbone that extracted the split
            captioner.extractor = shared_extractor(captioner.config, more=True)
        return caption_controls(captioner, run_dir / runs.CONTROLS), None
    except WeightsError as err:  # scoring cached features needs no backbone
        return {}, str(err)


def _assemble(
    test: Split, train: Split, scoring: str, results: dict, baseline_results: dict
) -> dict:
    """The metrics dict (see `evaluate`), without the controls."""
    references = test.references()
    all_refs = [clean_caption(r) for refs in references.values() for r in refs]
    train_captions = train.captions["caption"]
    main = "greedy" if "greedy" in results else next(iter(results))
    first = results[main]
    metrics = {
        **{k: v for k, v in first.items() if k != "decoding"},
        "split": test.name,
        "images": len(test.image_ids),
        "decoding": main,
        "scoring": scoring,
        "reference_distinct": distinct_share(r[0] for r in references.values()),
        "skipped_images": len(test.skipped),
        "results": results,
        "baselines": baseline_results,
        "diversity": {
            "reference_mean_length": float(np.mean([len(r.split()) for r in all_refs])),
            "reference_words_used": len({w for r in all_refs for w in r.split()}),
            "train_distinct_captions": len({clean_caption(c) for c in train_captions}),
        },
    }
    if baseline_results:
        metrics["beats_baselines"] = {
            key: bool(first[key] > max(baseline_results[b][key] for b in BASELINES))
            for key in ("BLEU-4", "CIDEr")
        }
    return metrics


def _write(run_dir: Path, metrics, test: Split, captions, samples, name, card):
    """`metrics.json`, `captions_<split>.csv`, `report.md` and the model card,
    each atomically, then the marker that commits them (see `_saved`)."""
    references = test.references()
    table = pd.DataFrame(
        {
            "image_id": test.image_ids,
            "references": [" | ".join(references[i]) for i in test.image_ids],
            **captions,
        }
    )
    write_json(run_dir / runs.METRICS, metrics)
    with atomic_path(run_dir / runs.captions_file(test.name)) as tmp:
        table.to_csv(tmp, index=False)
    write_text(
        run_dir / runs.REPORT, report_markdown(metrics, table.head(samples), name)
    )
    write_text(run_dir / runs.MODEL_CARD, card)
    outputs = {
        file: file_digest(run_dir / file) for file in runs.evaluation_outputs(test.name)
    }
    write_json(
        run_dir / runs.EVALUATION,
        {"evaluated": metrics["evaluated"], "outputs": outputs},
    )
