"""`radcap app`: a local web page that captions uploaded images with a run.

The page is `radcap/serving/app_page.py`, a Streamlit script that `streamlit run`
executes (`serve`, which stops it when stopped); what it does with a run lives
here, without Streamlit: `Service` (a run's captioner, loaded once per server
process, and its training images as `radcap.evaluation.evidence.Evidence`),
`caption_uploads` (one result per uploaded file: caption, familiarity,
attention, the most similar training images, or why the file could not be
used), `attention_png` and `results_csv`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.config import Config
from radcap.data.images import MAX_PIXELS
from radcap.decoding.captioner import Captioner
from radcap.evaluation.evidence import Evidence
from radcap.evaluation.notes import familiarity_note
from radcap.features.backbone import BLOCK_MEANS, LAYER, Extractor
from radcap.features.cache import FeatureCacheError
from radcap.models import runs
from radcap.plots import plot_attention, read_image
from radcap.serving.app_search import RETRIEVAL_ENV
from radcap.serving.server import run_until_stopped

RUN_ENV = "RADCAP_APP_RUN"
ROOT_ENV = "RADCAP_APP_ROOT"
PAGE = Path(__file__).with_name("app_page.py")
HOST = "127.0.0.1"  # this machine only; --host 0.0.0.0 opens it to the network
PORT = 8501
MAX_UPLOAD_MB = 50  # Streamlit refuses larger files (server.maxUploadSize)
IMAGE_TYPES = tuple("png jpg jpeg tif tiff bmp gif webp dcm dicom dic".split())
DISPLAY_SIDE = 512  # pixels of the longest side of a shown image
# Images per backbone pass. A pass runs on a whole batch (padded), and uploads
# come a few at a time: on a CPU, a batch of 32 would take 8 times longer.
BATCH = 4
# As `radcap caption --json` writes them, `path` being the uploaded file's name.
CSV_COLUMNS = ["path", "caption", "score", "familiar", "familiarity", "frame", "error"]
LIMITS = (
    f"PNG (8 or 16 bit), JPEG, TIFF, BMP, GIF, WebP or DICOM; at most {MAX_UPLOAD_MB} "
    f"MB and {MAX_PIXELS:,} pixels (a square of {int(MAX_PIXELS**0.5):,}) per file."
)
# What to do about an image that could not be read, by the start of its reason
# (the reasons of `radcap.data.images.load_image`).
_ADVICE = {
    "empty file": "The upload holds no bytes: upload the file again.",
    "image too large": "Shrink it (e.g. to 2048 pixels a side) and upload it again.",
    "not an image file": "Upload an image: " + LIMITS,
    "larger than": "Shrink or compress it and upload it again.",
    "the server could not save it": "Rename it to a short plain name, upload again.",
    "a DICOM file: reading it needs": "Then restart radcap app, upload it again.",
}
_DEFAULT_ADVICE = "Check that it opens in an image viewer, or save it again as PNG."


@dataclasses.dataclass
class Service:
    """What the page serves: one run's captioner, loaded once per process.

    Attributes:
        run_dir: The run folder.
        captioner: Its `Captioner`.
        evidence: Its training images, or None when they are not on disk.
        evidence_problem: Why there is no evidence, when there is none.
        lock: Held while the captioner runs, one session at a time.
    """

    run_dir: Path
    captioner: Captioner
    evidence: Evidence | None
    evidence_problem: str | None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @classmethod
    def load(cls, run_dir: str | Path, root: str | Path | None = None) -> Service:
        """Load a run folder's captioner, its backbone and its evidence.

        Args:
            run_dir: A run folder (see `radcap.models.runs`).
            root: Folder the run's data and feature paths start from;
                default `run_root`.
        """
        config = runs.load_config(runs.check(run_dir))
        # The page's own backbone, built now (not at the first upload), with
        # small batches: uploads come a few at a time.
        batch = min(config.extract_batch_size, BATCH)
        backbone = Extractor(config.replace(extract_batch_size=batch))
        captioner = Captioner.load(run_dir, extractor=backbone)
        root = run_root(run_dir, captioner.config) if root is None else root
        try:
            evidence, problem = Evidence.load(captioner.config, root), None
        except (OSError, ValueError, KeyError, FeatureCacheError) as err:
            evidence = None
            problem = (
                "The training images are not shown beside the captions: their "
                f"features or files are not on disk under {Path(root).resolve()} "
                f"({err}). Start the page from the folder that holds them."
            )
        return cls(Path(run_dir), captioner, evidence, problem)

    @property
    def beam(self) -> int:
        """The beam width the page offers: the run's, or 3 if it is greedy."""
        return self.captioner.config.beam if self.captioner.config.beam > 1 else 3


def run_root(run_dir: str | Path, config: Config) -> Path:
    """The folder a run's relative paths start from: `<root>/checkpoints/<run>`.

    When the run folder does not sit in its config's `checkpoints_dir`, the
    current folder.
    """
    run_dir = Path(run_dir).resolve()
    parts = Path(config.checkpoints_dir).parts
    if parts and run_dir.parent.parts[-len(parts) :] == parts:
        return run_dir.parents[len(parts)]
    return Path(".")


