"""The model card: written by training, rewritten with the scores by evaluation;
the disclaimer on the caption command's output."""

import json
import shutil

import pytest
from tiny_run import patch_tiny_backbone, shared_tiny_run

from radcap import cli
from radcap.core import files
from radcap.core.config import preset
from radcap.data.layouts import load_demo
from radcap.evaluation import METRICS, evaluate
from radcap.models import runs
from radcap.models.card import (
    DISCLAIMER,
    NOT_EVALUATED,
    ROCO_CITATION,
    SCORES,
    card_text,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The session's tiny run (tests/tiny_run.py): only read it."""
    return shared_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def copied(shared, tmp_path_factory):
    """A copy of the tiny run's root whose run has no card (trained before it).

    Images the run has not cached go through the tiny stand-in for VGG16.
    """
    root = tmp_path_factory.mktemp("card") / "root"
    ignore = shutil.ignore_patterns(files.LOCK_FILE, "*.lock")
    shutil.copytree(shared[0].parents[1], root, ignore=ignore)
    run_dir = root / shared[0].relative_to(shared[0].parents[1])
    (run_dir / runs.MODEL_CARD).unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch_tiny_backbone(patch)
        yield root, run_dir, load_demo(root / "data/demo")


def table_rows(card: str) -> dict[str, dict[str, str]]:
    """The card's score table: `{row name: {column: cell}}`."""
    lines = [line for line in card.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


def test_the_card_lists_the_scores_of_the_evaluation():
    assert SCORES == METRICS


def test_training_writes_a_card_that_is_not_evaluated_yet(shared):
    run_dir, dataset = shared
    card = (run_dir / runs.MODEL_CARD).read_text()
    parameters = runs.load_model(run_dir).count_params()
    vocab_size = runs.load_vocab(run_dir).size
    images = dataset.counts()["images"]
    assert card.startswith("# Model card: radcap run `tiny`\n\n**" + DISCLAIMER)
    assert "## Evaluation\n\n" + NOT_EVALUATED.format(run="tiny") + "\n\n" in card
    assert f"- Parameters: {parameters:,} (the decoder" in card
    assert f"- Vocabulary size: {vocab_size} tokens" in card
    assert "- Decoder: merge decoder (LSTM) with Bahdanau attention" in card
    assert "- Image backbone: VGG16, frozen, random weights" in card
    assert "radcap's synthetic demo dataset" in card and "No patient data" in card
    assert (
        f"Images: {images['train']} train, {images['validation']} validation, "
        f"{images['test']} test." in card
    )
    assert "- Training: 2 epochs, best validation loss " in card
    for section in ("Model details", "Uses", "Training data", "Limitations"):
        assert f"\n## {section}\n" in card
    assert "\n### Out-of-scope use\n\nAny clinical use (diagnosis" in card


def test_evaluation_writes_its_scores_into_the_card_of_a_run_without_one(copied):
    root, run_dir, dataset = copied
    args = dict(dataset=dataset, beams=[1], meteor=False, controls=False)
    args["verbose"] = False  # one decoding: each search costs seconds to compile
    evaluate(run_dir, root, **args)
    card = (run_dir / runs.MODEL_CARD).read_text()
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    rows = table_rows(card)
    expected = {
        name: {key: f"{row[key]:.4f}" for key in SCORES if key != "METEOR"}
        for name, row in metrics["results"].items()
    }
    for name, row in metrics["baselines"].items():
        expected[f"baseline: {name}"] = {
            key: f"{row[key]:.4f}" for key in SCORES if key != "METEOR"
        }
    assert list(expected) == [
        "greedy",
        "baseline: frequency",
        "baseline: nearest_neighbour",
    ]
    assert rows == expected
    threshold = metrics["familiarity"]["threshold"]
    assert f"Familiarity threshold: {threshold:.4f}; " in card
    assert NOT_EVALUATED.format(run="tiny") not in card and DISCLAIMER in card

    # The card is one of the outputs evaluation.json commits: reused as it
    # is, and a missing one (an evaluation killed before it) is evaluated again.
    marker = (run_dir / runs.EVALUATION).stat().st_mtime_ns
    evaluate(run_dir, root, reuse=True, **args)
    assert (run_dir / runs.EVALUATION).stat().st_mtime_ns == marker
    (run_dir / runs.MODEL_CARD).unlink()
    evaluate(run_dir, root, reuse=True, **args)
    assert (run_dir / runs.EVALUATION).stat().st_mtime_ns != marker
    assert (run_dir / runs.MODEL_CARD).read_text() == card


def test_the_caption_command_ends_with_the_disclaimer_but_not_in_json(copied, capsys):
    root, run_dir, dataset = copied
    paths = [str(p) for p in dataset.images("test")["path"][:2]]
    assert cli.main(["caption", "--run", str(run_dir), *paths]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if not line.startswith("  ")]
    assert [line.split("\t")[0] for line in lines] == paths
    assert err.endswith("\n" + DISCLAIMER + "\n") and err.count(DISCLAIMER) == 1
    assert cli.main(["caption", "--json", "--run", str(run_dir), *paths]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["path"] for line in out.splitlines()] == paths
    assert DISCLAIMER not in err


def test_a_roco_card_names_its_source_licences_and_citation():
    facts = {"vocab_size": 5000, "parameters": 1234567, "history": None}
    facts["images"] = {"train": 65450, "validation": 8179, "test": 8176}
    card = card_text(preset("roco"), facts)
    assert "ROCO, Radiology Objects in COntext (Pelka et al., 2018)" in card
    assert "PubMed Central Open Access subset" in card
    assert "`licences.txt` lists ROCO_ID, PMC_ID and the CC licence" in card
    assert "## Citation\n\nCite the data the model was trained on:\n\n> " in card
    assert card.endswith(f"> {ROCO_CITATION}\n")
    assert "Images: 65,450 train, 8,179 validation, 8,176 test." in card
    assert "- Image backbone: VGG16, frozen, ImageNet weights" in card
    assert "- Parameters: 1,234,567 " in card and "- Training:" not in card


def test_the_card_has_a_row_per_decoding_and_baseline_and_a_column_per_score():
    def scores(base):
        return {key: base + i / 100 for i, key in enumerate(SCORES)}

    metrics = {"split": "test", "images": 7, "scoring": "coco"}
    metrics["results"] = {"greedy": scores(0.1), "beam-3": scores(0.2)}
    metrics["baselines"] = {"frequency": scores(0.3), "nearest_neighbour": {}}
    metrics["familiarity"] = {"threshold": 2.5, "images": 7, "flagged": 1}
    facts = {"vocab_size": 9, "parameters": 10, "history": None, "images": {}}
    card = card_text(preset("demo"), facts, metrics)
    head = "| decoding | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr |"
    assert head in card
    assert "| greedy | 0.1000 | 0.1100 | 0.1200 | 0.1300 | 0.1400 | 0.1500 | " in card
    assert "| beam-3 | 0.2000 | 0.2100 | 0.2200 | 0.2300 | 0.2400 | 0.2500 | " in card
    assert "| baseline: frequency | 0.3000 | 0.3100 | " in card
    assert "| baseline: nearest_neighbour |  |  |  |  |  |  |  |" in card
    assert "Split `test`, 7 images, coco scoring." in card
    assert "Familiarity threshold: 2.5000; 1 of 7 evaluated images are" in card
