"""The four notebooks as Colab and Kaggle users meet them: a session each.

Colab gives every notebook its own runtime, Kaggle its own machine. Here
every notebook runs in a kernel of its own (papermill) in a fresh folder of
its own, and finds what the earlier ones made through what stands in for
the host: a Google Drive folder mounted through a stand-in `google.colab`,
or the earlier notebooks' working folders as Kaggle inputs (never written
to: checked by hashing them). A `sitecustomize.py` on the kernel's path
makes the demo small (30 images, 3 epochs, a small decoder), leaves
METEOR out (Java starts slowly) and puts the tiny stand-in backbone of
tests/tiny_run.py in VGG16's place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = (
    "01_download_data.ipynb",
    "02_extract_features.ipynb",
    "03_train.ipynb",
    "04_evaluate.ipynb",
)
# Lines radcap.training.session says when it makes what an earlier notebook
# would have made.
MADE_HERE = ("drawing it here", "extracted here", "training it here")

SITECUSTOMIZE = f"""
import os
import sys

if os.environ.get("RADCAP_SMALL_DEMO"):
    import radcap.core.config as config

    _preset = config.preset

    def preset(kind, /, name=None, **overrides):
        small = dict(
            demo_size=30, epochs=3, early_stopping=0, batch_size=8, units=16,
            embed_dim=8, attention_units=8, extract_batch_size=8,
        )
        return _preset(kind, name, **{{**small, **overrides}})

    config.preset = preset
    import radcap.evaluation.metrics as metrics

    metrics.java_available = lambda: False  # no METEOR: Java boots slowly
    sys.path.insert(0, {str(REPO / "tests")!r})
    from tiny_run import use_tiny_backbone

    use_tiny_backbone()
"""

# Colab's module, standing in: `drive.mount` links the mount point to the
# folder that stands in for Google Drive.
DRIVE_MODULE = """
import os


def mount(mountpoint, **_):
    os.makedirs(os.path.dirname(mountpoint), exist_ok=True)
    os.symlink(os.environ["STAND_IN_DRIVE"], mountpoint)
