"""The `radcap` command: help, and clear errors instead of tracebacks."""

import os
import subprocess
import sys

import pytest

from radcap import cli
from radcap.models import runs


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: radcap {command}" in out and "--" in out


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "radcap", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "caption" in result.stdout and "evaluate" in result.stdout


def test_caption_on_a_folder_that_is_no_run(tmp_path, capsys):
    assert cli.main(["caption", "--run", str(tmp_path), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "is not a radcap run folder" in err and "Traceback" not in err


def test_caption_of_folders_with_no_files_says_so_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in runs.REQUIRED:  # enough for the run check, which comes first
        (run_dir / name).touch()
    (tmp_path / "x.png").mkdir()  # a folder, whatever its name says
    (tmp_path / "scans").mkdir()
    folders = [str(tmp_path / "x.png"), str(tmp_path / "scans")]
    assert cli.main(["caption", "--run", str(run_dir), *folders]) == 2
    why = "is a folder with no files in it, not an image: give the image files, or "
    why += "a folder that holds them"
    assert capsys.readouterr().err == (
        f"radcap caption: error: {folders[0]} {why}; {folders[1]} {why}\n"
    )


def test_caption_of_a_folder_names_what_in_it_is_not_a_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in runs.REQUIRED:
        (run_dir / name).touch()
    scans = tmp_path / "scans"
    (scans / "day1").mkdir(parents=True)
    (scans / "day1" / "a.png").write_bytes(b"not captioned")
    assert cli.main(["caption", "--run", str(run_dir), str(scans)]) == 2
    assert capsys.readouterr().err == (
        f"radcap caption: error: {scans / 'day1'} is a folder in a folder given: "
        "its files are not captioned; give it on the command line to caption them\n"
    )
    os.mkfifo(scans / "p.png")  # each gets its line from the captioner
    (scans / "gone.png").symlink_to(tmp_path / "nowhere")
    paths, problems = cli._image_paths([str(scans)])
    assert paths == [scans / "day1", scans / "gone.png", scans / "p.png"]
    assert list(problems) == [scans / "day1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "colour=red"], "no field(s) ['colour']"),
        (["--set", "epochs"], "expected KEY=VALUE"),
        (["--set", "units=0"], "Config.units=0 is invalid"),
        (["--set", "learning_rate=x"], "Config.learning_rate='x' is invalid"),
        (["--set", "seed=-5"], "Config.seed=-5 is invalid: expected an integer >= 0"),
        (["--set", "name=.."], "Config.name='..' is invalid: expected a folder name"),
        (["--run", "../up"], "Config.name='../up' is invalid"),
        (
            ["--set", "learning_rate=Infinity"],
            "Config.learning_rate=inf is invalid: expected a finite number.",
        ),
        (["--set", "dropout=NaN"], "Config.dropout=nan is invalid"),
        (["--set", "beam=2.5"], "Config.beam=2.5 is invalid: expected a positive"),
        (["--set", "=3"], "no field(s) ['']"),
    ],
)
def test_bad_settings_are_reported(args, message, tmp_path, capsys):
    assert cli.main(["train", "--root", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_config_from_args_applies_run_and_attention():
    args = cli.build_parser().parse_args(["train", "--attention", "--set", "epochs=3"])
    config = cli.config_from_args(args)
    assert config.attention and config.epochs == 3 and config.name == "demo-attention"
    args = cli.build_parser().parse_args(["train", "--run", "mine", "--preset", "roco"])
    config = cli.config_from_args(args)
    assert config.name == "mine" and config.weights == "imagenet"


def test_set_reads_true_false_and_none_in_any_case():
    parse = cli.build_parser().parse_args
    args = parse(["train", "--set", "attention=False", "--set", "weights=None"])
    config = cli.config_from_args(args)
    assert config.attention is False and config.weights is None
    assert config.name == "demo"  # not renamed to demo-attention
    config = cli.config_from_args(parse(["train", "--set", "attention=true"]))
    assert config.attention is True and config.name == "demo-attention"


def test_extract_and_train_summarise_the_skipped_rows(tmp_path, capsys):
    root = tmp_path / "data/mine"
    (root / "images").mkdir(parents=True)
    (root / "captions.csv").write_text(
        "image,caption,split\nimages/gone.png,a caption,train\n"
        "images/gone2.png,another,train\nimages/x.png,,test\n"
    )
    (root / "images/x.png").write_bytes(b"not read here")
    args = ["--root", str(tmp_path), "--set", "source=csv", "--set", "dataset=mine"]
    assert cli.main(["extract", *args]) == 0  # no images: nothing to extract
    assert "3 rows of the dataset were skipped:" in capsys.readouterr().out
    assert cli.main(["train", *args]) == 2  # nothing left to train on
    out = capsys.readouterr()
    assert "3 rows of the dataset were skipped:" in out.out
    assert "2  missing image file" in out.out and "1  empty caption" in out.out
    assert "Nothing to train on" in out.err
