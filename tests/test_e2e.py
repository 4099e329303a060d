"""End to end on the demo: `radcap demo` as a new user runs it, then what it claims.

These train real models (a few minutes on 2 CPU cores) and share the session's
working folder with the notebooks, which then find the features cached.
"""

import json
import os
import socket
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from real_images import write_real_images

from radcap import cli
from radcap.data.demo import Case, render
from radcap.decoding.captioner import Captioner
from radcap.features.backbone import shared_extractor
from radcap.models import runs

pytestmark = pytest.mark.slow


def loaded(run_dir) -> Captioner:
    """A run's captioner on the process's one backbone (a VGG16 build is seconds)."""
    backbone = shared_extractor(runs.load_config(run_dir), more=True)
    return Captioner.load(run_dir, extractor=backbone)


@pytest.fixture(scope="session")
def demo_training(workdir, radcap_processes):
    """`radcap demo` started in a process of its own, once the features are cached.

    One `radcap extract --attention` caches fc2, the block means and the
    grid in one backbone pass over the 360 images; then the plain demo
    trains in its own process while the attention demo trains in this one
    (`attention_run`): the two runs share no file they write, and the
    longest chain of the suite is shorter by one demo.
    """
    assert cli.main(["extract", "--attention", "--root", str(workdir)]) == 0
    command = [sys.executable, "-m", "radcap", "demo", "--root", str(workdir)]
    process = radcap_processes.popen(command)
    yield process
    if process.poll() is None:  # a session that never asked for the plain demo
        process.wait(timeout=DEMO_TIMEOUT)


DEMO_TIMEOUT = 1800  # seconds; the demo takes about 2 minutes on 2 free cores


@pytest.fixture(scope="session")
def attention_run(workdir, demo_training):
    assert cli.main(["demo", "--attention", "--root", str(workdir)]) == 0
    return workdir / "checkpoints" / "demo-attention"


@pytest.fixture(scope="session")
def demo_run(workdir, demo_training, attention_run):
    """The plain demo's run, trained by `radcap demo` (see `demo_training`)."""
    out, err = demo_training.communicate(timeout=DEMO_TIMEOUT)
    assert demo_training.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    assert "BLEU-4" in out  # it ran to its end: the metrics line
    return workdir / "checkpoints" / "demo"


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("run", ["demo_run", "attention_run"])
def test_demo_scores(run, request):
    metrics = metrics_of(request.getfixturevalue(run))
    greedy, beam = metrics["results"]["greedy"], metrics["results"]["beam-3"]
    assert metrics["split"] == "test" and metrics["decoding"] == "greedy"
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr", "distinct"):
        assert key in metrics
    assert metrics["BLEU-4"] >= 0.9
    assert beam["BLEU-4"] >= greedy["BLEU-4"] - 0.005
    # The model uses the image: it writes nearly as many distinct captions as there are.
    assert metrics["distinct"] >= 0.8 * metrics["reference_distinct"]


def test_lesion_side_changes_the_side_word(demo_run, tmp_path):
    captioner = loaded(demo_run)
    paths, agree = [], 0
    cases = [
        Case(m, r, True, side, "large", "nodule")
        for m in ("ct", "mri", "x-ray")
        for r in ("chest", "brain", "abdomen")
        for side in ("left", "right")
    ]
    for i, case in enumerate(cases):
        seed = i // 2  # the two sides of a pair share everything else
        path = tmp_path / f"{i}.png"
        Image.fromarray(render(case, np.random.default_rng(seed))).save(path)
        paths.append(path)
    captions = captioner.caption(paths)
    for i in range(0, len(cases), 2):
        left, right = captions[i].split(), captions[i + 1].split()
        assert left != right
        agree += ("left" in left) + ("right" in right)
    assert agree >= 0.8 * len(cases)


