"""Caption cleaning on real ROCO text: vocabulary size and coverage, before and after.

Reads the 2,000 real ROCO validation captions in `../shared/data` (about one
in eight holds accented letters, "×", "µ", "°", Unicode dashes or spaces),
builds a vocabulary (`min_count=1`) on the first half and measures how much
of the second half's words it knows, with the cleaning of a given commit
("before") and the working tree's ("after"). Also counts captions that the
cleaning empties (the manifest drops those) and the words that only differ
by how Unicode was written, and in the second half the words with
non-ASCII letters that cleaning breaks apart ("Ménétrier" -> "m n trier").
Prints one JSON object.

    .venv/bin/python bench/bench_text.py --before 5276de6
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from radcap.core.text import clean_caption

SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "shared/data/roco_validation_captions_sample.tsv"
)


def old_cleaner(commit: str):
    """`clean_caption` as it was at `commit` (read with git, run in its own module)."""
    for path in ("radcap/core/text.py", "radcap/text.py"):  # after, before 0.4
        shown = subprocess.run(
            ["git", "show", f"{commit}:{path}"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        if shown.returncode == 0:
            break
    shown.check_returncode()
    namespace = {"__name__": "radcap_text_before"}
    exec(compile(shown.stdout, f"{commit}:{path}", "exec"), namespace)
    return namespace["clean_caption"]


def _split(caption: str, clean) -> int:
    """Words of `caption` with a non-ASCII letter that clean into several."""
    return sum(
        len(clean(w).split()) > 1
        for w in caption.split()
        if any(ch.isalpha() and not ch.isascii() for ch in w)
    )


def figures(clean, captions) -> dict:
    half = len(captions) // 2
    started = time.perf_counter()
    cleaned = [clean(c) for c in captions]
    seconds = time.perf_counter() - started
    known = {w for c in cleaned[:half] for w in c.split()}
    words = [w for c in cleaned[half:] for w in c.split()]
    return {
        "vocabulary": len(known),
        "coverage": round(sum(w in known for w in words) / len(words), 4),
        "empty_captions": sum(not c for c in cleaned),
        "words_with_non_ascii": len({w for w in known if not w.isascii()}),
        "split_words": sum(_split(c, clean) for c in captions[half:]),
        "seconds": round(seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="5276de6", help="commit to compare with")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    args = parser.parse_args()
    if not args.sample.is_file():
        sys.exit(f"{args.sample} not found: pass --sample with the ROCO captions TSV.")
    with open(args.sample, newline="", encoding="utf-8") as f:
        captions = [row["caption"] for row in csv.DictReader(f, delimiter="\t")]
    out = {
        "benchmark": "text",
        "captions": len(captions),
        "with_non_ascii": sum(not c.isascii() for c in captions),
        "before": {
            "commit": args.before,
            **figures(old_cleaner(args.before), captions),
        },
        "after": figures(clean_caption, captions),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
