"""The `radcap` command: the notebook steps from a shell.

radcap demo [--run NAME] [--attention]     the whole pipeline on the synthetic demo
radcap demo --hard --decoder transformer   the hard demo with the transformer decoder
radcap extract --preset roco               cache VGG16 features of every split
radcap train --preset roco --run roco-1    train into checkpoints/roco-1
radcap evaluate --run roco-1               metrics.json and report.md (test split)
radcap caption --run roco-1 scan.png       one caption per image (flags unfamiliar ones)
radcap caption --json --run roco-1 scans/  one JSON object per image, for scripts
radcap caption --run roco-1 scan.dcm       DICOM too: its own window (--frame N)
radcap export --run roco-1 --beam 3        a SavedModel: image bytes in, captions out
radcap familiarity --run roco-1            add the familiarity reference to an old run
radcap app --run roco-1                    a web page: upload images, read captions
radcap retrieval --preset demo             a dual encoder: search both ways, scored
radcap search --run demo-retrieval "left lung nodule"    images for a text (--image)
radcap download roco --dest data/roco      fetch ROCO from Kaggle

Each command is a few calls into the library. TensorFlow is imported only
when a command needs it (training imports it with `radcap.training.train`),
so `radcap --help` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from radcap.arguments import build_parser
from radcap.core.clock import Phases
from radcap.core.config import SPLITS, Config, preset
from radcap.core.files import DiskFullError, LockError
from radcap.core.locks import ReadOnlyError
from radcap.data import load
from radcap.data.download import DownloadError, download_roco
from radcap.data.images import ImageError
from radcap.decoding.captioner import Captioner
from radcap.evaluation import compare_runs, evaluate, write_comparison
from radcap.evaluation.notes import familiarity_note
from radcap.features.backbone import LAYER, WeightsError, shared_extractor
from radcap.features.cache import FeatureCacheError, extract
from radcap.models import runs
from radcap.models.card import DISCLAIMER
from radcap.models.runs import RunError
from radcap.serving import app

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
    from radcap.training.train import (
        train,  # lazy: it loads TensorFlow; --help stays quick
    )

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


def _image_paths(images) -> tuple[list[Path], dict[Path, str]]:
    """The files to caption: each argument, or what is in it, sorted, if a folder.

    Nothing in a folder is left out unsaid: a named pipe or a broken link in
    it gets its line from the captioner, a subfolder (not captioned) and a
    folder with nothing in it stay in the list and in `problems` with why
    they give no caption, so that their lines say so.

    Returns:
        `(paths, problems)`: the paths in order, and `{folder: why}`.
    """
    paths, problems = [], {}
    for image in map(Path, images):
        if not image.is_dir():
            paths.append(image)
            continue
        try:
            files = sorted(image.iterdir())
        except OSError as err:
            files = []
            problems[image] = f"is a folder that cannot be read ({err.strerror})"
        for folder in filter(Path.is_dir, files):
            problems[folder] = (
                "is a folder in a folder given: its files are not captioned; give "
                "it on the command line to caption them"
            )
        if not files:
            problems.setdefault(
                image,
                "is a folder with no files in it, not an image: give the image "
                "files, or a folder that holds them",
            )
        paths += files or [image]
    return paths, problems


def cmd_caption(args) -> int:
    run_dir = runs.check(runs.resolve(args.run, args.root))
    paths, problems = _image_paths(args.images)
    if all(path in problems for path in paths):  # nothing at all to caption
        raise ValueError("; ".join(f"{path} {why}" for path, why in problems.items()))
    config = runs.load_config(run_dir)
    # The process's backbone (radcap.features.backbone.shared_extractor):
    # one VGG16 for every command run in one process, as for extraction.
    backbone = shared_extractor(config, more=True)
    captioner = Captioner.load(run_dir, extractor=backbone)
    if args.frame is not None:  # the frame read from multi-frame DICOM files
        captioner.config = captioner.config.replace(dicom_frame=args.frame)
    if captioner.familiarity_hint:
        print(f"note: {captioner.familiarity_hint}", file=sys.stderr)
    status = 0
    results = captioner.describe(
        paths, beam=args.beam, no_repeat_ngram=args.no_repeat_ngram
    )
    for path, result in zip(paths, results):
        error = problems.get(path, result.error)
        status = 1 if error else status
        if args.json:
            keys = ("caption", "score", "familiar", "familiarity", "frame")
            fields = {k: getattr(result, k) for k in keys} | {"error": error}
            print(json.dumps({"path": str(path)} | fields))
            continue
        if error:
            print(f"{path}\tERROR: {error}")
            continue
        frame = f"\t({result.frame})" if result.frame else ""
        print(f"{path}\t{result.caption}{frame}")
        if result.familiar is False:
            print(f"  {familiarity_note(result.familiarity, captioner.familiarity)}")
    if not args.json:  # stdout stays one line per image; JSON keeps its fields
        print(DISCLAIMER, file=sys.stderr)
    return status


def cmd_export(args) -> int:
    from radcap.serving.export import export, folder_size  # traces the search

    retrieval = args.retrieval and runs.resolve(args.retrieval, args.root)
    out = export(
        runs.resolve(args.run, args.root), args.out, args.beam, retrieval or None
    )
    size = folder_size(out) / 2**20
    print(
        f"Wrote {out} ({size:.0f} MB): load it with tf.saved_model.load({str(out)!r})"
    )
    return 0


def cmd_familiarity(args) -> int:
    from radcap.training.train import add_familiarity  # imports TensorFlow

    add_familiarity(runs.resolve(args.run, args.root), args.root)
    return 0


def cmd_demo(args) -> int:
    from radcap.training.train import (
        train,  # lazy: it loads TensorFlow; --help stays quick
    )

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


def cmd_retrieval(args) -> int:
    from radcap.evaluation.ranking import evaluate_retrieval  # imports TensorFlow
    from radcap.retrieval.train import RETRIEVAL_BATCH, train_retrieval

    if not args.config:  # a contrastive batch's other pairs are its negatives
        args.run = args.run or f"{args.preset}-retrieval"
        args.set = [f"batch_size={RETRIEVAL_BATCH}", *(args.set or [])]
    config = config_from_args(args)
    dataset = load(config, args.root)
    _skip_summary(dataset)
    train_retrieval(config, dataset, root=args.root)
    evaluate_retrieval(config.run_dir(args.root), args.root, dataset=dataset)
    return 0


def cmd_search(args) -> int:
    from radcap.retrieval.retriever import Retriever  # imports TensorFlow

    if bool(args.text) == bool(args.image) or args.k < 1:
        raise ValueError(
            "radcap search takes a text or --image FILE (one of them), and --k >= 1."
        )
    retriever = Retriever.load(runs.resolve(args.run, args.root))
    if args.image:
        table = retriever.search_image(args.image, k=args.k)
    else:
        table = retriever.search_text(" ".join(args.text), k=args.k)
        unknown = table.attrs["unknown_words"]
        if unknown:
            print(
                f"not in the vocabulary, ignored: {' '.join(unknown)}", file=sys.stderr
            )
    for row in table.to_dict("records"):
        if args.json:
            print(json.dumps(row))
        elif args.image:
            print(f"{row['score']:.3f}\t{row['caption']}\t({row['path']})")
        else:
            print(f"{row['path']}\t{row['score']:.3f}\t{row['caption']}")
    return 0


def cmd_app(args) -> int:
    return app.serve(args.run, host=args.host, port=args.port, retrieval=args.retrieval)


def cmd_download(args) -> int:
    path = download_roco(args.dest, force=args.force)
    print(f"ROCO is in {path}")
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "extract": cmd_extract,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "caption": cmd_caption,
    "export": cmd_export,
    "familiarity": cmd_familiarity,
    "app": cmd_app,
    "retrieval": cmd_retrieval,
    "search": cmd_search,
    "download": cmd_download,
}


# Commands that end with a line saying where their time went (radcap.core.clock).
TIMED = ("demo", "extract", "train", "evaluate", "retrieval")


def main(argv=None) -> int:
    """Entry point of the `radcap` command; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]

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
        ReadOnlyError,
    )
    try:
        if args.command not in TIMED:
            return command(args)
        with Phases.measure() as phases:
            status = command(args)
        print(phases.line())
        return status
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