"""


@pytest.fixture
def kernel_path(tmp_path, monkeypatch):
    """A folder on the kernels' PYTHONPATH with the small-demo `sitecustomize`."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", f"{folder}{os.pathsep}{REPO}")
    monkeypatch.setenv("RADCAP_SMALL_DEMO", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("RADCAP_WORKDIR", "KAGGLE_KERNEL_RUN_TYPE", "RADCAP_DRIVE_MOUNT"):
        monkeypatch.delenv(name, raising=False)
    return folder


def run(notebook: str, session: Path, **parameters) -> str:
    """Run `notebook` in a kernel of its own in `session`; its printed text."""
    session.mkdir(parents=True, exist_ok=True)
    if notebook.startswith("03"):
        parameters.setdefault("TENSORBOARD", False)
    done = papermill.execute_notebook(
        str(REPO / "notebooks" / notebook),
        str(session / f"ran-{notebook}"),
        parameters=parameters,
        cwd=str(session),
        kernel_name="python3",
        start_timeout=300,
        progress_bar=False,
    )
    return "\n".join(
        output.get("text", "")
        for cell in done.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def digest(folder: Path) -> str:
    """The names, link targets and contents of everything under `folder`."""
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        sha.update(str(path.relative_to(folder)).encode())
        if path.is_symlink():
            sha.update(os.readlink(path).encode())
        elif path.is_file():
            sha.update(path.read_bytes())
    return sha.hexdigest()


def test_colab_each_notebook_in_its_own_runtime_meets_the_others_on_drive(
    kernel_path, tmp_path, monkeypatch
):
    colab = kernel_path / "google" / "colab"  # `google` stays a namespace package
    colab.mkdir(parents=True)
    (colab / "__init__.py").write_text("")
    (colab / "drive.py").write_text(DRIVE_MODULE)
    drive = tmp_path / "drive"
    (drive / "MyDrive").mkdir(parents=True)
    monkeypatch.setenv("STAND_IN_DRIVE", str(drive))
    said = {}
    for i, notebook in enumerate(NOTEBOOKS):
        runtime = tmp_path / f"runtime-{i + 1}"
        monkeypatch.setenv("RADCAP_DRIVE_MOUNT", str(runtime / "content/drive"))
        said[notebook] = run(notebook, runtime / "content")
        assert (runtime / "content/drive").resolve() == drive.resolve()
    folder = drive / "MyDrive/radcap"
    for notebook, text in said.items():
        assert f"Working folder: {folder.resolve()}" in text, notebook
        assert not any(line in text for line in MADE_HERE), (notebook, text)
    assert (folder / "checkpoints/demo/metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "runtime-4/content").iterdir()) == [
        "drive",
        "ran-04_evaluate.ipynb",
    ]


def test_kaggle_each_notebook_reads_the_earlier_outputs_as_inputs(
    kernel_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    said, outputs = {}, {}
    for i, notebook in enumerate(NOTEBOOKS):
        machine = tmp_path / f"machine-{i + 1}"
        inputs = machine / "kaggle/input"
        inputs.mkdir(parents=True)
        for earlier, output in outputs.items():  # each earlier output, added
            (inputs / Path(earlier).stem).symlink_to(output)
        working = machine / "kaggle/working"
        monkeypatch.setenv("RADCAP_KAGGLE_INPUT", str(inputs))
        monkeypatch.setenv("RADCAP_KAGGLE_WORKING", str(working))
        before = {name: digest(folder) for name, folder in outputs.items()}
        said[notebook] = run(notebook, machine)
        assert {name: digest(folder) for name, folder in outputs.items()} == before
        outputs[notebook] = working
    for notebook, text in said.items():
        assert not any(line in text for line in MADE_HERE), (notebook, text)
    assert "Copied the demo images from" in said["02_extract_features.ipynb"]
    assert "Reading the feature caches of" in said["03_train.ipynb"]
    assert "Copied run 'demo' from" in said["04_evaluate.ipynb"]
    run_dir = outputs["04_evaluate.ipynb"] / "checkpoints/demo"
    assert (run_dir / "metrics.json").is_file() and not run_dir.is_symlink()
    assert not (outputs["03_train.ipynb"] / "checkpoints/demo/metrics.json").exists()


def test_notebook_04_alone_makes_the_demo_and_stops_in_one_line_for_roco(
    kernel_path, tmp_path
):
    alone = tmp_path / "alone"
    with pytest.raises(papermill.PapermillExecutionError) as stopped:
        run("04_evaluate.ipynb", alone, PRESET="roco")
    assert stopped.value.ename == "MissingStepError"
    assert stopped.value.traceback == [
        f"MissingStepError: No ROCO in {(alone / 'data/roco').resolve()}: run "
        "01_download_data.ipynb first (PRESET = 'roco') with the same WORKDIR."
    ]
    text = run("04_evaluate.ipynb", alone)
    for line in MADE_HERE:
        assert line in text
    assert (alone / "checkpoints/demo/metrics.json").is_file()


def test_a_feature_cache_of_an_input_is_linked_and_a_split_read_again_copied(
    tmp_path,
):
    from radcap.data.images import RETRY_NOTE
    from radcap.training.session import _link_cache

    given = tmp_path / "input"
    given.mkdir()
    (given / "meta.json").write_text("{}")
    (given / "test.npy").write_bytes(b"test")
    (given / "test.partial.npy").write_bytes(b"unfinished")
    (given / "train.npy").write_bytes(b"train")
    (given / "train.skipped.csv").write_text(
        f"image_id,path,reason\na,a.png,permission denied{RETRY_NOTE}\n"
    )
    here = tmp_path / "working"
    _link_cache(given, here)
    assert sorted(p.name for p in here.iterdir()) == [
        "meta.json",
        "test.npy",
        "train.npy",
        "train.skipped.csv",
    ]
    assert (here / "test.npy").resolve() == given / "test.npy"
    # radcap reads this split's unreadable images again into train.npy in place.
    assert not (here / "train.npy").is_symlink()
    assert (here / "train.npy").read_bytes() == b"train"


def test_a_missing_step_shows_in_ipython_as_its_one_line(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from radcap.training.session import MissingStepError

    shell = InteractiveShell.instance()
    try:
        shell.user_ns["MissingStepError"] = MissingStepError
        result = shell.run_cell("raise MissingStepError('No run: run 03 first.')")
    finally:
        InteractiveShell.clear_instance()
    assert isinstance(result.error_in_exec, MissingStepError)
    assert capsys.readouterr().out == "MissingStepError: No run: run 03 first.\n"
