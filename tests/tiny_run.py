"""A small trained demo run for the tests of the forms a run is served in.

`train_tiny_run(root)` trains one into a folder of the caller's;
`shared_tiny_run(tmp_path_factory)` gives every test module of the session
the same one, trained once (for tests that only read the run folder).
"""

import fcntl
import os
from pathlib import Path

from radcap.core.config import preset
from radcap.data.demo import make_demo
from radcap.data.layouts import load_demo
from radcap.training.train import train


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


def untrained_run(root: Path, name: str = "untrained") -> Path:
    """A complete run folder in `root` with an untrained captioner (no training).

    Returns:
        The run folder.
    """
    import keras

    from radcap.core.text import Vocabulary
    from radcap.models import runs
    from radcap.models.merge import build_captioner

    config = preset("demo", name=name, units=16, embed_dim=8)
    folder = config.run_dir(root)
    folder.mkdir(parents=True)
    config.save(folder / runs.CONFIG)
    vocab = Vocabulary.build(["a small nodule", "a large cyst"])
    vocab.save(folder / runs.VOCAB)
    keras.utils.set_random_seed(0)
    build_captioner(config, vocab.size).save(folder / runs.MODEL)
    return folder


def tiny_backbone(config, layers=None, side: int = 1):
    """A stand-in for VGG16 with its outputs' shapes and 30,000 weights, not 138 M.

    What the export does around the backbone (tracing, writing, moving into
    place) does not depend on VGG16's weights, which would make every export
    in a test over 500 MB.

    Its features are linear in the image's mean colour: 3 numbers. With
    `side` > 1 they are linear in the means of `side` x `side` squares (and
    the weights `side`² times as many), for a test that needs images told
    apart by more than their colour.
    """
    import keras
    import numpy as np

    from radcap.features.backbone import FEATURE_SHAPES, IMAGE_SIZE, layers_for

    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    if side > 1:
        squares = keras.layers.AveragePooling2D(IMAGE_SIZE // side)(images)
        pooled = keras.layers.Flatten()(squares)  # (batch, side * side * 3)
    else:
        pooled = keras.layers.GlobalAveragePooling2D()(images)  # (batch, 3)
    outputs = []
    for name in layers or layers_for(config):
        # Seeded per layer, as VGG16 by `config.seed`: every process draws the
        # same weights (a resumed extraction matches an uninterrupted one), and
        # a layer's weights do not depend on which other layers are built.
        seed = config.seed * len(FEATURE_SHAPES) + list(FEATURE_SHAPES).index(name)
        dense = keras.layers.Dense(
            int(np.prod(FEATURE_SHAPES[name])),
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            bias_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=seed),
        )
        outputs.append(keras.layers.Reshape(FEATURE_SHAPES[name])(dense(pooled)))
    model = keras.Model(images, outputs)
    model.trainable = False
    return model


def use_tiny_backbone() -> None:
    """Make this process build `tiny_backbone` wherever radcap builds VGG16.

    For a forked or fresh `radcap` process (`TINY_RADCAP`); in-process tests
    use `patch_tiny_backbone` instead.
    """
    import radcap.features.backbone
    import radcap.serving.export

    radcap.features.backbone.build_backbone = tiny_backbone
    radcap.serving.export.build_backbone = tiny_backbone
    radcap.features.backbone._shared.clear()


def patch_tiny_backbone(monkeypatch, side: int = 1) -> None:
    """`use_tiny_backbone` for one test (pytest's `monkeypatch` undoes it);
    `side` as `tiny_backbone` takes it."""
    import functools

    import radcap.features.backbone
    import radcap.serving.export

    build = functools.partial(tiny_backbone, side=side)
    monkeypatch.setattr(radcap.features.backbone, "build_backbone", build)
    monkeypatch.setattr(radcap.serving.export, "build_backbone", build)
    monkeypatch.setattr(radcap.features.backbone, "_shared", {})


# `python -c TINY_RADCAP *args` is `python -m radcap *args` with the tiny
# backbone; tests/forked.py forks it as it forks `-m radcap`.
TINY_RADCAP = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tiny_run import use_tiny_backbone
use_tiny_backbone()
from radcap.cli import main
raise SystemExit(main())
"""


def tiny_command(*args: str) -> list[str]:
    """`[python, -m, radcap, *args]` with the tiny backbone (`TINY_RADCAP`)."""
    import sys

    return [sys.executable, "-c", TINY_RADCAP, *map(str, args)]


# `radcap` commands, one after another in one interpreter, with the tiny
# backbone; after each, "exit <status>" on stdout and stderr.
_RADCAP = """
import sys
sys.path.insert(0, sys.argv[1])
import radcap.serving.export
from radcap.cli import main
from tiny_run import tiny_backbone
radcap.serving.export.build_backbone = tiny_backbone
command = []
for word in sys.argv[2:] + ["+"]:
    if word != "+":
        command.append(word)
        continue
    status = main(command)
    print(f"exit {status}", flush=True)
    print(f"exit {status}", file=sys.stderr, flush=True)
    command = []
"""


def radcap_tiny(*args: str, kill_at: str | None = None):
    """Run `radcap` commands (separated by "+") in a real process, tiny backbone.

    The process is forked from the warm interpreter (tests/forked.py).

    Returns:
        The `subprocess.CompletedProcess`.
    """
    import os

    from forked import shared

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("RADCAP_KILL_AT", None)
    if kill_at:
        env["RADCAP_KILL_AT"] = kill_at
    here = str(Path(__file__).parent)
    return shared().run([here, *args], env=env, timeout=300, code=_RADCAP)


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
