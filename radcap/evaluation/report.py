"""Tables and reports of evaluated runs: `report.md`, `comparison.md`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from radcap.core.files import read_json, write_text
from radcap.evaluation.metrics import METRICS
from radcap.models import runs

# `exact` and `exact_held_out`: demo runs only (see `clinical.exact_scores`).
TABLE_COLUMNS = (*METRICS, "distinct", "copied", "exact", "exact_held_out")


def metrics_table(metrics: dict) -> pd.DataFrame:
    """A table with a row per decoding and per baseline, a column per metric.

    Columns are BLEU-1..4, METEOR (when computed), ROUGE-L, CIDEr, `distinct`
    and `copied` (when present).
    """
    return pd.DataFrame(
        {
            name: {k: r[k] for k in TABLE_COLUMNS if k in r}
            for name, r in _rows(metrics).items()
        }
    ).T


CLINICAL_COLUMNS = {
    "side agrees": ("laterality", "agreement"),
    "side contradicts": ("laterality", "contradiction"),
    "modality agrees": ("modality", "agreement"),
    "region agrees": ("region", "agreement"),
    "false finding": ("finding", "false_finding"),
    "missed finding": ("finding", "missed_finding"),
}


def _rows(metrics: dict) -> dict:
    rows = dict(metrics["results"])
    rows.update(
        {f"baseline: {name}": r for name, r in metrics.get("baselines", {}).items()}
    )
    return rows


def clinical_table(metrics: dict) -> pd.DataFrame:
    """The clinical consistency figures (`radcap.evaluation.clinical`): a row per
    decoding and baseline."""
    return pd.DataFrame(
        {
            name: {
                column: r["clinical"][group][key]
                for column, (group, key) in CLINICAL_COLUMNS.items()
            }
            for name, r in _rows(metrics).items()
            if "clinical" in r
        },
        dtype=float,
    ).T


def nltk_table(metrics: dict) -> pd.DataFrame:
    """NLTK's corpus BLEU-1..4: a row per decoding and baseline."""
    return pd.DataFrame(
        {name: r["nltk"] for name, r in _rows(metrics).items() if "nltk" in r}
    ).T


def compare_runs(run_dirs) -> pd.DataFrame:
    """One table for several evaluated runs: a row per run and decoding, baselines last.

    Args:
        run_dirs: Run folders that `evaluate` has written `metrics.json` into,
            evaluated on the same split (the baselines are taken from the first
            run that has them).

    Returns:
        A DataFrame indexed by `"<run> <decoding>"` and `"baseline: <name>"`,
        with the columns of `metrics_table`, and `side share` for attending
        runs on the demo: the mean share of each side word's attention on
        the correct half (`radcap.evaluation.attention.side_shares`, greedy).
    """
    tables, baselines = [], None
    for run_dir in map(Path, run_dirs):
        path = run_dir / runs.METRICS
        if not path.is_file():
            raise FileNotFoundError(
                f"No {path}: evaluate that run first (radcap.evaluation.evaluate or "
                "`radcap evaluate --run ...`)."
            )
        metrics = read_json(path, "metrics file")
        if baselines is None and metrics.get("baselines"):
            baselines = metrics["baselines"]
        table = metrics_table({"results": metrics["results"]})
        if "side_attention" in metrics:  # measured on greedy captions
            table["side share"] = metrics["side_attention"]["mean_share"]
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


def _named(table: pd.DataFrame, run_name: str) -> pd.DataFrame:
    table.index = [
        name if name.startswith("baseline") else f"{run_name} {name}".strip()
        for name in table.index
    ]
    return table


def _demo_lines(metrics: dict) -> list[str]:
    """What the demo's drawn truth adds: exact captions, where the model looks."""
    lines = []
    if "exact" in metrics["results"].get("greedy", {}):
        lines += [
            "",
            "`exact`: share of captions exactly as drawn; `exact_held_out`: the "
            "same on the pairings that training never saw (hard demo).",
        ]
    if "side_attention" in metrics:
        side = metrics["side_attention"]
        lines += [
            "",
            f"Where the model looks: over {side['words']} side words (greedy), "
            f"{side['mean_share']:.3f} of the attention is on the half of the image "
            "that holds the lesion the word is about (0.5: blind to the side); "
            f"{side['share_above_half']:.0%} of the words lean towards it.",
        ]
    return lines


