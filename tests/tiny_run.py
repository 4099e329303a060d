"""A small trained demo run for the tests of the forms a run is served in.

`train_tiny_run(root)` trains one into a folder of the caller's;
`shared_tiny_run(tmp_path_factory)` gives every test module of the session
the same one, trained once (for tests that only read the run folder).
"""

import fcntl
import os
from pathlib import Path

from radcap.config import preset
from radcap.data.demo import make_demo
from radcap.data.layouts import load_demo
from radcap.train import train


def tiny_config():
    """The tiny run's config: 20 demo images, attention, 2 epochs, small sizes."""
    return preset(
        "demo",
        name="tiny",
        demo_size=20,
        attention=True,
        epochs=2,
        early_stopping=0,
        units=32,
        embed_dim=16,
        attention_units=16,
        extract_batch_size=2,  # VGG16 runs on whole batches: few images
    )


def train_tiny_run(root: Path):
    """A trained attention run in `root`: 20 demo images, 2 epochs.

    Returns:
        `(run_dir, dataset)`.
    """
    make_demo(root / "data/demo", n=20, seed=0)
    config = tiny_config()
    dataset = load_demo(root / "data/demo")
    train(config, dataset, root, verbose=False)
    return config.run_dir(root), dataset


def shared_tiny_run(tmp_path_factory):
    """`train_tiny_run`'s run, trained once per test session: only read it.

    The first test module to ask trains it (about 20 CPU-seconds: VGG16 over
    17 images, 2 epochs); every other one, on any pytest-xdist worker, waits
    for it under a file lock and loads it. A test that writes into a run
    folder (resumes it, damages a file) copies it first, or trains its own
    with `train_tiny_run`.

    Args:
        tmp_path_factory: pytest's fixture (its base folder is the session's).

    Returns:
        `(run_dir, dataset)`; `run_dir.parents[1]` is the run's root.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the session's workers
    root = base / "shared-tiny-run"
    with open(base / "shared-tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = root / "trained"
        if done.exists():
            return tiny_config().run_dir(root), load_demo(root / "data/demo")
        root.mkdir(exist_ok=True)
        run_dir, dataset = train_tiny_run(root)
        done.write_text("")
        return run_dir, dataset
