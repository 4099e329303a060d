"""One flat configuration for every radcap step, with the `demo` and `roco` presets."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

BACKBONES = ("vgg16",)
LAYERS = ("fc2",)
GRID_LAYERS = ("block5_pool", "block5_conv3")
CELLS = ("lstm", "gru")
SOURCES = ("demo", "csv", "roco", "rocov2", "iu_xray", "coco")


@dataclasses.dataclass
class Config:
    """Every knob of a radcap run.

    A `Config` is saved as `config.json` in the run folder and read back with
    `Config.load`, so a run folder always says how it was made.

    Attributes:
        name: Run name; the run folder is `checkpoints_dir/name`.
        dataset: Dataset name; raw data lives in `data_dir/dataset`.
        source: Loader: `"demo"`, `"csv"`, `"roco"`, `"rocov2"`, `"iu_xray"` or
            `"coco"` (see `radcap.datasets.load`).
        data_dir: Folder of raw datasets.
        features_dir: Folder of feature caches.
        checkpoints_dir: Folder of run folders.
        caption_file: For `source="csv"`: the CSV path (relative to the dataset
            folder); for `"coco"`: the captions JSON.
        include_nonradiology: For ROCO: also read the `non-radiology` folders.
        report_fields: For IU X-ray: the report columns that make the caption,
            comma-separated, in order (e.g. `"findings,impression"`).
        projection: For IU X-ray: keep `"frontal"` or `"lateral"` images, or
            None for both.
        demo_size: Number of images the demo generator makes.
        image_size: Side of the square backbone input, in pixels.
        backbone: Image encoder; only `"vgg16"`.
        weights: `"imagenet"`, `None` (random, for offline smoke runs) or a path
            to a weights `.h5` file.
        layer: Backbone layer whose output is cached, `"fc2"` (4096-d).
        attention: Add Bahdanau attention over the backbone's spatial grid.
        grid_layer: Grid layer for attention, `"block5_pool"` (7x7x512) or
            `"block5_conv3"` (14x14x512).
        min_count: Words seen fewer times in the train split become `<unk>`.
        max_len: Most words kept per caption (without `<start>`/`<end>`).
        embed_dim: Word embedding size.
        units: Recurrent units, also the size of the merged image projection.
        attention_units: Hidden size of the attention scorer.
        dropout: Dropout on embeddings, image projection and merge output.
        cell: Recurrent cell, `"lstm"` or `"gru"`.
        batch_size: Captions per training batch.
        epochs: Most training epochs.
        learning_rate: Adam learning rate.
        early_stopping: Stop after this many epochs without a better
            validation loss; 0 turns early stopping off.
        lr_patience: Multiply the learning rate by `lr_factor` after this many
            epochs without a better validation loss; 0 turns it off.
        lr_factor: The learning rate's factor on a plateau, in (0, 1).
        beam: Beam width used for evaluation beside greedy; 1 means greedy only.
        length_penalty: Beam score is log-probability / length**length_penalty.
        extract_batch_size: Images per forward pass in feature extraction.
        seed: Seed for the demo generator, splits, shuffling and weight init.
    """

    name: str = "demo"
    dataset: str = "demo"
    source: str = "demo"
    data_dir: str = "data"
    features_dir: str = "features"
    checkpoints_dir: str = "checkpoints"
    caption_file: str = "captions.csv"
    include_nonradiology: bool = False
    report_fields: str = "findings,impression"
    projection: str | None = "frontal"
    demo_size: int = 500
    image_size: int = 224
    backbone: str = "vgg16"
    weights: str | None = "imagenet"
    layer: str = "fc2"
    attention: bool = False
    grid_layer: str = "block5_pool"
    min_count: int = 1
    max_len: int = 40
    embed_dim: int = 256
    units: int = 512
    attention_units: int = 256
    dropout: float = 0.3
    cell: str = "lstm"
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    early_stopping: int = 5
    lr_patience: int = 3
    lr_factor: float = 0.5
    beam: int = 3
    length_penalty: float = 0.7
    extract_batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        def check(ok, field, allowed):
            if not ok:
                value = getattr(self, field)
                raise ValueError(
                    f"Config.{field}={value!r} is invalid: expected {allowed}."
                )

        check(self.source in SOURCES, "source", f"one of {SOURCES}")
        check(self.backbone in BACKBONES, "backbone", f"one of {BACKBONES}")
        check(self.layer in LAYERS, "layer", f"one of {LAYERS}")
        check(self.grid_layer in GRID_LAYERS, "grid_layer", f"one of {GRID_LAYERS}")
        check(self.cell in CELLS, "cell", f"one of {CELLS}")
        check(
            self.weights is None or isinstance(self.weights, str),
            "weights",
            "'imagenet', None or a path to a weights file",
        )
        check(self.image_size == 224, "image_size", "224 (VGG16's fc layers need it)")
        for field in (
            "demo_size",
            "min_count",
            "max_len",
            "embed_dim",
            "units",
            "attention_units",
            "batch_size",
            "epochs",
            "beam",
            "extract_batch_size",
        ):
            value = getattr(self, field)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                field,
                "a positive integer",
            )
        for field in ("early_stopping", "lr_patience"):
            value = getattr(self, field)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                field,
                "an integer >= 0 (0 turns it off)",
            )
        for field in ("attention", "include_nonradiology"):
            check(isinstance(getattr(self, field), bool), field, "true or false")
        check(
            self.projection in (None, "frontal", "lateral"),
            "projection",
            "'frontal', 'lateral' or None (both)",
        )
        check(
            isinstance(self.report_fields, str)
            and all(f.strip() for f in self.report_fields.split(",")),
            "report_fields",
            "report columns separated by commas, e.g. 'findings,impression'",
        )
        for field in ("dropout", "learning_rate", "length_penalty", "lr_factor"):
            value = getattr(self, field)
            check(
                isinstance(value, (int, float)) and not isinstance(value, bool),
                field,
                "a number",
            )
        check(0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)")
        check(self.learning_rate > 0, "learning_rate", "a positive number")
        check(0 < self.lr_factor < 1, "lr_factor", "a number in (0, 1)")
        check(self.length_penalty >= 0, "length_penalty", "a number >= 0")
        for field in (
            "name",
            "dataset",
            "data_dir",
            "features_dir",
            "checkpoints_dir",
            "caption_file",
        ):
            check(isinstance(getattr(self, field), str), field, "a string")
        check(
            isinstance(self.name, str) and self.name and "/" not in self.name,
            "name",
            "a non-empty folder name without '/'",
        )

    # Derived paths; relative paths are taken from `root`.
    def run_dir(self, root: str | Path = ".") -> Path:
        """The run folder `checkpoints_dir/name`."""
        return Path(root) / self.checkpoints_dir / self.name

    def dataset_dir(self, root: str | Path = ".") -> Path:
        """The raw data folder `data_dir/dataset`."""
        return Path(root) / self.data_dir / self.dataset

    def replace(self, **changes) -> Config:
        """A copy with some fields changed, validated again."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"Config has no field(s) {sorted(unknown)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """A config from a dict of fields; unknown fields are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {sorted(unknown)}; "
                f"known fields: {sorted(known)}."
            )
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a config written by `save` (a file or a run folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"No config at {path}: is this a radcap run folder?"
            )
        return cls.from_dict(json.loads(path.read_text()))


def workdir(folder: str | Path | None = None) -> Path:
    """The folder that a notebook's data/, features/ and checkpoints/ go in.

    In order: the `RADCAP_WORKDIR` environment variable (tests and CI point
    it at a temporary folder); `folder` when given; the repository's root
    when the current folder is the `notebooks/` folder of a clone (so a local
    Jupyter writes where the command-line tools do); else the current folder
    (Colab's /content, Kaggle's /kaggle/working). The folder is created.
    """
    if os.environ.get("RADCAP_WORKDIR"):
        path = Path(os.environ["RADCAP_WORKDIR"])
    elif folder is not None:
        path = Path(folder)
    elif Path.cwd().name == "notebooks" and (Path.cwd().parent / "radcap").is_dir():
        path = Path.cwd().parent
    else:
        path = Path(".")
    path.mkdir(parents=True, exist_ok=True)
    return path


def preset(kind: str, /, **overrides) -> Config:
    """A ready configuration.

    Args:
        kind: `"demo"`: the synthetic dataset with random VGG16 weights and a
            small decoder; runs offline on 2 CPU cores in minutes.
            `"roco"`: ROCO with ImageNet weights and sizes for ~65k captions.
        **overrides: Fields to change on top of the preset.
    """
    presets = {
        "demo": dict(
            name="demo",
            dataset="demo",
            source="demo",
            weights=None,
            demo_size=600,
            min_count=1,
            max_len=20,
            embed_dim=64,
            units=256,
            attention_units=128,
            dropout=0.3,
            batch_size=32,
            epochs=40,
            learning_rate=2e-3,
            early_stopping=8,
            beam=3,
        ),
        "roco": dict(
            name="roco",
            dataset="roco",
            source="roco",
            weights="imagenet",
            min_count=5,
            max_len=60,
            embed_dim=256,
            units=512,
            attention_units=256,
            dropout=0.3,
            batch_size=64,
            epochs=20,
            learning_rate=1e-3,
            early_stopping=4,
            lr_patience=2,
            beam=3,
        ),
    }
    if kind not in presets:
        raise ValueError(f"Unknown preset {kind!r}; choose one of {sorted(presets)}.")
    return Config(**{**presets[kind], **overrides})
