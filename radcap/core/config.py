"""One flat configuration for every radcap step, with the `demo` and `roco` presets.

Every other stage reads its knobs and its shared constants (splits, sources,
presets) from here. Each field's type is said once, in its annotation (the
validation reads it), and its stage once, in `STAGES`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

from radcap import __version__
from radcap.core.files import read_json, write_text
from radcap.core.versions import VERSION_KEY, upgrade

SPLITS = ("train", "validation", "test")
# Percent of images per split when a source has no splits of its own (and the demo).
SPLIT_PERCENT = (("train", 70), ("validation", 15), ("test", 15))
SOURCES = ("demo", "csv", "roco", "rocov2", "iu_xray", "coco")
SCORINGS = ("coco", "imageclef")  # see radcap.evaluation.metrics
GRID_LAYERS = ("block5_pool", "block5_conv3")
CELLS = ("lstm", "gru")
DECODERS = ("merge", "transformer")
# Training precision: "auto" is mixed_float16 on a GPU that has float16
# units, mixed_bfloat16 on a TPU, float32 elsewhere (radcap.core.devices).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
# Training devices: "auto" is a TPU, else every GPU when there are two or
# more, else one device (radcap.core.devices).
STRATEGIES = ("auto", "tpu", "mirrored", "none")
# XLA for training; "auto" is Keras' choice: on a GPU, off on a CPU.
JIT_COMPILES = ("auto", "on", "off")
# No n-gram of this length is generated twice in a caption (radcap.decoding.search).
NO_REPEAT_NGRAM = 3
# Removed fields that could hold one value; an old config.json with it loads.
_RETIRED = {"backbone": "vgg16", "layer": "fc2", "image_size": 224}
# A run name is a folder name: letters, digits, ".", "_", "-", not "." or "..".
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
CONFIG_FILE = "config.json"  # in every run folder (see radcap.models.runs)
# Integer fields are positive, except these, where 0 means "off" (or is a seed).
_ZERO_ALLOWED = ("early_stopping", "lr_patience", "seed", "no_repeat_ngram")
# The stage that reads each field, declared once (`Config.by_stage`, `--set`'s
# help). The fields stay flat, as config.json and `--set key=value` always were.
STAGES = {
    "run": "name seed",
    "data": "dataset source data_dir caption_file include_nonradiology"
    " report_fields projection demo_size demo_findings dicom_frame",
    "features": "features_dir weights grid_layer extract_batch_size",
    "model": "decoder attention min_count max_len embed_dim units attention_units"
    " heads decoder_layers dropout cell",
    "training": "checkpoints_dir batch_size epochs learning_rate early_stopping"
    " lr_patience lr_factor precision strategy jit_compile",
    "decoding": "beam length_penalty no_repeat_ngram allow_unk",
    "retrieval": "retrieval_dim",
}
STAGE_OF = {field: stage for stage, names in STAGES.items() for field in names.split()}


@dataclasses.dataclass
class Config:
    """Every knob of a radcap run.

    A `Config` is saved as `config.json` in the run folder and read back with
    `Config.load`, so a run folder always says how it was made.

    Attributes:
        name: Run name; the run folder is `checkpoints_dir/name`.
        dataset: Dataset name; raw data lives in `data_dir/dataset`.
        source: Loader: `"demo"`, `"csv"`, `"roco"`, `"rocov2"`, `"iu_xray"` or
            `"coco"` (see `radcap.data.load`).
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
        demo_findings: Findings per demo image: 1 (the demo) or 2 (the hard
            demo: an upper and a lower lesion; see `radcap.data.demo`).
        weights: `"imagenet"`, `None` (random, for offline smoke runs) or a path
            to a weights `.h5` file.
        decoder: `"merge"` (the LSTM merge decoder, with Bahdanau attention
            when `attention` is on) or `"transformer"` (causal self-attention
            and cross-attention over the grid; see `radcap.models.transformer`).
        attention: Add Bahdanau attention over the backbone's spatial grid
            (merge decoder; the transformer always attends).
        grid_layer: Grid layer for attention, `"block5_pool"` (7x7x512) or
            `"block5_conv3"` (14x14x512).
        min_count: Words seen fewer times in the train split become `<unk>`.
        max_len: Most words kept per caption (without `<start>`/`<end>`).
        embed_dim: Word embedding size.
        units: Recurrent units, also the size of the merged image projection;
            for the transformer, its width (feed-forward: twice as wide).
        heads: Attention heads of the transformer (they split `units`).
        decoder_layers: Transformer blocks.
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
        no_repeat_ngram: Greedy and beam search never repeat an n-gram of
            this length within a caption; 0 turns it off.
        allow_unk: Let the searches write `<unk>` (for research: how often
            the model would); by default they never do.
        retrieval_dim: Width of the dual encoder's shared embedding (`dual.py`).
        extract_batch_size: Images per forward pass in feature extraction.
        dicom_frame: The frame read from a multi-frame DICOM file: `"middle"`,
            `"first"`, `"last"` or a frame number (1 is the first).
        precision: Training precision, one of `PRECISIONS`: the mixed ones
            compute in 16 bits (float32 weights and logits); `auto` picks.
        strategy: Training devices, one of `STRATEGIES`; `batch_size` is the
            global batch, split across the replicas.
        jit_compile: XLA for training, one of `JIT_COMPILES`.
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
    demo_findings: int = 1
    weights: str | None = "imagenet"
    decoder: str = "merge"
    attention: bool = False
    grid_layer: str = "block5_pool"
    min_count: int = 1
    max_len: int = 40
    embed_dim: int = 256
    units: int = 512
    attention_units: int = 256
    heads: int = 4
    decoder_layers: int = 2
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
    no_repeat_ngram: int = NO_REPEAT_NGRAM
    allow_unk: bool = False
    retrieval_dim: int = 128
    extract_batch_size: int = 32
    dicom_frame: int | str = "middle"
    precision: str = "float32"
    strategy: str = "auto"
    jit_compile: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if self.strategy is None:  # `--set strategy=none` reads as None
            self.strategy = "none"
        self._check_types()
        self._check_values()

    def _fail(self, field: str, allowed: str):
        value = getattr(self, field)
        raise ValueError(f"Config.{field}={value!r} is invalid: expected {allowed}.")

    def _check_types(self) -> None:
        """Check every field against its annotation (the one place types are said)."""
        for field, kind in typing.get_type_hints(type(self)).items():
            value = getattr(self, field)
            allowed = typing.get_args(kind) or (kind,)
            expected = _describe(allowed)
            if kind is int:  # a count: positive, or >= 0 where 0 means "off"
                low = 0 if field in _ZERO_ALLOWED else 1
                expected = "an integer >= 0" if low == 0 else "a positive integer"
            # An annotation is the only place a type is said; a float takes ints.
            accepted = tuple((int, float) if t is float else t for t in allowed)
            if not isinstance(value, accepted) or (
                isinstance(value, bool) and bool not in allowed
            ):
                self._fail(field, expected)
            if isinstance(value, float) and not math.isfinite(value):
                self._fail(field, "a finite number")
            if kind is int and value < low:
                self._fail(field, expected)

    def _check_values(self) -> None:
        checks = [
            (self.source in SOURCES, "source", f"one of {SOURCES}"),
            (self.grid_layer in GRID_LAYERS, "grid_layer", f"one of {GRID_LAYERS}"),
            (self.cell in CELLS, "cell", f"one of {CELLS}"),
            (self.decoder in DECODERS, "decoder", f"one of {DECODERS}"),
            (self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
            (self.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}"),
            (self.jit_compile in JIT_COMPILES, "jit_compile", f"one of {JIT_COMPILES}"),
            (self.demo_findings in (1, 2), "demo_findings", "1 or 2"),
            (
                self.decoder != "transformer" or self.units % self.heads == 0,
                "heads",
                f"a divisor of units={self.units} (the heads split the width)",
            ),
            (
                self.projection in (None, "frontal", "lateral"),
                "projection",
                "'frontal', 'lateral' or None (both)",
            ),
            (
                isinstance(self.report_fields, str)
                and all(f.strip() for f in self.report_fields.split(",")),
                "report_fields",
                "report columns separated by commas, e.g. 'findings,impression'",
            ),
            (0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)"),
            (self.learning_rate > 0, "learning_rate", "a positive number"),
            (0 < self.lr_factor < 1, "lr_factor", "a number in (0, 1)"),
            (self.length_penalty >= 0, "length_penalty", "a number >= 0"),
            (
                self.dicom_frame in ("middle", "first", "last")
                or (type(self.dicom_frame) is int and self.dicom_frame >= 1),
                "dicom_frame",
                "'middle', 'first', 'last' or a frame number (1 is the first)",
            ),
            (
                _RUN_NAME.fullmatch(self.name) is not None
                and self.name not in (".", ".."),
                "name",
                "a folder name of letters, digits, '.', '_' and '-' (not '.' or "
                "'..'); runs live in checkpoints_dir",
            ),
        ]
        for ok, field, allowed in checks:
            if not ok:
                self._fail(field, allowed)

    @classmethod
    def by_stage(cls) -> dict[str, list[str]]:
        """The field names of each stage, in declaration order (see `STAGES`)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return {stage: [n for n in names if STAGE_OF[n] == stage] for stage in STAGES}

    @property
    def uses_grid(self) -> bool:
        """Whether the decoder attends over grid features (attention or transformer)."""
        return self.attention or self.decoder == "transformer"

    def run_dir(self, root: str | Path = ".") -> Path:
        """The run folder `checkpoints_dir/name` (relative paths start at `root`)."""
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
        """Write the config as JSON (atomically: never half-written).

        The file also records this radcap's version, so that a later radcap
        knows what the fields it lacks meant (`radcap.core.versions`).
        """
        import json

        values = {VERSION_KEY: __version__, **self.to_dict()}
        write_text(path, json.dumps(values, indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """A config from a dict of fields; unknown fields are refused.

        A dict that names the radcap that wrote it (a saved config.json)
        is read as `load` reads it.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        if VERSION_KEY in values:
            values = upgrade(values, known, "the config")
        values = {
            k: v for k, v in values.items() if not (k in _RETIRED and v == _RETIRED[k])
        }
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
            path = path / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"No config at {path}: a radcap run folder?")
        values = read_json(path, "config")
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds no config (a JSON object of fields).")
        # Older files get their missing fields' old values (radcap.core.versions).
        values = upgrade(values, {f.name for f in dataclasses.fields(cls)}, path)
        return cls.from_dict(values)


