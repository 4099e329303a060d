"""The `radcap` command's arguments: one subcommand per notebook step."""

from __future__ import annotations

import argparse

from radcap.core.config import DECODERS, PRESETS, SCORINGS, SPLITS, Config
from radcap.serving import app

_BY_STAGE = Config.by_stage().items()


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
        help="Change one config field, e.g. --set epochs=5 (repeatable). Fields: "
        + "; ".join(f"{stage}: {', '.join(names)}" for stage, names in _BY_STAGE),
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


def _frame(text: str):
    """A --frame value: middle, first, last or a frame number from 1."""
    if text.lower() in ("middle", "first", "last"):
        return text.lower()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected middle, first, last or a frame number (1 is the first)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of `radcap`; `radcap.cli.COMMANDS` runs its subcommands."""
    parser = argparse.ArgumentParser(
        prog="radcap",
        description="Radiology image captioning: VGG16 features, a "
        "merge LSTM or transformer decoder, beam search and caption metrics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _add_demo_parser(sub)

    p = sub.add_parser("extract", help="Cache VGG16 features of the dataset's splits.")
    _add_config_args(p)
    p.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        help="Only this split (repeatable; default all).",
    )

    p = sub.add_parser("train", help="Train a captioner into checkpoints/<run>.")
    _add_config_args(p)

    _add_evaluate_parser(sub)

    _add_caption_and_export_parsers(sub)

    _add_retrieval_parsers(sub)

    p = sub.add_parser(
        "familiarity",
        help="Compute a trained run's familiarity reference from its cached "
        "features (runs trained before radcap had it); no retraining.",
    )
    p.add_argument("--run", required=True, help="Run folder or run name.")
    p.add_argument("--root", default=".", help="Folder the run's paths start from.")

    _add_app_parser(sub)

    p = sub.add_parser("download", help="Download a dataset (needs the internet).")
    p.add_argument("dataset", choices=("roco",))
    p.add_argument("--dest", default="data/roco", help="Target folder.")
    p.add_argument("--force", action="store_true", help="Download again.")
    return parser


def _add_app_parser(sub) -> None:
    p = sub.add_parser("app", help="A web page that captions uploaded images.")
    p.add_argument("--run", required=True, help="Run folder or run name.")
    p.add_argument("--host", default=app.HOST, help=f"Address (default {app.HOST}).")
    p.add_argument("--port", type=int, default=app.PORT, help="Port (default 8501).")
    p.add_argument(
        "--retrieval",
        help="Retrieval run (folder or name) of the search tab (default: the one "
        "beside the run, if any).",
    )


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


def _add_demo_parser(sub) -> None:
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
        "--size",
        type=int,
        help="Number of demo images (default: the preset's: 360, hard 600).",
    )
    p.add_argument(
        "--hard",
        action="store_true",
        help="The hard demo (the `hard` preset): two findings per image.",
    )
    p.add_argument("--samples", type=int, default=5, help="Sample captions to print.")


def _add_caption_and_export_parsers(sub) -> None:
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
    p.add_argument(
        "--json",
        action="store_true",
        help="One JSON object per image and line: path, caption, score, "
        "familiar, familiarity, frame, error.",
    )
    p.add_argument(
        "--frame",
        type=_frame,
        help="The frame captioned in a multi-frame DICOM file: middle, first, "
        "last or a number (1 is the first; default: the run's dicom_frame, "
        "middle). The output line names it, e.g. 'frame 2 of 3'.",
    )
    p.add_argument("--root", default=".", help="Folder that checkpoints/ is in.")

    p = sub.add_parser(
        "export",
        help="Write a run as a TensorFlow SavedModel: image bytes in, captions out.",
    )
    p.add_argument("--run", required=True, help="Run folder or run name.")
    p.add_argument("--out", help="SavedModel folder (default: <run>/export).")
    p.add_argument(
        "--beam",
        type=int,
        default=1,
        help="Beam width of the default signature (default 1: greedy).",
    )
    p.add_argument(
        "--retrieval",
        help="Retrieval run whose embed_image and embed_text signatures join the "
        "export (default: the one beside the run, if any).",
    )
    p.add_argument("--root", default=".", help="Folder that checkpoints/ is in.")


def _add_retrieval_parsers(sub) -> None:
    p = sub.add_parser(
        "retrieval",
        help="Train (or continue) a dual encoder for search both ways, index the "
        "dataset, score it on the test split (metrics.json).",
    )
    _add_config_args(p, "Run name (default: <preset>-retrieval).")

    p = sub.add_parser(
        "search",
        help="Search a retrieval run: images for a text, or captions for --image.",
    )
    p.add_argument("--run", required=True, help="Retrieval run folder or run name.")
    p.add_argument("text", nargs="*", help="Free text: the images most like it.")
    p.add_argument("--image", help="An image file: the known captions most like it.")
    p.add_argument("--k", type=int, default=5, help="Results to print (default 5).")
    p.add_argument(
        "--json", action="store_true", help="One JSON object per result and line."
    )
    p.add_argument("--root", default=".", help="Folder that checkpoints/ is in.")
