"""The `roco` preset's text settings, from real ROCO captions.

Reads the 2,000 real ROCO validation captions (`../shared/data`, or the 300
in tests/data) and prints, after radcap's cleaning:

- caption lengths (words): percentiles, and the share longer than each
  `max_len` candidate (those are cut);
- for each `min_count` candidate, a vocabulary built on a seeded half of the
  captions: its size, the share of the other half's words it knows
  (coverage), and the share of `<unk>` in the other half's encoded captions;
  the same counted on all the captions, as the vocabulary of a split sees its
  own captions.

The preset builds its vocabulary on ~65,000 training captions, 65 times this
sample, so a word needs far more occurrences there to reach the same
`min_count`; read coverage here as a lower bound. Prints one JSON object.

    .venv/bin/python bench/roco_text.py
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from radcap.core.config import preset
from radcap.core.text import Vocabulary, clean_caption

HERE = Path(__file__).resolve().parents[1]
SAMPLES = (
    HERE.parent / "shared/data/roco_validation_captions_sample.tsv",
    HERE / "tests/data/roco_captions_sample.tsv",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, help="a TSV with a caption column")
    args = parser.parse_args()
    path = args.sample or next(p for p in SAMPLES if p.is_file())
    with open(path, newline="", encoding="utf-8") as f:
        captions = [row["caption"] for row in csv.DictReader(f, delimiter="\t")]
    lengths = np.array([len(clean_caption(c).split()) for c in captions])
    order = np.random.default_rng(0).permutation(len(captions))
    half = len(captions) // 2
    build = [captions[i] for i in order[:half]]
    held = [captions[i] for i in order[half:]]
    out = {
        "benchmark": "roco_text",
        "sample": str(path.name),
        "captions": len(captions),
        "length_percentiles": {
            str(q): float(np.percentile(lengths, q)) for q in (50, 75, 90, 95, 99)
        },
        "longer_than_max_len": {
            str(n): round(float((lengths > n).mean()), 4) for n in (20, 40, 60, 80, 100)
        },
        "min_count": {},
        "preset": {k: getattr(preset("roco"), k) for k in ("min_count", "max_len")},
    }
    for min_count in (1, 2, 3, 5, 10):
        vocab = Vocabulary.build(build, min_count=min_count, max_len=10_000)
        ids = [t for c in held for t in vocab.encode(c)[1:-1]]
        whole = Vocabulary.build(captions, min_count=min_count, max_len=10_000)
        own = [t for c in captions for t in whole.encode(c)[1:-1]]
        out["min_count"][str(min_count)] = {
            "vocabulary": vocab.size,
            "coverage": round(vocab.coverage(held), 4),
            "unk_share_held_out": round(
                float(np.mean(np.array(ids) == vocab.unk_id)), 4
            ),
            "vocabulary_all": whole.size,
            "unk_share_own": round(float(np.mean(np.array(own) == whole.unk_id)), 4),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
