"""Config validation, presets, the JSON round trip and configs of other versions."""

import json
from pathlib import Path

import pytest

import radcap
from radcap.core.config import Config, preset


def test_round_trip(tmp_path):
    config = preset("demo", units=128, attention=True, name="x")
    config.save(tmp_path / "config.json")
    assert Config.load(tmp_path) == config
    assert Config.load(tmp_path / "config.json").units == 128
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["radcap_version"] == radcap.__version__
    assert Config.from_dict(saved) == config


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("units", 0, "Config.units=0"),
        ("cell", "rnn", "Config.cell='rnn'"),
        ("dropout", 1.5, "Config.dropout=1.5"),
        ("name", "a/b", "Config.name='a/b'"),
        ("name", "..", "Config.name='..' is invalid: expected a folder name"),
        ("name", ".hidden", "Config.name='.hidden'"),
        ("name", "", "Config.name=''"),
        ("early_stopping", -1, "Config.early_stopping=-1"),
        ("seed", -5, "Config.seed=-5 is invalid: expected an integer >= 0"),
        ("learning_rate", "fast", "Config.learning_rate='fast' is invalid"),
        ("attention", "False", "Config.attention='False' is invalid"),
        ("dropout", True, "Config.dropout=True is invalid"),
        ("lr_factor", 1.0, "Config.lr_factor=1.0 is invalid"),
        ("lr_patience", -2, "Config.lr_patience=-2 is invalid"),
        ("decoder", "rnn", "Config.decoder='rnn' is invalid: expected one of"),
        ("heads", 0, "Config.heads=0 is invalid: expected a positive integer"),
        ("demo_findings", 3, "Config.demo_findings=3 is invalid: expected 1 or 2"),
        (
            "learning_rate",
            float("inf"),
            "Config.learning_rate=inf is invalid: expected a finite number",
        ),
        ("length_penalty", float("inf"), "Config.length_penalty=inf is invalid"),
        ("lr_factor", float("nan"), "Config.lr_factor=nan is invalid"),
    ],
)
def test_invalid_values_name_field_and_value(field, value, words):
    with pytest.raises(ValueError) as err:
        Config(**{field: value})
    assert words in str(err.value)


def test_unknown_fields_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown config field.*'colour'"):
        Config.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="no field"):
        preset("demo").replace(colour="red")
    with pytest.raises(ValueError, match="Unknown preset 'big'"):
        preset("big")


def test_retired_fields_load_only_with_their_one_value():
    old = {**preset("demo").to_dict(), "backbone": "vgg16", "layer": "fc2"}
    assert Config.from_dict({**old, "image_size": 224}) == preset("demo")
    with pytest.raises(ValueError, match="Unknown config field.*image_size"):
        Config.from_dict({**old, "image_size": 256})


def test_preset_names_attention_runs_once_for_everyone():
    assert preset("demo").name == "demo"
    assert preset("demo", attention=True).name == "demo-attention"
    assert preset("roco", attention=True, name="mine").name == "mine"
    assert preset("demo", attention=False, name=None).name == "demo"
    assert preset("demo", decoder="transformer").name == "demo-transformer"
    assert preset("hard", attention=True).name == "hard-attention"
    assert preset("hard", decoder="merge").name == "hard"


def test_the_hard_preset_is_the_demo_with_two_findings():
    demo, hard = preset("demo"), preset("hard", decoder="transformer")
    assert (hard.dataset, hard.demo_findings, hard.max_len) == ("demo-hard", 2, 24)
    assert (demo.demo_size, hard.demo_size) == (360, 600)
    assert (
        hard.uses_grid
        and not demo.uses_grid
        and preset("demo", attention=True).uses_grid
    )
    same = {"name", "dataset", "demo_findings", "demo_size", "max_len", "decoder"}
    assert {k: v for k, v in hard.to_dict().items() if k not in same} == {
        k: v for k, v in demo.to_dict().items() if k not in same
    }
    # A config saved before the transformer existed loads as a merge decoder.
    old = {k: v for k, v in demo.to_dict().items() if k not in ("decoder", "heads")}
    assert Config.from_dict(old).decoder == "merge"