def caption_uploads(
    service: Service,
    uploads,
    beam: int = 1,
    memo: dict | None = None,
    max_bytes: int = MAX_UPLOAD_MB * 2**20,
) -> list[dict]:
    """Caption uploaded files, each once per beam width.

    Args:
        service: The run (`Service.load`).
        uploads: `(name, data)` pairs: file names and their bytes.
        beam: Beam width; 1 is greedy search.
        memo: Results already computed, kept between calls by the caller
            (one dict per browser session); updated here, and emptied of
            files no longer uploaded.
        max_bytes: Larger files are refused unread.

    Returns:
        One dict per upload, in order: `name`, `caption` (None when the file
        could not be used), `score` (its summed log-probability), `familiarity`,
        `familiar`, `frame` ("frame 2 of 3" of a multi-frame DICOM file, else
        None), `note` (the warning for an unfamiliar image), `error` (why the
        file could not be used, with what to do), `image` (`(H, W[, 3])` uint8
        to show), `words` and `attention` (`(words, regions)` for runs that
        attend, else None; `attention_png` draws them) and `evidence`
        (`Evidence.nearest`'s dicts, or None).
    """
    memo = {} if memo is None else memo
    keys = [(hashlib.sha256(data).hexdigest(), name, beam) for name, data in uploads]
    todo = {}
    for key, (name, data) in zip(keys, uploads):
        if key in memo or key in todo:
            continue
        if len(data) > max_bytes:
            reason = f"larger than the upload limit of {max_bytes / 2**20:g} MB"
            memo[key] = _failed(name, reason)
        else:
            todo[key] = (name, data)
    if todo:
        memo.update(_caption_new(service, todo, beam))
    uploaded = {key[:2] for key in keys}
    for key in [k for k in memo if k[:2] not in uploaded]:
        del memo[key]
    return [memo[key] for key in keys]


def _caption_new(service: Service, todo: dict, beam: int) -> dict:
    """Results of new uploads `{key: (name, data)}`; one that cannot be saved fails."""
    done, saved = {}, {}
    with service.lock, tempfile.TemporaryDirectory(prefix="radcap-app-") as tmp:
        for key, (name, data) in todo.items():
            try:
                saved[key] = _save(name, data, Path(tmp))
            except (OSError, ValueError) as err:
                reason = getattr(err, "strerror", None) or err
                done[key] = _failed(name, f"the server could not save it ({reason})")
        if saved:
            names = [todo[key][0] for key in saved]
            found = _caption_files(service, list(saved.values()), names, beam)
            done.update(zip(saved, found))
    return done


def _save(name: str, data: bytes, folder: Path) -> Path:
    """Write an upload into a new subfolder of `folder`, under `safe_name(name)`."""
    path = Path(tempfile.mkdtemp(dir=folder)) / safe_name(name)
    path.write_bytes(data)
    return path


MAX_NAME_BYTES = 255  # the longest file name of ext4, XFS, Btrfs, APFS
# Control characters, NUL and lone surrogates, and what Windows refuses in a name.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f\ud800-\udfff<>:"|?*]')


def safe_name(name: str) -> str:
    """An uploaded file's name as a file name that any file system takes.

    A browser may send any text as `name`; what comes back is one path
    component: the last part of `name` (after any `/` or `\\`), control
    characters, NUL and what Windows refuses each made `_`, no spaces at its
    start or spaces and dots at its end, at most `MAX_NAME_BYTES` bytes of
    UTF-8 (a long stem is cut, its extension kept), and `upload` for a name
    left empty (`.`, `..`, `a/`).
    """
    name = _UNSAFE.sub("_", re.split(r"[/\\]", name)[-1]).lstrip(" ").rstrip(" .")
    stem, extension = os.path.splitext(name)
    if len(extension.encode()) > 16:  # not an extension: part of the name
        stem, extension = name, ""
    stem = stem.encode()[: MAX_NAME_BYTES - len(extension.encode())]
    return (stem.decode(errors="ignore") or "upload") + extension


_NOTHING = dict.fromkeys(
    CSV_COLUMNS[1:] + "note image words attention evidence".split()
)


def _failed(name: str, reason: str) -> dict:
    """The result of an upload that could not be captioned, and what to do."""
    advice = [text for start, text in _ADVICE.items() if reason.startswith(start)]
    error = f"{name} could not be captioned: {reason}. "
    error += advice[0] if advice else _DEFAULT_ADVICE
    return {"name": name, **_NOTHING, "error": error}


