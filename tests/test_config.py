"""Config validation, presets and the JSON round trip."""

import pytest

from radcap.config import Config, preset


def test_round_trip(tmp_path):
    config = preset("demo", units=128, attention=True, name="x")
    config.save(tmp_path / "config.json")
    assert Config.load(tmp_path) == config
    assert Config.load(tmp_path / "config.json").units == 128


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
    assert (
        hard.uses_grid
        and not demo.uses_grid
        and preset("demo", attention=True).uses_grid
    )
    same = {"name", "dataset", "demo_findings", "max_len", "decoder"}
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
