"""A ROCO rehearsal: real ROCO captions in the Kaggle layout, through the CLI.

90 real captions (tests/data/roco_captions_sample.tsv) with drawn images,
laid out as the Kaggle copy of ROCO unzips, with three listed images missing
and one of 0 bytes; then `radcap extract`, `train`, `evaluate` and `caption`
with the `roco` preset as a user types them (two epochs, and the tiny
stand-in backbone: the rehearsal is about the data and the commands, not
VGG16). What a user would check: every step succeeds, the skip report names
the bad rows, no caption holds `<unk>`, `<pad>` or `<start>` or is empty, the
metrics and the report are complete, and `caption`'s exit code follows its rule."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_run import patch_tiny_backbone

from radcap import cli
from radcap.core.config import preset
from radcap.data import load
from radcap.data.demo import random_case, render
from radcap.decoding.captioner import Captioner

SAMPLE = Path(__file__).parent / "data/roco_captions_sample.tsv"
SIZES = {"train": 60, "validation": 15, "test": 15}
SHORT = {"train": "train", "validation": "val", "test": "test"}
MISSING = {"train": [3], "test": [4, 9]}  # rows whose image file is not there
EMPTY = {"test": [7]}  # rows whose image file has 0 bytes


@pytest.fixture(scope="module")
def roco(tmp_path_factory):
    """`data/roco/all_data/<split>/...` as Kaggle's ROCO, and what was planted."""
    root = tmp_path_factory.mktemp("roco-rehearsal")
    with open(SAMPLE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    rng = np.random.default_rng(0)
    planted, start = {"missing": [], "empty": []}, 0
    for split, n in SIZES.items():
        part, start = rows[start : start + n], start + n
        folder = root / "data/roco/all_data" / split
        images = folder / "radiology/images"
        images.mkdir(parents=True)
        with open(folder / f"radiology{SHORT[split]}data.csv", "w", newline="") as f:
            writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["id", "name", "caption"])
            for row in part:  # the caption ends with a newline inside its quotes
                writer.writerow(
                    [row["roco_id"], row["pmc_file"], row["caption"] + "\n"]
                )
        for i, row in enumerate(part):
            path = images / row["pmc_file"]
            if i in MISSING.get(split, []):
                planted["missing"].append(row["pmc_file"])
            elif i in EMPTY.get(split, []):
                path.write_bytes(b"")
                planted["empty"].append(row["pmc_file"])
            else:
                pixels = render(random_case(rng), rng)
                Image.fromarray(pixels).convert("RGB").save(path, quality=90)
    return root, planted


BARRED = ("<unk>", "<pad>", "<start>")


def test_roco_rehearsal_through_the_command(roco, capsys, monkeypatch):
    root, planted = roco
    patch_tiny_backbone(monkeypatch)
    base = ["--preset", "roco", "--set", "weights=none", "--root", str(root)]
    # VGG16 runs on whole batches: 8 images, not the preset's 32, for the
    # two-image captions and the three controls (the run keeps the setting).
    base += ["--set", "extract_batch_size=8"]
    assert cli.main(["extract", *base]) == 0
    out = capsys.readouterr().out
    assert "4 rows of the dataset were skipped" in out
    assert "3  missing image file" in out and "1  empty image file (0 bytes)" in out
    assert "test: 12 images, 0 unreadable" in out
    # Each command ends with where its time went (radcap.core.clock).
    assert re.fullmatch(r"time: extract \d+ s; total \d+ s", out.splitlines()[-1])
    skipped = load(preset("roco", weights=None), root).skipped
    names = sorted(Path(p).name for p in skipped["path"])
    assert names == sorted(planted["missing"] + planted["empty"])

    assert cli.main(["train", *base, "--set", "epochs=2"]) == 0
    run = root / "checkpoints/roco"
    assert json.loads((run / "training.json").read_text())["epochs_run"] == 2
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(
        r"time: extract \d+ s, train \d+ s, familiarity \d+ s; total \d+ s", last
    )

    evaluate = ["evaluate", "--run", "roco", "--root", str(root), "--no-meteor"]
    assert cli.main(evaluate) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(
        r"time: evaluate \d+ s, extract \d+ s, controls \d+ s; total \d+ s", last
    )
    assert metrics["images"] == 12 and metrics["skipped_images"] == 0
    for key in ("BLEU-4", "CIDEr", "nltk", "clinical", "familiarity", "baselines"):
        assert key in metrics
    table = pd.read_csv(run / "captions_test.csv", dtype=str, keep_default_na=False)
    for column in ("greedy", "beam-3"):
        captions = table[column].tolist()
        assert all(c.strip() for c in captions), f"an empty {column} caption"
        assert not [c for c in captions if any(t in c.split() for t in BARRED)]
    # The search bars them; `allow_unk` lets `<unk>` through, for research.
    captioner = Captioner.load(run)
    vocab = captioner.vocab
    assert set(captioner.rules().never) == {vocab.pad_id, vocab.start_id, vocab.unk_id}
    captioner.config = captioner.config.replace(allow_unk=True)
    assert set(captioner.rules().never) == {vocab.pad_id, vocab.start_id}
    report = (run / "report.md").read_text()
    for section in ("| roco greedy |", "## Familiarity", "## Clinical consistency"):
        assert section in report

    # caption: 0 when every image was captioned, 1 when some could not be read.
    images = root / "data/roco/all_data/test/radiology/images"
    good = sorted(p for p in images.iterdir() if p.stat().st_size)[:2]
    bad = images / planted["empty"][0]
    capsys.readouterr()
    assert (
        cli.main(["caption", "--run", "roco", "--root", str(root), *map(str, good)])
        == 0
    )
    assert cli.main(["caption", "--run", "roco", "--root", str(root), str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    captions = [line.split("\t")[1] for line in lines if "\t" in line]
    assert captions[-1] == "ERROR: empty file (0 bytes)"
    assert all(c and not any(t in c.split() for t in BARRED) for c in captions[:-1])
