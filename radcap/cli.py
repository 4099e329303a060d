"""The `radcap` command: the notebook steps from a shell.

radcap demo [--run NAME] [--attention]     the whole pipeline on the synthetic demo
radcap extract --preset roco               cache VGG16 features of every split
radcap train --preset roco --run roco-1    train into checkpoints/roco-1
radcap evaluate --run roco-1               metrics.json and report.md (test split)
radcap caption --run roco-1 scan.png       one caption per image
radcap download roco --dest data/roco      fetch ROCO from Kaggle
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from radcap.config import Config, preset

SPLITS = ("train", "validation", "test")


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
    config = Config.load(args.config) if args.config else preset(args.preset)
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
    if getattr(args, "run", None):
        changes["name"] = args.run
    elif changes.get("attention") and not args.config:
        changes["name"] = f"{config.name}-attention"
    return config.replace(**changes) if changes else config


def run_path(run: str, root: str) -> Path:
    """`--run` as given if it is a folder, else `root/checkpoints/<run>`."""
    path = Path(run)
    return path if path.is_dir() else Path(root) / "checkpoints" / run


def _add_config_args(p, run_help="Run name: the folder under checkpoints/."):
    p.add_argument(
        "--preset",
        default="demo",
        choices=("demo", "roco"),
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
        "--root",
        default=".",
        help="Folder that data/, features/ and "
        "checkpoints/ live in (default: the current folder).",
    )


def cmd_extract(args) -> int:
    from radcap import datasets
    from radcap.features import Extractor, extract

    config = config_from_args(args)
    dataset = datasets.load(config, args.root)
    extractor = None
    for split in args.split or SPLITS:
        images = dataset.images(split)
        if len(images) == 0:
            print(f"{split}: no images")
            continue
        extractor = extractor or Extractor(config)
        started = time.perf_counter()
        cached = extract(config, images, split, args.root, extractor=extractor)
        f = cached[config.layer]
        print(
            f"{split}: {len(f.ids)} images, {len(f.skipped)} unreadable, "
            f"{time.perf_counter() - started:.0f} s"
        )
    return 0


def cmd_train(args) -> int:
    from radcap.train import train

    config = config_from_args(args)
    train(config, root=args.root)
    return 0


def cmd_evaluate(args) -> int:
    from radcap.evaluate import compare_runs, evaluate, markdown_table

    run_dirs = [run_path(run, args.root) for run in args.run]
    for run_dir in run_dirs:
        evaluate(
            run_dir,
            root=args.root,
            split=args.split,
            beams=args.beam,
            scoring=args.scoring,
            controls=not args.no_controls,
        )
    if len(run_dirs) > 1:
        table = compare_runs(run_dirs)
        path = run_dirs[0].parent / "comparison.md"
        path.write_text(
            f"# {', '.join(d.name for d in run_dirs)} on the {args.split} split\n\n"
            + markdown_table(table)
            + "\n"
        )
        print(f"\n{table.to_string(float_format=lambda x: f'{x:.3f}')}")
        print(f"Wrote {path}")
    return 0


def cmd_caption(args) -> int:
    from radcap.decode import Captioner

    captioner = Captioner.load(run_path(args.run, args.root))
    paths = []
    for image in args.images:
        p = Path(image)
        paths += sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    if not paths:
        raise ValueError(f"No image files in {', '.join(args.images)}.")
    status = 0
    for path, text in zip(
        paths, captioner.caption(paths, beam=args.beam, return_attention=True)
    ):
        if text["error"]:
            print(f"{path}\tERROR: {text['error']}")
            status = 1
        else:
            print(f"{path}\t{text['caption']}")
    return status


def cmd_demo(args) -> int:
    from radcap.evaluate import evaluate
    from radcap.train import train

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
    import pandas as pd

    samples = pd.read_csv(run_dir / "captions_test.csv").head(args.samples)
    print("\nSample captions (test split):")
    for row in samples.itertuples():
        print(f"  reference: {row.references}\n  generated: {row.greedy}\n")
    print(
        f"BLEU-4 {metrics['BLEU-4']:.3f}, CIDEr {metrics['CIDEr']:.3f}; run folder "
        f"{run_dir}; total {time.perf_counter() - started:.0f} s"
    )
    return 0


def cmd_download(args) -> int:
    from radcap.download import download_roco

    path = download_roco(args.dest, force=args.force)
    print(f"ROCO is in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radcap",
        description="Radiology image captioning: VGG16 features, a "
        "merge LSTM decoder, beam search and caption metrics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="Generate the synthetic demo, extract, train, "
        "evaluate; print metrics and sample captions.",
    )
    _add_config_args(p, "Run name (default: demo, or demo-attention with --attention).")
    p.add_argument(
        "--size", type=int, help="Number of demo images (default: the preset's 600)."
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
        choices=("coco", "imageclef"),
        help="coco: the COCO caption toolkit (default); imageclef: numbers as "
        "'number', punctuation removed, scores averaged per caption.",
    )
    p.add_argument(
        "--no-controls", action="store_true", help="Skip the black/white/noise images."
    )
    p.add_argument("--root", default=".", help="Folder the run's paths start from.")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("caption", help="Caption image files with a trained run.")
    p.add_argument("--run", required=True, help="Run folder or run name.")
    p.add_argument("images", nargs="+", help="Image files or folders of images.")
    p.add_argument(
        "--beam", type=int, default=1, help="Beam width (default 1: greedy)."
    )
    p.add_argument("--root", default=".", help="Folder that checkpoints/ is in.")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("download", help="Download a dataset (needs the internet).")
    p.add_argument("dataset", choices=("roco",))
    p.add_argument("--dest", default="data/roco", help="Target folder.")
    p.add_argument("--force", action="store_true", help="Download again.")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv=None) -> int:
    """Entry point of the `radcap` command; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from radcap.decode import RunError
    from radcap.features import FeatureCacheError, WeightsError
    from radcap.images import ImageError

    known = (
        ValueError,
        RunError,
        FeatureCacheError,
        WeightsError,
        ImageError,
        FileNotFoundError,
    )
    try:
        from radcap.download import DownloadError

        known += (DownloadError,)
    except ImportError:
        pass
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
