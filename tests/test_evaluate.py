"""Evaluation: hand-computed diversity and ImageCLEF figures, baselines, controls."""

import collections
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_run import patch_tiny_backbone

from radcap.core.config import preset
from radcap.data import load
from radcap.decoding.captioner import Captioner
from radcap.evaluation import compare_runs, evaluate, metrics_table
from radcap.evaluation.baselines import (
    CONTROLS,
    baseline_captions,
    caption_controls,
    most_frequent_caption,
    most_similar,
    nearest_neighbours,
)
from radcap.evaluation.metrics import (
    METRICS,
    diversity,
    imageclef_normalize,
    java_available,
    score,
)
from radcap.features.backbone import Extractor
from radcap.features.cache import extract
from radcap.features.splits import Split
from radcap.training.train import train


def test_diversity_by_hand():
    generated = ["a b", "A b.", "c d e", "x y"]
    train_captions = ["a b", "x", "c d e f"]
    # distinct after cleaning: {"a b", "c d e", "x y"} -> 3 of 4
    # words: a b c d e x y -> 7; copied: "a b" twice -> 2 of 4
    # lengths 2 + 2 + 3 + 2 = 9 over 4
    assert diversity(generated, train_captions) == {
        "distinct": 0.75,
        "words_used": 7,
        "copied": 0.5,
        "mean_length": 2.25,
    }


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            "Axial T2-weighted MRI (arrow): a 3.5 cm mass.",
            "axial tnumberweighted mri arrow a numbernumber cm mass",
        ),
        ("CT scan, 12/2019:  L1 fracture!", "ct scan numbernumber lnumber fracture"),
        ("No   abnormality\nseen", "no abnormality seen"),
        # Only ASCII punctuation goes, as in the task's evaluator: the en dash stays.
        ("C5–C6 disc", "cnumber–cnumber disc"),
        ("100% [sic]", "number sic"),
    ],
)
def test_imageclef_normalisation_by_hand(raw, expected):
    assert imageclef_normalize(raw) == expected


def test_imageclef_scoring_averages_per_caption():
    references = {"a": ["a b c"], "b": ["p q"]}
    candidates = {"a": "a b c", "b": "x y"}
    # COCO: corpus BLEU-1 = 3 matched words of 5 = 0.6 (same lengths, no penalty).
    coco = score(references, candidates, meteor=False)
    assert coco["BLEU-1"] == pytest.approx(0.6, abs=1e-6)
    # ImageCLEF: per caption 1.0 and 0.0, averaged: 0.5.
    clef = score(references, candidates, meteor=False, scoring="imageclef")
    assert clef["BLEU-1"] == pytest.approx(0.5, abs=1e-6)
    assert clef["distinct"] == 1.0

    # Numbers are one word under ImageCLEF, distinct words under COCO.
    references, candidates = {"a": ["a 3.5 cm mass"]}, {"a": "a 4.2 cm mass"}
    assert score(references, candidates, False)["BLEU-1"] == pytest.approx(0.75)
    clef = score(references, candidates, False, "imageclef")
    assert clef["BLEU-1"] == pytest.approx(1.0)


def test_a_failing_meteor_is_left_out_with_its_reason(monkeypatch):
    import radcap.evaluation.metrics

    def broken(*args):
        raise BrokenPipeError("the JVM exited")

    monkeypatch.setattr(radcap.evaluation.metrics, "_meteor", broken)
    refs = {"a": ["a small nodule"], "b": ["no abnormality"]}
    out = score(refs, {"a": "a small nodule", "b": "a cyst"}, meteor=True)
    assert (
        "METEOR" not in out
        and "BrokenPipeError: the JVM exited" in out["METEOR_skipped"]
    )
    assert out["BLEU-1"] > 0 and out["CIDEr"] > 0
    off = score(refs, {"a": "a small nodule", "b": "a cyst"}, meteor=False)
    assert off["METEOR_skipped"] == "METEOR was turned off (--no-meteor, meteor=False)."


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java, not installed")
def test_one_meteor_process_serves_every_scoring_and_a_dead_one_is_replaced():
    import radcap.evaluation.metrics as metrics

    refs = {"a": ["a small nodule in the left lung"], "b": ["no abnormality"]}
    candidates = {"a": "a small nodule in the right lung", "b": "a cyst"}
    first = score(refs, candidates, meteor=True)
    process = metrics._meteor_scorer.meteor_p
    assert score(refs, candidates, meteor=True)["METEOR"] == first["METEOR"]
    assert metrics._meteor_scorer.meteor_p is process  # started once
    assert 0 < first["METEOR"] < 1

    process.kill()  # Java dies between two scorings
    process.wait()
    broken = score(refs, candidates, meteor=True)
    assert "METEOR" not in broken and "METEOR failed" in broken["METEOR_skipped"]
    again = score(refs, candidates, meteor=True)  # a fresh process
    assert again["METEOR"] == first["METEOR"]
    assert metrics._meteor_scorer.meteor_p is not process