def test_caption_command_prints_one_caption_per_image(demo_run, workdir, capsys):
    images = sorted((workdir / "data/demo/images").glob("*.png"))[:3]
    assert cli.main(["caption", "--run", str(demo_run), *map(str, images)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert all(" shows " in line.split("\t")[1] for line in lines)


def test_caption_command_reports_an_unreadable_image_as_text_or_json(
    demo_run, tmp_path, capsys
):
    good = sorted((demo_run.parents[1] / "data/demo/images").glob("*.png"))[:2]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = ["caption", "--run", str(demo_run), str(empty), *map(str, good)]
    assert cli.main(args) == 1  # one image could not be read
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"{empty}\tERROR: empty file (0 bytes)"
    captions = [line for line in lines[1:] if not line.startswith("  warning")]
    assert len(captions) == 2 and all(" shows " in line for line in captions)
    assert cli.main(["caption", "--json", *args[1:]]) == 1
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert objects[0] == {
        "path": str(empty),
        "caption": None,
        "score": None,
        "familiar": None,
        "familiarity": None,
        "frame": None,
        "error": "empty file (0 bytes)",
    }
    for line, path, text in zip(objects[1:], good, captions):
        assert line["path"] == str(path) and line["error"] is None
        assert f"{path}\t{line['caption']}" == text  # as the text output said
        assert isinstance(line["familiar"], bool) and line["familiarity"] > 0
        assert line["score"] < 0


def test_caption_takes_files_or_cached_features(demo_run, workdir):
    from radcap.features.cache import load_features

    captioner = loaded(demo_run)
    fc2 = load_features(captioner.config, "test", root=workdir)
    from_features = captioner.caption_features(fc2.array[:4], beam=3)
    paths = [workdir / "data/demo/images" / f"{i}.png" for i in fc2.ids[:4]]
    assert from_features == captioner.caption(paths, beam=3)
    described = captioner.describe_features(np.asarray(fc2.array[:4]), beam=3)
    assert [r.caption for r in described] == from_features


@pytest.mark.parametrize("run", ["demo_run", "attention_run"])
def test_model_beats_both_baselines_and_reports_every_row(run, request):
    run_dir = request.getfixturevalue(run)
    metrics = metrics_of(run_dir)
    for baseline in ("frequency", "nearest_neighbour"):
        for key in ("CIDEr", "BLEU-4"):
            assert metrics[key] > metrics["baselines"][baseline][key], (baseline, key)
    assert set(metrics["controls"]) == {"black", "white", "noise"}
    report = (run_dir / "report.md").read_text()
    for row in ("greedy", "beam-3", "frequency", "nearest"):
        assert row in report


def test_search_by_caption_finds_a_matching_image(demo_run, workdir):
    from radcap import data
    from radcap.evaluation.retrieval import recall_at_k
    from radcap.features.cache import load_features

    captioner = loaded(demo_run)
    config = captioner.config
    fc2 = load_features(config, "test", root=workdir)
    references = data.load(config, workdir).references("test")
    recall = recall_at_k(captioner, fc2.array, None, references, ks=(1, 5), ids=fc2.ids)
    assert recall["recall@1"] >= 0.8 and recall["recall@5"] >= recall["recall@1"]


def test_retrieval_finds_both_ways_on_the_demo(demo_run, workdir, capsys):
    """`radcap retrieval` on the demo: the dual encoder's recall beside its
    baselines, hits counted as equal cleaned captions (the demo repeats them).
    The run stays in the working folder: notebook 05 then finds it trained."""
    assert cli.main(["retrieval", "--preset", "demo", "--root", str(workdir)]) == 0
    run_dir = workdir / "checkpoints" / "demo-retrieval"
    section = metrics_of(run_dir)["retrieval"]
    baselines = section["baselines"]
    assert baselines["likelihood"]["run"] == demo_run.name
    for way in ("image_to_text", "text_to_image"):
        ours = section[way]
        assert ours["R@1"] >= 0.85, (way, ours)
        assert ours["R@1"] >= baselines["likelihood"][way]["R@1"] - 0.03, way
        assert ours["R@1"] > baselines["nearest_neighbour"][way]["R@1"], way
        assert baselines["random"][way]["R@1"] < 0.2, way
        assert ours["R@5"] >= ours["R@1"] and ours["median_rank"] == 1
    # Search by text, from the command: the top image's own caption matches.
    capsys.readouterr()
    query = "axial ct of the chest shows a large cyst in the right lung"
    args = ["search", "--run", str(run_dir), "--k", "3", "--json"]
    assert cli.main([*args, "--root", str(workdir), query]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 3 and hits[0]["caption"] == query, hits
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_evaluate_compares_several_runs_in_one_table(
    demo_run, attention_run, workdir, tmp_path
):
    import shutil

    # Copies, so that the runs' own metrics.json stay as the demo wrote them.
    runs = [
        shutil.copytree(run, tmp_path / run.name) for run in (demo_run, attention_run)
    ]
    args = ["evaluate", "--beam", "1", "--no-controls", "--root", str(workdir)]
    assert cli.main([*args, "--run", str(runs[0]), "--run", str(runs[1])]) == 0
    lines = (tmp_path / "comparison.md").read_text().splitlines()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[4:]}
    assert list(rows) == [
        "demo greedy",
        "demo-attention greedy",
        "baseline: frequency",
        "baseline: nearest_neighbour",
    ]
    for run in runs:
        bleu = metrics_of(run)["results"]["greedy"]["BLEU-4"]
        assert rows[f"{run.name} greedy"][4] == f"{bleu:.3f}"  # run, BLEU-1..4


def repeated_trigram(caption: str) -> bool:
    words = str(caption).split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


@pytest.fixture(scope="module")
def real_images(tmp_path_factory):
    return write_real_images(tmp_path_factory.mktemp("real"))


@pytest.mark.parametrize("run", ["demo_run", "attention_run"])
def test_trust_figures_of_the_evaluation(run, request):
    run_dir = request.getfixturevalue(run)
    metrics = metrics_of(run_dir)
    familiarity = metrics["familiarity"]
    assert familiarity["images"] == metrics["images"]
    assert familiarity["flagged_share"] <= 0.02
    assert {k: v["familiar"] for k, v in familiarity["controls"].items()} == {
        "black": False,
        "white": False,
        "noise": False,
    }
    # No caption repeats a 3-gram: the test split (both decodings), the controls.
    table = pd.read_csv(run_dir / "captions_test.csv", dtype=str).fillna("")
    written = [*table["greedy"], *table["beam-3"], *metrics["controls"].values()]
    assert not [c for c in written if repeated_trigram(c)]
    clinical = metrics["clinical"]
    assert clinical["extractor_vs_demo_truth"]["all"] >= 0.99
    for baseline in ("frequency", "nearest_neighbour"):
        assert "clinical" in metrics["baselines"][baseline]
    assert clinical["laterality"]["contradiction"] <= 0.1
    assert clinical["modality"]["agreement"] >= 0.9
    assert abs(metrics["nltk"]["BLEU-4"] - metrics["BLEU-4"]) <= 0.05
    report = (run_dir / "report.md").read_text()
    for section in ("## Familiarity", "## Clinical consistency", "NLTK"):
        assert section in report


def test_real_images_are_flagged_and_captioned_without_repeats(
    demo_run, attention_run, real_images
):
    attention = loaded(attention_run)
    arrays, errors = attention.image_features(real_images)  # one backbone pass
    assert errors == {}
    for captioner in (loaded(demo_run), attention):
        grid = arrays["block5_pool"] if captioner.uses_grid else None
        found = captioner.describe_features(arrays["fc2"], grid, arrays["block_means"])
        captions = [r.caption for r in found]
        flagged = [c.familiar is False for c in captions]
        assert sum(flagged) >= 0.95 * len(real_images), [
            (p.name, c.familiarity) for p, c in zip(real_images, captions) if c.familiar
        ]
        assert not [c for c in captions if repeated_trigram(c)]


def test_a_run_without_familiarity_still_captions_and_gets_it_added(
    demo_run, workdir, tmp_path, capsys
):
    import shutil

    old = shutil.copytree(demo_run, tmp_path / "old-run")
    (old / "familiarity.npz").unlink()
    image = sorted((workdir / "data/demo/images").glob("*.png"))[0]
    caption = loaded(old).caption([image])[0]
    assert " shows " in caption and caption.familiar is None
    assert cli.main(["caption", "--run", str(old), str(image)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{image}\t{caption}\n"
    assert "familiarity is unknown" in err and "radcap familiarity --run" in err
    # A damaged reference does not stop captioning either, and the command
    # that adds a missing one replaces it.
    (old / "familiarity.npz").write_bytes(b"half a file")
    damaged = loaded(old)
    assert damaged.familiarity is None
    assert "not a readable familiarity reference" in damaged.familiarity_hint
    with pytest.raises(ValueError, match="no_repeat_ngram=-1 is invalid"):
        damaged.caption_features(np.zeros((1, 4096), np.float32), no_repeat_ngram=-1)
    assert cli.main(["familiarity", "--run", str(old), "--root", str(workdir)]) == 0
    # Now the command knows: the demo image passes, a black image gets one
    # warning line under its caption.
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(black)
    capsys.readouterr()
    assert cli.main(["caption", "--run", str(old), str(image), str(black)]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0] == f"{image}\t{caption}"
    assert "familiarity is unknown" not in err
    assert lines[1].split("\t")[0] == str(black)
    assert lines[2].startswith("  warning: unlike the training images")


def test_caption_command_says_what_a_path_that_is_no_image_is(
    demo_run, workdir, tmp_path, capsys
):
    good = sorted((workdir / "data/demo/images").glob("*.png"))[0]
    fifo, sock, folder = tmp_path / "p.png", tmp_path / "s.png", tmp_path / "x.png"
    os.mkfifo(fifo)  # never opened: reading it would wait for a writer
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
    folder.mkdir()
    paths = [fifo, "/dev/null", sock, folder, good]
    assert cli.main(["caption", "--run", str(demo_run), *map(str, paths)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        f"{fifo}\tERROR: is a named pipe (FIFO), not a regular file",
        "/dev/null\tERROR: is a device, not a regular file",
        f"{sock}\tERROR: is a socket, not a regular file",
        f"{folder}\tERROR: is a folder with no files in it, not an image: give the "
        "image files, or a folder that holds them",
    ]
    assert lines[4].startswith(f"{good}\t") and " shows " in lines[4]


def test_inputs_that_do_not_fit_get_clear_errors(demo_run, attention_run, tmp_path):
    captioner = loaded(demo_run)
    with pytest.raises(ValueError, match=r"shape \(2, 512\) do not fit.*4096"):
        captioner.caption_features(np.zeros((2, 512), np.float32))
    with pytest.raises(ValueError, match="beam=0 is invalid"):
        captioner.caption_features(np.zeros((2, 4096), np.float32), beam=0)
    attention = loaded(attention_run)
    with pytest.raises(ValueError, match="pass the grid features"):
        attention.caption_features(np.zeros((2, 4096), np.float32))
    (tmp_path / "empty").mkdir()
    assert cli.main(["caption", "--run", str(demo_run), str(tmp_path / "empty")]) == 2
