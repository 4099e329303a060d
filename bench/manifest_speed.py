"""Time building a ROCO-size manifest (81,806 rows, the Kaggle layout, files present).

Writes a fake `all_data/` tree into a temporary folder (1-byte image files,
captions quoted over two lines as in the Kaggle CSVs), then times
`radcap.data.roco.load_roco` and `radcap.data.profile`. Prints one JSON object.

    python bench/manifest_speed.py
"""

import json
import os
import tempfile
import time
from pathlib import Path

from radcap.data import profile as report
from radcap.data.roco import ROCO_SHORT, load_roco

# Rows per split of ROCO's radiology part.
ROWS = {"train": 65_450, "validation": 8_180, "test": 8_176}
WORDS = "axial ct of the chest shows a small nodule in the right lower lobe".split()


def make_fake_roco(root: Path) -> int:
    number = 0
    for split, n in ROWS.items():
        images = root / "all_data" / split / "radiology" / "images"
        images.mkdir(parents=True)
        lines = ["id,name,caption"]
        for _ in range(n):
            number += 1
            name = f"PMC{number:07d}_fig{number % 7}.jpg"
            with open(images / name, "wb") as f:
                f.write(b"\xff")
            caption = " ".join(WORDS[: 5 + number % 9]).capitalize()
            lines.append(f'ROCO_{number:05d},{name}," {caption} (arrow).\n"')
        csv = "\n".join(lines) + "\n"
        short = ROCO_SHORT[split]
        (root / "all_data" / split / f"radiology{short}data.csv").write_text(csv)
        (root / "all_data" / split / "radiology" / f"{short}data.csv").write_text(csv)
    return number


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="radcap-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        rows = make_fake_roco(root)
        made = time.perf_counter() - started

        started = time.perf_counter()
        dataset = load_roco(root)
        first = time.perf_counter() - started
        started = time.perf_counter()
        load_roco(root)
        again = time.perf_counter() - started
        started = time.perf_counter()
        report(dataset, vocab_min_count=5, max_len=60)
        reported = time.perf_counter() - started

    print(
        json.dumps(
            {
                "rows": rows,
                "manifest_rows": len(dataset.manifest),
                "skipped": len(dataset.skipped),
                "make_fixture_s": round(made, 2),
                "load_roco_s": round(first, 2),
                "load_roco_again_s": round(again, 2),
                "report_s": round(reported, 2),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
