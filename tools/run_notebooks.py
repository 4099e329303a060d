"""Run the five notebooks on the demo and commit what they show.

The notebooks in the repository carry the outputs of one demo run, so that a
reader on GitHub or nbviewer sees the sample captions, attention maps, loss
curves and the metrics table before running anything. This regenerates them:

    python tools/run_notebooks.py              # all five, in order
    python tools/run_notebooks.py --only 05_search.ipynb --workdir W  # one, in W
    python tools/run_notebooks.py --check      # sizes only, nothing run

Each notebook runs top to bottom in a kernel of its own (papermill), with its
committed parameters, in one working folder (`--workdir`, emptied first), as
a user runs them one after another (`--only`: the notebooks named, in a
working folder kept as it is, where the earlier ones ran or `radcap demo
--root W` wrote). Progress bars are left out: as
widgets they would show as errors on GitHub. Needs the `notebooks` extra
(`pip install -e ".[notebooks]"`); the demo takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WIDGET = "application/vnd.jupyter.widget-view+json"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def sizes() -> dict[str, int]:
    """Bytes of each committed notebook."""
    return {path.name: path.stat().st_size for path in NOTEBOOKS}


def run(workdir: Path, only: list[str] | None = None) -> None:
    """Execute the notebooks (`only` those named) in order; write them back
    with their outputs. The working folder is emptied first unless `only`."""
    import nbformat
    import papermill

    if workdir.exists() and not only:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(RADCAP_WORKDIR=str(workdir), TQDM_DISABLE="1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    unknown = set(only or ()) - {path.name for path in NOTEBOOKS}
    if unknown:
        raise SystemExit(f"No notebook {', '.join(sorted(unknown))} in notebooks/.")
    for path in NOTEBOOKS:
        if only and path.name not in only:
            continue
        print(f"running {path.name}", flush=True)
        done = papermill.execute_notebook(
            str(path),
            None,
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
        )
        # What papermill adds for its own runs, not for a reader; and the
        # progress bars, widgets that GitHub and nbviewer cannot show.
        done.metadata.pop("papermill", None)
        done.metadata.pop("widgets", None)
        for cell in done.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            if cell.cell_type == "code":
                cell.outputs = [
                    o for o in cell.outputs if WIDGET not in o.get("data", {})
                ]
        nbformat.write(done, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/radcap-notebooks"))
    parser.add_argument("--check", action="store_true", help="print sizes only")
    parser.add_argument(
        "--only", action="append", help="run only this notebook (repeatable)"
    )
    args = parser.parse_args(argv)
    if not args.check:
        run(args.workdir, args.only)
    total = 0
    for name, size in sizes().items():
        total += size
        print(f"{name}: {size / 1e3:.0f} KB")
    print(f"all {len(NOTEBOOKS)}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
