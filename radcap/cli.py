"""The `radcap` command: the notebook steps from a shell.

radcap demo [--run NAME] [--attention]     the whole pipeline on the synthetic demo
radcap demo --hard --decoder transformer   the hard demo with the transformer decoder
radcap extract --preset roco               cache VGG16 features of every split
radcap train --preset roco --run roco-1    train into checkpoints/roco-1
radcap evaluate --run roco-1               metrics.json and report.md (test split)
radcap caption --run roco-1 scan.png       one caption per image (flags unfamiliar ones)
radcap familiarity --run roco-1            add the familiarity reference to an old run
radcap download roco --dest data/roco      fetch ROCO from Kaggle

Stage: the top. Each command is a few calls into the library. TensorFlow is
imported only when a command needs it (training imports it with
`radcap.train`), so `radcap --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from radcap import runs
from radcap.backbone import LAYER, WeightsError, shared_extractor
from radcap.captioner import Captioner
from radcap.config import DECODERS, PRESETS, SCORINGS, SPLITS, Config, preset
from radcap.data import load
from radcap.data.download import DownloadError, download_roco
from radcap.evaluation import compare_runs, evaluate, write_comparison
from radcap.features import FeatureCacheError, extract
from radcap.files import DiskFullError, LockError
from radcap.images import ImageError
from radcap.runs import RunError

_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _parse_value(text: str):
    """A `--set` value: true/false/none in any case, a JSON value, else the text."""
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from_args(args) -> Config:
    """The config named by --config or --preset, with --set and --run applied."""
    changes = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=5."
            )
        changes[key] = _parse_value(value)
    if getattr(args, "attention", False):
        changes["attention"] = True
    if getattr(args, "decoder", None):
        changes["decoder"] = args.decoder
    if getattr(args, "hard", False):
        args.preset = "hard"
    if getattr(args, "run", None):
        changes["name"] = args.run
    if args.config:
        config = Config.load(args.config)
        return config.replace(**changes) if changes else config
    name = changes.pop("name", None)
    unknown = set(changes) - set(Config.__dataclass_fields__)
    if unknown:
        raise ValueError(f"Config has no field(s) {sorted(unknown)}.")
    return preset(args.preset, name=name, **changes)


def _skip_summary(dataset) -> None:
    """Print the loader's skip report as counts per reason, and where it is."""
    if len(dataset.skipped):
        counts = dataset.skipped["reason"].value_counts()
        print(f"{len(dataset.skipped)} rows of the dataset were skipped:")
        for reason, n in counts.items():
            print(f"  {n:>7}  {reason}")
        print(
            "  (the full list: radcap.data.load(config).skipped, or notebook 01's "
            "skipped.csv)"
        )


def _add_config_args(p, run_help="Run name: the folder under checkpoints/."):
    p.add_argument(
        "--preset",
        default="demo",
        choices=PRESETS,
        help="Starting configuration (default: demo).",
    )
    p.add_argument("--config", help="A config.json to start from instead of a preset.")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="Change one config field, e.g. --set epochs=5 (repeatable).",
    )
    p.add_argument("--run", help=run_help)
    p.add_argument(
        "--attention",
        action="store_true",
        help="Bahdanau attention over the VGG16 grid.",
    )
    p.add_argument(
        "--decoder",
        choices=DECODERS,
        help="Decoder: the merge LSTM (default) or the transformer.",
    )
    p.add_argument(
        "--root",
        default=".",
        help="Folder that data/, features/ and "
        "checkpoints/ live in (default: the current folder).",
    )


def cmd_extract(args) -> int:

    config = config_from_args(args)
    dataset = load(config, args.root)
    _skip_summary(dataset)
    extractor = None
    for split in args.split or SPLITS:
        images = dataset.images(split)
        if len(images) == 0:
            print(f"{split}: no images")
            continue
        extractor = extractor or shared_extractor(config)
        started = time.perf_counter()
        cached = extract(config, images, split, args.root, extractor=extractor)
        f = cached[LAYER]
        print(
            f"{split}: {len(f.ids)} images, {len(f.skipped)} unreadable, "
            f"{time.perf_counter() - started:.0f} s"
        )
    return 0


def cmd_train(args) -> int:
    from radcap.train import train  # lazy: it loads TensorFlow; --help stays quick

    config = config_from_args(args)
    dataset = load(config, args.root)
    _skip_summary(dataset)
    train(config, dataset, root=args.root)
    return 0


def cmd_evaluate(args) -> int:

    run_dirs = [runs.resolve(run, args.root) for run in args.run]
    for run_dir in run_dirs:
        evaluate(
            run_dir,
            root=args.root,
            split=args.split,
            beams=args.beam,
            scoring=args.scoring,
            controls=not args.no_controls,
            meteor=False if args.no_meteor else None,
        )
    if len(run_dirs) > 1:
        path = write_comparison(run_dirs, args.split)
        table = compare_runs(run_dirs)
        print(f"\n{table.to_string(float_format=lambda x: f'{x:.3f}')}")
        print(f"Wrote {path}")
    return 0