def test_unknown_scoring_is_refused():
    with pytest.raises(ValueError, match="scoring='bleu'.*'coco'.*'imageclef'"):
        score({"a": ["x"]}, {"a": "x"}, meteor=False, scoring="bleu")


def test_most_frequent_caption_counts_cleaned_captions():
    captions = ["No abnormality.", "a mass", "no abnormality", "a mass", "A mass"]
    assert most_frequent_caption(captions) == "a mass"  # 3 against 2
    assert most_frequent_caption(["b", "a"]) == "b"  # a tie: first seen


def test_nearest_neighbours_equals_a_brute_force_search():
    rng = np.random.default_rng(0)
    train_features = rng.normal(size=(50, 16)).astype(np.float16)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    for center in (True, False):
        found = nearest_neighbours(train_features, queries, center=center, chunk=7)
        x = train_features.astype(np.float32)
        mean = x.mean(0) if center else 0.0
        for q, j in zip(queries, found):
            sims = [
                np.dot(q - mean, t - mean)
                / np.linalg.norm(q - mean)
                / np.linalg.norm(t - mean)
                for t in x
            ]
            assert j == int(np.argmax(sims))


def test_most_similar_equals_a_brute_force_ranking():
    rng = np.random.default_rng(2)
    train_features = rng.normal(size=(50, 16)).astype(np.float16)
    train_features[7] = train_features[3]  # a tie: row 3 comes first
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    queries[0] = train_features[3]
    rows = np.arange(2, 45)
    index, similarity = most_similar(train_features, queries, k=3, rows=rows, chunk=7)
    x = train_features[rows].astype(np.float32)
    unit = lambda a: (a - x.mean(0)) / np.linalg.norm(a - x.mean(0), axis=-1)[..., None]
    sims = unit(queries) @ unit(x).T  # (9, 43)
    expected = rows[np.argsort(-sims, axis=1, kind="stable")[:, :3]]
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(
        similarity, np.take_along_axis(sims, expected - 2, 1), atol=1e-5
    )
    assert index[0].tolist()[:2] == [3, 7]  # itself, then its copy
    np.testing.assert_array_equal(
        index[:, 0], nearest_neighbours(train_features, queries, rows, chunk=7)
    )


def test_nearest_neighbour_baseline_returns_a_planted_duplicates_caption():
    rng = np.random.default_rng(1)
    ids = [f"img{i}" for i in range(40)]
    array = rng.normal(size=(40, 4096)).astype(np.float16)
    array[5] = 0  # an unreadable training image: zeros, listed as skipped
    skipped = pd.DataFrame(
        {"image_id": ["img5"], "path": ["img5.png"], "reason": ["empty file"]}
    )
    readable = [k for k in ids if k != "img5"]
    captions = pd.DataFrame(
        [(k, c) for k in readable for c in (f"caption of {k}", "a second caption")],
        columns=["image_id", "caption"],
    )
    rows = np.array([ids.index(k) for k in readable])
    train = Split("train", captions, readable, rows, array, None, skipped)
    queries = np.stack([array[17], array[3], np.zeros(4096)]).astype(np.float16)
    captions = baseline_captions(train, queries)
    assert captions["nearest_neighbour"][:2] == ["caption of img17", "caption of img3"]
    assert captions["nearest_neighbour"][2] != "caption of img5"
    assert captions["frequency"] == ["a second caption"] * 3


