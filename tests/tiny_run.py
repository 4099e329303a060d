"""A small trained demo run for the tests of the forms a run is served in."""

from pathlib import Path

from radcap.config import preset
from radcap.data.demo import make_demo
from radcap.data.layouts import load_demo
from radcap.train import train


def train_tiny_run(root: Path):
    """A trained attention run in `root`: 20 demo images, 2 epochs.

    Returns:
        `(run_dir, dataset)`.
    """
    make_demo(root / "data/demo", n=20, seed=0)
    config = preset(
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
    dataset = load_demo(root / "data/demo")
    train(config, dataset, root, verbose=False)
    return config.run_dir(root), dataset