def cmd_caption(args) -> int:
    captioner = Captioner.load(runs.resolve(args.run, args.root))
    paths = []
    for image in args.images:
        p = Path(image)
        paths += sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    if not paths:
        raise ValueError(f"No image files in {', '.join(args.images)}.")
    if captioner.familiarity_hint:
        print(f"note: {captioner.familiarity_hint}", file=sys.stderr)
    status = 0
    results = captioner.caption(
        paths,
        beam=args.beam,
        return_attention=True,
        no_repeat_ngram=args.no_repeat_ngram,
    )
    for path, result in zip(paths, results):
        if result["error"]:
            print(f"{path}\tERROR: {result['error']}")
            status = 1
            continue
        print(f"{path}\t{result['caption']}")
        if result["familiar"] is False:
            print(f"  {captioner.familiarity_note(result['familiarity'])}")
    return status


def cmd_familiarity(args) -> int:
    from radcap.train import add_familiarity  # imports TensorFlow

    add_familiarity(runs.resolve(args.run, args.root), args.root)
    return 0


def cmd_demo(args) -> int:
    from radcap.train import train  # lazy: it loads TensorFlow; --help stays quick

    started = time.perf_counter()
    config = config_from_args(args)
    if args.size:
        config = config.replace(demo_size=args.size)
    if config.source != "demo":
        raise ValueError(
            "`radcap demo` runs the demo preset; use extract/train/evaluate "
            "for other datasets."
        )
    train(config, root=args.root)
    run_dir = config.run_dir(args.root)
    metrics = evaluate(run_dir, root=args.root, split="test")
    samples = pd.read_csv(run_dir / runs.captions_file("test")).head(args.samples)
    print("\nSample captions (test split):")
    for row in samples.itertuples():
        print(f"  reference: {row.references}\n  generated: {row.greedy}\n")
    print(
        f"BLEU-4 {metrics['BLEU-4']:.3f}, CIDEr {metrics['CIDEr']:.3f}; run folder "
        f"{run_dir}; total {time.perf_counter() - started:.0f} s"
    )
    return 0


def cmd_download(args) -> int:

    path = download_roco(args.dest, force=args.force)
    print(f"ROCO is in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radcap",
        description="Radiology image captioning: VGG16 features, a "
        "merge LSTM or transformer decoder, beam search and caption metrics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="Generate the synthetic demo, extract, train, "
        "evaluate; print metrics and sample captions.",
    )
    _add_config_args(
        p,
        "Run name (default: the preset's, with -attention or -transformer added: "
        "demo, demo-attention, hard-transformer, ...).",
    )
    p.add_argument(
        "--size", type=int, help="Number of demo images (default: the preset's 600)."
    )
    p.add_argument(
        "--hard",
        action="store_true",
        help="The hard demo (the `hard` preset): two findings per image.",
    )
    p.add_argument("--samples", type=int, default=5, help="Sample captions to print.")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("extract", help="Cache VGG16 features of the dataset's splits.")
    _add_config_args(p)
    p.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        help="Only this split (repeatable; default all).",
    )
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("train", help="Train a captioner into checkpoints/<run>.")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    _add_evaluate_parser(sub)

    p = sub.add_parser("caption", help="Caption image files with a trained run.")
    p.add_argument("--run", required=True, help="Run folder or run name.")
    p.add_argument("images", nargs="+", help="Image files or folders of images.")
    p.add_argument(
        "--beam", type=int, default=1, help="Beam width (default 1: greedy)."
    )
    p.add_argument(
        "--no-repeat-ngram",
        type=int,
        help="No n-gram of this length twice in a caption; 0 turns it off "
        "(default: the run's config, 3).",
    )
    p.add_argument("--root", default=".", help="Folder that checkpoints/ is in.")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser(
        "familiarity",
        help="Compute a trained run's familiarity reference from its cached "
        "features (runs trained before radcap had it); no retraining.",
    )
    p.add_argument("--run", required=True, help="Run folder or run name.")
    p.add_argument("--root", default=".", help="Folder the run's paths start from.")
    p.set_defaults(func=cmd_familiarity)

    p = sub.add_parser("download", help="Download a dataset (needs the internet).")
    p.add_argument("dataset", choices=("roco",))
    p.add_argument("--dest", default="data/roco", help="Target folder.")
    p.add_argument("--force", action="store_true", help="Download again.")
    p.set_defaults(func=cmd_download)
    return parser


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Score a trained run; writes metrics.json.")
    p.add_argument(
        "--run",
        required=True,
        action="append",
        help="Run folder or run name; repeat it to compare runs in one table "
        "(written to comparison.md beside the first run).",
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--beam",
        type=int,
        action="append",
        help="Beam width to evaluate (repeatable; default 1 and the config's).",
    )
    p.add_argument(
        "--scoring",
        default="coco",
        choices=SCORINGS,
        help="coco: the COCO caption toolkit (default); imageclef: numbers as "
        "'number', punctuation removed, scores averaged per caption.",
    )
    p.add_argument(
        "--no-controls", action="store_true", help="Skip the black/white/noise images."
    )
    p.add_argument(
        "--no-meteor",
        action="store_true",
        help="Skip METEOR (a Java program that takes seconds to start); "
        "default: computed when Java is installed.",
    )
    p.add_argument("--root", default=".", help="Folder the run's paths start from.")
    p.set_defaults(func=cmd_evaluate)


def main(argv=None) -> int:
    """Entry point of the `radcap` command; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)

    known = (
        ValueError,
        RunError,
        FeatureCacheError,
        WeightsError,
        ImageError,
        FileNotFoundError,
        DownloadError,
        LockError,
        DiskFullError,
    )
    try:
        return args.func(args)
    except known as err:
        print(f"radcap {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nradcap {args.command}: interrupted. Run the same command again to "
            "continue where it stopped.",
            file=sys.stderr,
        )
        return 130