def test_a_damaged_config_names_its_file(tmp_path):
    (tmp_path / "config.json").write_text('{"units": ')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        Config.load(tmp_path)
    (tmp_path / "config.json").write_text("")
    with pytest.raises(ValueError, match=r"config.json is empty \(0 bytes\)"):
        Config.load(tmp_path)


def test_presets():
    demo, roco = preset("demo"), preset("roco")
    assert demo.weights is None and roco.weights == "imagenet"
    assert demo.units < roco.units and demo.source == "demo" and roco.source == "roco"


def test_load_missing_says_what(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder"):
        Config.load(tmp_path)


def test_check_setup_warns_without_a_gpu_and_never_fails(monkeypatch, capsys):
    import tensorflow as tf

    import radcap

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    with pytest.warns(UserWarning, match="No GPU found"):
        facts = radcap.check_setup()
    assert facts["gpus"] == [] and facts["radcap"] == radcap.__version__
    assert f"TensorFlow {tf.__version__}" in capsys.readouterr().out

    gpu = type("Device", (), {"name": "/physical_device:GPU:0"})()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    assert radcap.check_setup()["gpus"] == ["/physical_device:GPU:0"]
    assert "GPU: /physical_device:GPU:0" in capsys.readouterr().out


# config.json of the demo preset as radcap wrote it before it recorded its version.
UNVERSIONED_DEMO = """{"name": "demo", "dataset": "demo", "source": "demo",
"data_dir": "data", "features_dir": "features", "checkpoints_dir": "checkpoints",
"caption_file": "captions.csv", "include_nonradiology": false,
"report_fields": "findings,impression", "projection": "frontal", "demo_size": 600,
"demo_findings": 1, "weights": null, "decoder": "merge", "attention": false,
"grid_layer": "block5_pool", "min_count": 1, "max_len": 20, "embed_dim": 64,
"units": 256, "attention_units": 128, "heads": 4, "decoder_layers": 2,
"dropout": 0.3, "cell": "lstm", "batch_size": 32, "epochs": 40,
"learning_rate": 0.002, "early_stopping": 8, "lr_patience": 3, "lr_factor": 0.5,
"beam": 3, "length_penalty": 0.7, "no_repeat_ngram": 3, "allow_unk": false,
"extract_batch_size": 32, "precision": "float32", "strategy": "auto", "seed": 0}"""


def test_a_config_written_before_versions_were_recorded_loads_as_it_was(tmp_path):
    (tmp_path / "config.json").write_text(UNVERSIONED_DEMO)
    assert Config.load(tmp_path) == preset("demo", demo_size=600)  # it said 600


def test_fields_an_older_radcap_lacked_get_the_value_it_used(tmp_path):
    old = json.loads(UNVERSIONED_DEMO)
    for field in ("lr_patience", "no_repeat_ngram", "allow_unk", "strategy"):
        del old[field]
    old.update(backbone="vgg16", layer="fc2", image_size=224)  # the 0.1 fields
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = Config.load(tmp_path)
    # No plateau schedule, repeats and <unk> allowed, one device: not today's.
    assert (config.lr_patience, config.no_repeat_ngram) == (0, 0)
    assert (config.allow_unk, config.strategy) == (True, "none")
    assert config.replace(lr_patience=3, no_repeat_ngram=3) == preset(
        "demo", allow_unk=True, strategy="none", demo_size=600
    )


def test_a_missing_field_that_every_radcap_wrote_is_refused(tmp_path):
    old = json.loads(UNVERSIONED_DEMO)
    del old["weights"]  # today's default would download ImageNet weights
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError) as err:
        Config.load(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'config.json'} has no 'weights', which every radcap writes: "
        'add it (e.g. "weights": <value>; see radcap.core.config.Config for its '
        "meaning) or make the run again with this radcap."
    )
    # A field this radcap version records is never filled in either.
    versioned = {**json.loads(UNVERSIONED_DEMO), "radcap_version": "0.2.0"}
    del versioned["strategy"]
    with pytest.raises(ValueError, match="has no 'strategy', which radcap 0.2.0"):
        Config.from_dict(versioned)


