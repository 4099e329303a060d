"""Install radcap with pip, never replacing the TensorFlow already installed.

Colab and Kaggle ship a TensorFlow built for their CUDA; a pip install that
replaced it (a newer release, another build) would leave a TensorFlow that
cannot use the GPU, or none that imports. So every package of the
TensorFlow stack found here (`tensorflow*`, `tf-*`, `tensorboard*`, `keras`)
is pinned at its present version in a pip constraints file, and pip installs
radcap and what else it needs around them. Where radcap cannot run with the
pinned versions, pip stops and says so, and nothing is changed.

Usage (stdlib only: this runs before radcap is installed):

    python tools/install_radcap.py                    # this clone, editable
    python tools/install_radcap.py --source radcap-0.2.0-py3-none-any.whl
    python tools/install_radcap.py --source git+https://github.com/<you>/radcap.git

Other arguments go to `pip install` as they are (`-q`, `--dry-run --report
FILE`...).

The notebooks' setup cell calls `setup` in this file before radcap is
installed: the file is also the module `radcap._install` (a link in the
repository, a copy in the wheel), and the cell puts the places that may hold
radcap on `sys.path`, first to last; Python imports the module from the first
that has it, and `setup` installs radcap from there.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CLONE = Path(__file__).resolve().parent.parent
# A line of `pip list --format=freeze` that names a package of the stack.
TF_STACK = r"^(tensorflow[^=]*|tf[-_][^=]*|tensorboard[^=]*|keras)=="


def pins(python: str = sys.executable) -> list[str]:
    """`name==version` of every package of the TensorFlow stack installed here."""
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stack = re.compile(TF_STACK, re.IGNORECASE)
    return [line for line in listed.splitlines() if stack.match(line)]


def install(source: str | None, pip_args: list[str]) -> int:
    """Run `pip install` of `source` (default: this clone, editable) with the pins."""
    target = ["-e", str(CLONE)] if source is None else [source]
    pinned = pins()
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "tensorflow-stack.txt"
        constraints.write_text("".join(f"{pin}\n" for pin in pinned))
        print(
            "Keeping as installed: " + (", ".join(pinned) or "no TensorFlow here"),
            flush=True,
        )
        command = [sys.executable, "-m", "pip", "install", "-c", str(constraints)]
        done = subprocess.run([*command, *target, *pip_args])
    if done.returncode != 0 and pinned:
        print(
            f"pip could not install radcap beside {', '.join(pinned)}. radcap "
            "needs TensorFlow >= 2.16 and Keras >= 3.3: choose a newer runtime "
            "(Colab: Runtime > Change runtime type; Kaggle: Settings > "
            "Environment), or install into a fresh virtual environment.",
            file=sys.stderr,
        )
    return done.returncode


def setup(source: str | None = None, pip_args: tuple[str, ...] = ("-q",)) -> str:
    """Install radcap from where this module was imported, in a notebook.

    The setup cell puts on `sys.path`, in this order, what of these exists:
    the clone the notebook sits in (`..`), a clone of `RADCAP_REPO`,
    `RADCAP_SOURCE`, and a `radcap*.whl` in the working folder, on Google
    Drive or in a Kaggle input; then it imports this module, which Python
    finds in the first of them. A clone found is installed, editable; after
    that, `source` (a wheel, a zip, a pip URL), else the wheel found.
    Afterwards `import radcap` finds the installed radcap without a restart.

    Args:
        source: The notebook's `RADCAP_SOURCE`, if set.
        pip_args: More arguments for `pip install`.

    Returns:
        What was installed: the clone's folder, or the source.

    Raises:
        RuntimeError: pip failed (what it said is above).
    """
    home = CLONE  # this file's radcap/.. : a clone, or a wheel on sys.path
    if home.suffix != ".whl":
        source = None  # a clone comes first: install it, editable
    elif source is None:
        source = str(home)
    if install(source, list(pip_args)) != 0:
        raise RuntimeError(
            f"pip could not install radcap from {source or home}: see its "
            "message above."
        )
    # Forget the radcap imported from the place found (a wheel, or a clone
    # whose editable install Python sees only after a restart: kept on the
    # path), so that the next `import radcap` finds the installed one.
    sys.path[:] = [p for p in sys.path if not p.endswith(".whl")]
    if source is None and str(home) not in map(str, sys.path):
        sys.path.insert(0, str(home))
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not type(finder).__module__.startswith("radcap")
    ]
    for name in [n for n in sys.modules if n == "radcap" or n.startswith("radcap.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return source or str(home)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument(
        "--source",
        help="what to install: a folder, a .whl, a .zip of the repository, or a "
        "pip URL (git+https://...); default: this clone, editable",
    )
    args, pip_args = parser.parse_known_args(argv)
    return install(args.source, pip_args)


if __name__ == "__main__":
    sys.exit(main())