def test_compare_runs_puts_every_run_and_decoding_in_one_table(tmp_path):
    row = dict(zip(METRICS, [0.5] * 7), distinct=0.2, copied=1.0)
    for name, cider in (("merge", 1.0), ("attention", 2.0)):
        results = {"greedy": {**row, "CIDEr": cider}, "beam-3": row}
        baselines = {"frequency": {**row, "CIDEr": 0.1 * cider}}
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps({"results": results, "baselines": baselines})
        )
    table = compare_runs([tmp_path / "merge", tmp_path / "attention"])
    assert list(table.index) == [
        "merge greedy",
        "merge beam-3",
        "attention greedy",
        "attention beam-3",
        "baseline: frequency",
    ]
    assert table["CIDEr"].tolist() == [1.0, 0.5, 2.0, 0.5, 0.1]
    with pytest.raises(FileNotFoundError, match="evaluate that run first"):
        compare_runs([tmp_path])


# Trained tiny models of every type on a 40-image demo, sharing one feature cache.


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone_here():
    """The tiny stand-in for VGG16: evaluation does not depend on its weights."""
    with pytest.MonkeyPatch.context() as patch:
        patch_tiny_backbone(patch)
        yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    config = preset(
        "demo",
        demo_size=40,
        epochs=2,
        early_stopping=0,
        units=32,
        embed_dim=16,
        attention_units=16,
        extract_batch_size=8,
        beam=2,
    )
    dataset = load(config, root)
    # The attention config caches fc2 and the grid in one pass; merge runs reuse fc2.
    with_grid = config.replace(attention=True)
    extractor = Extractor(with_grid)
    for split in ("train", "validation", "test"):
        extract(with_grid, dataset.images(split), split, root, extractor=extractor)
    return root, config, dataset


@pytest.fixture(scope="module")
def runs(demo):
    root, config, dataset = demo
    made = {}

    def run(attention: bool, cell: str):
        name = f"{'attention' if attention else 'merge'}-{cell}"
        if name not in made:
            run_config = config.replace(name=name, attention=attention, cell=cell)
            train(run_config, dataset, root, verbose=False)
            made[name] = run_config.run_dir(root)
        return made[name]

    return run


# Both decoders and both cells (each pairing is covered by tests/test_model.py).
@pytest.mark.parametrize("attention, cell", [(False, "lstm"), (True, "gru")])
def test_controls_run_for_both_decoders_and_cells(runs, attention, cell, tmp_path):
    captioner = Captioner.load(runs(attention, cell))
    assert captioner.uses_grid == attention
    captions = caption_controls(captioner, tmp_path)
    assert list(captions) == list(CONTROLS)
    assert all(isinstance(text, str) for text in captions.values())
    pixels = {n: np.asarray(Image.open(tmp_path / f"{n}.png")) for n in CONTROLS}
    assert pixels["black"].shape == (224, 224) and pixels["black"].max() == 0
    assert pixels["white"].min() == 255
    assert 100 < pixels["noise"].mean() < 155 and pixels["noise"].std() > 60