def test_a_config_of_a_newer_radcap_says_to_upgrade(tmp_path):
    newer = {**json.loads(UNVERSIONED_DEMO), "radcap_version": "9.1.0", "clip": 1}
    (tmp_path / "config.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError) as err:
        Config.load(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'config.json'} was written by radcap 9.1.0, this is "
        f"{radcap.__version__}: upgrade radcap (pip install -U radcap) to use it."
    )
    newer["radcap_version"] = "new"
    (tmp_path / "config.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="radcap_version=.new. is no radcap version"):
        Config.load(tmp_path)


def test_presets_equal_the_expanded_presets_of_radcap_0_3():
    # Each preset as radcap 0.3 spelled it out, every field (tests/data).
    old = json.loads((Path(__file__).parent / "data/presets_0.3.json").read_text())
    # One change since: the demo draws 360 images (the hard demo still 600).
    old["demo"]["demo_size"] = 360
    for kind, fields in old.items():
        # And fields since: jit_compile, "auto" as radcap 0.3 compiled, and
        # the dual encoder's width (captioners do not read it).
        since = {"jit_compile": "auto", "retrieval_dim": 128}
        assert preset(kind).to_dict() == {**fields, **since}, kind


def test_every_field_belongs_to_one_stage():
    stages = Config.by_stage()
    named = [field for names in stages.values() for field in names]
    assert sorted(named) == sorted(Config().to_dict())
    assert stages["decoding"] == [
        "beam",
        "length_penalty",
        "no_repeat_ngram",
        "allow_unk",
    ]


@pytest.mark.parametrize(
    "form",
    ["0.1 (retired fields, no version)", "0.2 (no version)", "0.2.0", "0.3.0"],
)
def test_every_saved_config_form_still_loads(tmp_path, form):
    values = json.loads(UNVERSIONED_DEMO)
    expected = preset("demo", demo_size=600)  # the demo's size then
    if form.startswith("0.1"):
        values.update(backbone="vgg16", layer="fc2", image_size=224)
    if form == "0.2.0":
        values["radcap_version"] = "0.2.0"  # before dicom_frame was added
        expected = expected.replace(dicom_frame="middle")
    if form == "0.3.0":
        values.update(radcap_version="0.3.0", dicom_frame="first")
        expected = expected.replace(dicom_frame="first")
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert Config.load(tmp_path) == expected


def test_jit_compile_is_a_training_setting_and_0_3_0_configs_keep_keras_choice(
    tmp_path,
):
    assert "jit_compile" in Config.by_stage()["training"]
    with pytest.raises(ValueError) as err:
        Config(jit_compile="yes")
    assert str(err.value) == (
        "Config.jit_compile='yes' is invalid: expected one of ('auto', 'on', 'off')."
    )
    saved = json.loads(UNVERSIONED_DEMO)
    saved.update(radcap_version="0.3.0", dicom_frame="middle")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert Config.load(tmp_path).jit_compile == "auto"
    preset("demo", jit_compile="off").save(tmp_path / "config.json")
    assert Config.load(tmp_path).jit_compile == "off"


def test_set_with_a_flat_key_still_works(tmp_path):
    from radcap.arguments import build_parser
    from radcap.cli import config_from_args

    args = build_parser().parse_args(
        ["train", "--set", "epochs=5", "--set", "projection=null"]
    )
    config = config_from_args(args)
    assert config == preset("demo", epochs=5, projection=None)
    preset("demo").save(tmp_path / "config.json")
    args = build_parser().parse_args(
        ["train", "--config", str(tmp_path / "config.json"), "--set", "beam=2"]
    )
    assert config_from_args(args) == preset("demo", beam=2)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("weights", 3, "Config.weights=3 is invalid: expected a string or None."),
        ("dicom_frame", 2.0, "expected an integer or a string."),
        ("units", 2.5, "Config.units=2.5 is invalid: expected a positive integer."),
        ("seed", True, "Config.seed=True is invalid: expected an integer >= 0."),
        ("projection", 3, "Config.projection=3 is invalid: expected a string or None."),
    ],
)
def test_types_come_from_the_annotations(field, value, message):
    with pytest.raises(ValueError) as err:
        Config(**{field: value})
    assert message in str(err.value)
