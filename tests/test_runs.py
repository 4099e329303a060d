"""The run folder: its checks, its loading, and clear words for damaged files."""

import json
import zipfile

import keras
import numpy as np
import pytest
from tiny_run import untrained_run

from radcap.core.config import Config
from radcap.core.text import Vocabulary
from radcap.decoding.captioner import Captioner
from radcap.models import runs


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with an untrained but complete captioner."""
    return untrained_run(tmp_path, "r")


def test_a_complete_run_folder_loads_and_captions(run_dir):
    captioner = Captioner.load(run_dir)
    assert captioner.config.name == "r" and captioner.vocab.size == 9
    captions = captioner.caption_features(np.zeros((2, 4096), np.float32))
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_a_model_file_written_before_the_stage_packages_loads(run_dir):
    # radcap 0.3 saved its captioner from the module radcap.model; Keras finds
    # the class by its registered name ("radcap>MergeCaptioner"), not by module.
    path = run_dir / runs.MODEL
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = files["config.json"].decode()
    assert '"module": "radcap.models.merge"' in config
    config = config.replace('"radcap.models.merge"', '"radcap.model"')
    files["config.json"] = config.encode()
    before = runs.load_model(run_dir).get_weights()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    model = runs.load_model(run_dir)
    assert type(model).__module__ == "radcap.models.merge"
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    captions = Captioner.load(run_dir).caption_features(np.zeros((1, 4096), "float32"))
    assert len(captions) == 1 and isinstance(captions[0], str)


def test_resolve_reads_a_folder_or_a_name_under_checkpoints_dir(run_dir, tmp_path):
    assert runs.resolve(run_dir) == run_dir
    assert runs.resolve("r", tmp_path) == tmp_path / "checkpoints" / "r"
    config = Config(checkpoints_dir="elsewhere")
    assert runs.resolve("x", tmp_path, config) == tmp_path / "elsewhere" / "x"


def test_a_run_folder_of_radcap_0_1_is_refused_with_the_way_out(run_dir):
    inputs = keras.Input((3,))
    old = keras.Model(inputs, keras.layers.Dense(2)(inputs))  # a functional model
    old.save(run_dir / runs.MODEL)
    with pytest.raises(runs.RunError) as err:
        Captioner.load(run_dir)
    message = str(err.value)
    assert "written by radcap 0.1" in message
    assert f"radcap train --config {run_dir / runs.CONFIG} --run r-v2" in message


@pytest.mark.parametrize(
    "content, words",
    [(b"", r"is empty \(0 bytes\)"), (b"PK\x03\x04 cut short", "is damaged")],
)
def test_a_damaged_model_file_is_named(run_dir, content, words):
    (run_dir / runs.MODEL).write_bytes(content)
    with pytest.raises(runs.RunError, match=words) as err:
        Captioner.load(run_dir)
    assert str(run_dir / runs.MODEL) in str(err.value)
    assert not runs.usable_model_file(run_dir / runs.MODEL)


@pytest.mark.parametrize(
    "name, content, words",
    [
        (runs.VOCAB, "", r"vocabulary .*vocab.json is empty \(0 bytes\)"),
        (runs.VOCAB, '{"words": [', r"vocabulary .*vocab.json is not valid JSON"),
        (runs.VOCAB, '{"words": ["a"]}', r"vocab.json is not a radcap vocabulary"),
        (runs.CONFIG, "{", r"config .*config.json is not valid JSON"),
        (runs.CONFIG, "[1]", r"config.json holds no config"),
    ],
)
def test_damaged_json_names_its_file(run_dir, name, content, words):
    (run_dir / name).write_text(content)
    with pytest.raises(ValueError, match=words):
        Captioner.load(run_dir)


def test_history_that_is_empty_or_garbled_counts_as_none(tmp_path, capsys):
    (tmp_path / runs.HISTORY).write_text("")
    assert runs.read_history(tmp_path) is None
    assert "holds no usable epochs" in capsys.readouterr().out
    # Two processes used to leave two header rows.
    (tmp_path / runs.HISTORY).write_text(
        "epoch,loss,val_loss\n0,1,1\nepoch,loss,val_loss\n"
    )
    assert runs.read_history(tmp_path, verbose=False) is None
    rows = [{"epoch": 0, "val_loss": 2.0, "loss": 3.0}, {"epoch": 1, "val_loss": 1.0}]
    runs.write_history(tmp_path, rows)
    history = runs.read_history(tmp_path)
    assert history.columns.tolist() == ["epoch", "loss", "val_loss"]
    assert history["val_loss"].tolist() == [2.0, 1.0]


def test_the_vocabulary_round_trips_through_its_dict(tmp_path):
    vocab = Vocabulary.build(["b a a", "c"], max_len=7)
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.words == vocab.words and again.max_len == 7
    assert json.loads((tmp_path / "v.json").read_text()) == vocab.to_dict()