def test_evaluate_writes_metrics_report_baselines_and_controls(runs, demo):
    root, _, dataset = demo
    run_dir = runs(False, "lstm")
    metrics = evaluate(run_dir, root, dataset=dataset, verbose=False, meteor=False)
    assert metrics == json.loads((run_dir / "metrics.json").read_text())

    # The keys of the core pipeline are kept.
    n = len(dataset.images("test"))
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "distinct", "results"):
        assert key in metrics
    assert (metrics["split"], metrics["images"], metrics["decoding"]) == (
        "test",
        n,
        "greedy",
    )
    assert list(metrics["results"]) == ["greedy", "beam-2"]

    # Baselines carry the same metric keys as the model's rows.
    metric_keys = {k for k in metrics["results"]["greedy"] if k != "decoding"}
    assert set(metrics["baselines"]) == {"frequency", "nearest_neighbour"}
    for name, row in metrics["baselines"].items():
        assert metric_keys <= set(row), name
        assert row["copied"] == 1.0  # both copy training captions
    frequency = metrics["baselines"]["frequency"]
    train_counts = collections.Counter(dataset.split("train")["caption"])
    assert train_counts[frequency["caption"]] == max(train_counts.values())
    assert frequency["distinct"] == pytest.approx(1 / n)

    assert list(metrics["controls"]) == ["black", "white", "noise"]
    assert set(metrics["beats_baselines"]) == {"BLEU-4", "CIDEr"}
    assert metrics["diversity"]["reference_mean_length"] > 5

    table = metrics_table(metrics)
    assert list(table.index) == [
        "greedy",
        "beam-2",
        "baseline: frequency",
        "baseline: nearest_neighbour",
    ]
    # `exact`: the demo's drawn truth is known (`exact_scores`, tested below).
    assert [c for c in METRICS if c != "METEOR"] + ["distinct", "copied", "exact"] == (
        list(table.columns)
    )

    report = (run_dir / "report.md").read_text()
    lines = report.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("| run |")))
    rows = [line for line in lines[first:] if line.startswith("| ")]
    rows = rows[: next(i for i, r in enumerate(rows[1:], 1) if r.startswith("| run"))]
    assert len(rows) == 5  # the header and four rows
    for section in ("NLTK", "## Familiarity", "## Clinical consistency"):
        assert section in report
    assert set(metrics["nltk"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
    assert {"laterality", "modality", "region", "finding", "controls"} <= set(
        metrics["clinical"]
    )
    assert metrics["clinical"]["extractor_vs_demo_truth"]["all"] >= 0.99
    assert metrics["familiarity"]["images"] == n
    assert set(metrics["familiarity"]["controls"]) == {"black", "white", "noise"}
    assert "| merge-lstm greedy |" in report and "| baseline: frequency |" in report
    assert "## Controls" in report and "- black: " in report
    assert "## Samples" in report and report.count("- references: ") == 5
    samples = pd.read_csv(run_dir / "captions_test.csv")
    assert {"greedy", "beam-2", "frequency", "nearest_neighbour"} <= set(samples)
    assert len(samples) == n


def test_evaluate_reuses_only_an_evaluation_of_the_same_model_and_settings(
    runs, demo, tmp_path
):
    import shutil

    root, _, dataset = demo
    run_dir = shutil.copytree(runs(False, "lstm"), tmp_path / "run")
    args = dict(dataset=dataset, verbose=False, meteor=False, controls=False)
    first = evaluate(run_dir, root, **args)
    written = (run_dir / "metrics.json").stat().st_mtime_ns
    assert evaluate(run_dir, root, reuse=True, **args) == first
    assert (run_dir / "metrics.json").stat().st_mtime_ns == written  # not rewritten
    # Other settings, or another model file: evaluated again.
    other = evaluate(run_dir, root, reuse=True, beams=[1], **args)
    assert list(other["results"]) == ["greedy"]
    again = evaluate(run_dir, root, reuse=True, **args)
    assert list(again["results"]) == ["greedy", "beam-2"]
    (run_dir / "best.keras").write_bytes((run_dir / "best.keras").read_bytes())
    assert (
        evaluate(run_dir, root, reuse=True, **args)["evaluated"] == first["evaluated"]
    )
    with open(run_dir / "familiarity.npz", "ab") as f:
        f.write(b"\0")  # a changed file (np.load still reads a zip with junk after)
    assert (
        evaluate(run_dir, root, reuse=True, **args)["evaluated"] != first["evaluated"]
    )


def test_exact_scores_count_captions_as_drawn_and_the_held_out_pairings():
    from radcap.data.demo import Case
    from radcap.evaluation.evaluate import exact_scores

    two = dict(lesion=True, findings=2, side_2="left")
    cases = pd.DataFrame(
        [
            vars(
                Case(
                    "ct",
                    "chest",
                    size="small",
                    kind="cyst",
                    size_2="large",
                    kind_2="nodule",
                    **two,
                )
            ),
            vars(
                Case(
                    "ct",
                    "chest",
                    size="large",
                    kind="cyst",
                    size_2="large",
                    kind_2="nodule",
                    **two,
                )
            ),
            vars(
                Case(
                    "mri",
                    "brain",
                    size="large",
                    kind="nodule",
                    size_2="small",
                    kind_2="cyst",
                    **two,
                )
            ),
        ]
    )
    cases["caption"] = [Case(**row).caption for row in cases.to_dict("records")]
    texts = [cases["caption"][0], cases["caption"][1], "axial mri of the brain"]
    # Rows 0 and 2 are held-out pairings; row 2 is wrong.
    assert exact_scores(cases, texts) == {"exact": 2 / 3, "exact_held_out": 0.5}
    one = pd.DataFrame([vars(Case("ct", "chest", True, "left"))])
    one["caption"] = [Case("ct", "chest", True, "left").caption]
    assert exact_scores(one, ["no"]) == {"exact": 0.0}