def report_markdown(metrics: dict, samples: pd.DataFrame, run_name: str = "") -> str:
    """`report.md`: metrics, verdict, trust (familiarity, clinical), controls,
    diversity, samples.

    Args:
        metrics: As returned by `evaluate`.
        samples: Rows of `captions_<split>.csv` to show.
        run_name: Shown in the title and the table's row names.
    """
    table = _named(metrics_table(metrics), run_name)
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
    lines += _demo_lines(metrics)
    if "METEOR_skipped" in metrics:
        lines += ["", f"METEOR left out: {metrics['METEOR_skipped']}"]
    if "beats_baselines" in metrics:
        verdict = [
            f"{key} {'beats' if ok else 'does NOT beat'} both baselines"
            for key, ok in metrics["beats_baselines"].items()
        ]
        lines += ["", f"{metrics['decoding']} decoding: {'; '.join(verdict)}."]
    if "nltk" in metrics:
        lines += [
            "",
            "NLTK `corpus_bleu` on the same words (the figure the classic Keras "
            "captioning tutorials quote; docs/quality.md says why it differs):",
            "",
            markdown_table(_named(nltk_table(metrics), run_name)),
        ]
    lines += _familiarity_lines(metrics.get("familiarity"))
    lines += _clinical_lines(metrics, run_name)
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


def _familiarity_lines(familiarity: dict | None) -> list[str]:
    if not familiarity:
        return []
    lines = ["", "## Familiarity", ""]
    if "unknown" in familiarity:
        return lines + [f"Unknown: {familiarity['unknown']}"]
    lines.append(
        f"{familiarity['flagged']} of {familiarity['images']} images "
        f"({familiarity['flagged_share']:.1%}) are unlike the training images "
        f"(score above {familiarity['threshold']:.3f}, the validation images' "
        "99th percentile); their captions should not be believed."
    )
    for name, flag in familiarity.get("controls", {}).items():
        verdict = "familiar (!)" if flag["familiar"] else "flagged unfamiliar"
        lines.append(f"- control {name}: score {flag['score']:.2f}, {verdict}")
    return lines


def _clinical_lines(metrics: dict, run_name: str) -> list[str]:
    clinical = metrics.get("clinical")
    if not clinical:
        return []
    lines = [
        "",
        "## Clinical consistency",
        "",
        "Rule-based (`radcap.evaluation.clinical`), against the first reference: "
        f"{clinical['laterality']['images']} images name a side, "
        f"{clinical['modality']['images']} a modality, {clinical['region']['images']} "
        f"a region; {clinical['finding']['negative_references']} references report "
        "no finding. `false finding`: a finding claimed where the reference has "
        "none; `missed finding`: none claimed where it has one.",
        "",
        markdown_table(_named(clinical_table(metrics), run_name)),
    ]
    truth = clinical.get("extractor_vs_demo_truth")
    if truth:
        lines += [
            "",
            f"The rules read the demo generator's truth from {truth['all']:.1%} of "
            f"the {truth['captions']} reference captions.",
        ]
    for name, claims in clinical.get("controls", {}).items():
        lines.append(f"- the {name} control's caption claims {_claims(claims)}")
    return lines


def _claims(claims: dict) -> str:
    """What a caption asserts, in words (from `radcap.evaluation.clinical.describe`)."""
    finding = {True: "a finding", False: "no finding", None: "nothing about findings"}
    words = [finding[claims["finding"]]]
    if claims["laterality"]:
        words.append(f"on the {claims['laterality']} side")
    for key in ("modality", "region"):
        if claims[key]:
            words.append(f"{key} {', '.join(claims[key])}")
    return "; ".join(words)


def write_comparison(run_dirs, split: str) -> Path:
    """Write `comparison.md` beside the first run: one table for several runs.

    Returns:
        The path written.
    """
    run_dirs = [Path(d) for d in run_dirs]
    table = compare_runs(run_dirs)
    path = run_dirs[0].parent / runs.COMPARISON
    names = ", ".join(d.name for d in run_dirs)
    write_text(path, f"# {names} on the {split} split\n\n{markdown_table(table)}\n")
    return path