def _caption_files(service: Service, paths, names, beam: int) -> list[dict]:
    """Results for saved uploads (see `caption_uploads`), while the files exist.

    One backbone pass serves the captions, familiarity and evidence: its
    arrays go to `Captioner.describe_features` (unreadable
    images are rows of zeros, their reasons in `errors`).
    """
    captioner = service.captioner
    arrays, errors = captioner.image_features(paths)
    grid = arrays[captioner.config.grid_layer] if captioner.uses_grid else None
    found = captioner.describe_features(
        arrays[LAYER], grid, arrays[BLOCK_MEANS], beam, paths, errors
    )
    evidence = [None] * len(paths)
    if service.evidence is not None:
        evidence = service.evidence.nearest(arrays[LAYER])
    out, attends = [], captioner.uses_grid
    for i, (path, name, result) in enumerate(zip(paths, names, found)):
        if i in errors:
            out.append(_failed(name, errors[i]))
            continue
        note = familiarity_note(result.familiarity, captioner.familiarity)
        out.append(
            {
                **_NOTHING,
                "name": name,
                "caption": str(result.caption),
                "score": result.score,
                "familiarity": result.familiarity,
                "familiar": result.familiar,
                "frame": result.frame,
                "note": note if result.familiar is False else None,
                "image": display_image(path, frame=captioner.config.dicom_frame),
                "words": result.words,
                "attention": result.attention if attends else None,
                "evidence": evidence[i],
            }
        )
    return out


def display_image(path, side: int = DISPLAY_SIDE, frame="middle") -> np.ndarray | None:
    """An image file to show, `(H, W[, 3])` uint8 at most `side` pixels a side.

    `frame`: of a multi-frame DICOM file. None when the file cannot be read.
    """
    try:
        return np.round(255 * read_image(path, side, frame)).astype(np.uint8)
    except OSError:
        return None


def attention_png(service: Service, result: dict, data: bytes) -> bytes:
    """The word-by-word attention maps of a result, as PNG bytes; drawn once.

    Args:
        service: The run.
        result: A result of `caption_uploads` whose `attention` is not None;
            the drawing is kept in it.
        data: The uploaded file's bytes.
    """
    if result.get("attention_png") is None:
        with service.lock, tempfile.TemporaryDirectory(prefix="radcap-app-") as tmp:
            path = _save(result["name"], data, Path(tmp))
            figure = plot_attention(path, result["words"], result["attention"])
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=72)
        result["attention_png"] = buffer.getvalue()
    return result["attention_png"]


def results_csv(results: list[dict]) -> bytes:
    """The results as CSV bytes, one row per upload, columns `CSV_COLUMNS`."""
    rows = [[r["name"]] + [r[c] for c in CSV_COLUMNS[1:]] for r in results]
    return pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(index=False).encode()


def streamlit_command(
    run_dir: str | Path, root=None, host: str = HOST, port: int = PORT, retrieval=None
) -> tuple[list[str], dict]:
    """The `streamlit run` command line of the page, and its environment.

    Args:
        run_dir: The run folder to serve.
        root: Folder the run's paths start from; default `run_root`.
        host: Address to listen on.
        port: Port to listen on.
        retrieval: The retrieval run of the search tab; default the one
            beside the run (`radcap.serving.app_search.find_retrieval`).

    Returns:
        `(argv, env)`: the command and the environment to run it in.
    """
    argv = [sys.executable, "-m", "streamlit", "run", str(PAGE)]
    argv += ["--server.address", host, "--server.port", str(port)]
    argv += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    argv += ["--server.maxUploadSize", str(MAX_UPLOAD_MB)]
    argv += ["--server.fileWatcherType", "none"]  # serves; does not reload
    argv += ["--client.toolbarMode", "viewer"]  # no developer menu
    env = {**os.environ, RUN_ENV: str(Path(run_dir).resolve())}
    if root is not None:
        env[ROOT_ENV] = str(Path(root).resolve())
    if retrieval is not None:
        env[RETRIEVAL_ENV] = str(Path(retrieval).resolve())
    return argv, env


def serve(
    run: str | Path, root=None, host: str = HOST, port: int = PORT, retrieval=None
) -> int:
    """Serve the page for a run until interrupted (`radcap app`); the exit status.

    Args:
        run: A run folder, or a run name under `root`'s checkpoints folder.
        root: Folder the run's paths start from; default `run_root`.
        host: Address to listen on (the default: this machine only).
        port: Port to listen on.
        retrieval: A retrieval run (folder or name) for the search tab;
            default the one beside the run, if any.

    Raises:
        RunError: `run` (or `retrieval`) names no run folder.
    """
    run_dir = runs.check(runs.resolve(run, root or "."))
    if retrieval:
        retrieval = runs.check(runs.resolve(retrieval, root or "."))
    if importlib.util.find_spec("streamlit") is None:
        print(
            "radcap app: error: Streamlit is not installed. Install it with "
            "`pip install 'streamlit>=1.50'` (in a clone of radcap: `pip install -e "
            "'.[app]'`) "
            "and run the command again.",
            file=sys.stderr,
        )
        return 2
    argv, env = streamlit_command(run_dir, root, host, port, retrieval or None)
    print(f"radcap app: serving {run_dir} at http://{host}:{port} (Ctrl-C stops it)")
    return run_until_stopped(argv, env)