# Each preset as its differences from `Config`'s defaults (the name is
# `preset`'s rule); `hard` is the demo's differences plus its own.
_DEMO = dict(
    weights=None,  # random: offline in minutes on two cores
    demo_size=360,
    max_len=20,
    embed_dim=64,
    units=256,
    attention_units=128,
    batch_size=32,
    epochs=40,
    learning_rate=2e-3,
    early_stopping=8,
)
_PRESETS = {
    "demo": _DEMO,
    "hard": {
        **_DEMO,
        "dataset": "demo-hard",
        "demo_findings": 2,
        "demo_size": 600,  # two findings per image: more images to learn them
        "max_len": 24,
    },
    "roco": dict(
        dataset="roco",
        source="roco",
        min_count=5,
        max_len=60,
        early_stopping=4,
        lr_patience=2,
        precision="auto",
    ),
}
PRESETS = tuple(_PRESETS)

_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_WORDS[type(None)] = "None"


def _describe(kinds: tuple[type, ...]) -> str:
    """`(str, NoneType)` as "a string or None", for error messages."""
    return " or ".join(_WORDS[kind] for kind in kinds)


def preset(kind: str, /, name: str | None = None, **overrides) -> Config:
    """A ready configuration.

    The run is named after the preset (`demo`), with `-attention` added when
    attention is on (`demo-attention`) and `-transformer` for the
    transformer decoder (`demo-transformer`), unless `name` says otherwise:
    the one naming rule that the CLI and the notebooks share.

    Args:
        kind: `"demo"`: the synthetic dataset with random VGG16 weights and a
            small decoder; runs offline on 2 CPU cores in minutes.
            `"hard"`: the hard demo, two findings per image named in reading
            order, some combinations seen only in the test split.
            `"roco"`: ROCO with ImageNet weights and sizes for ~65k captions.
        name: Run name; None for the rule above.
        **overrides: Fields to change on top of the preset.
    """
    if kind not in _PRESETS:
        raise ValueError(f"Unknown preset {kind!r}; choose one of {sorted(_PRESETS)}.")
    if name is None:
        name = kind
        if overrides.get("decoder", "merge") != "merge":
            name += f"-{overrides['decoder']}"
        elif overrides.get("attention"):
            name += "-attention"
    return Config(**{**_PRESETS[kind], **overrides, "name": name})
