"""The device check (bench/device_check.py) runs in its quick form, writes its JSON."""

import json
import sys
from pathlib import Path

import pytest
from tiny_run import patch_tiny_backbone

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def device_check(monkeypatch):
    """The script as a module, with the tiny stand-in for VGG16."""
    monkeypatch.syspath_prepend(str(BENCH))
    patch_tiny_backbone(monkeypatch)
    for name in ("device_check", "bench_extract", "common"):
        sys.modules.pop(name, None)  # fresh, from this checkout's bench/
    import device_check

    return device_check


def rate(value) -> bool:
    return isinstance(value, float) and 0 < value < 1e7


@pytest.mark.slow
def test_the_quick_device_check_writes_every_figure(device_check, tmp_path):
    path = tmp_path / "out" / "check.json"
    device_check.main(["--quick", "--out", str(path)])
    out = json.loads(path.read_text())
    assert not [name for name, part in out.items() if "error" in str(part)]
    assert out["quick"] is True and out["device"]["gpus"] in (0, 1, 2, 4, 8)
    assert out["extraction"]["images"] == 4 and rate(out["extraction"]["images_per_s"])
    training = out["training"]
    assert set(training) == {
        f"{p}_xla_{x}" for p in ("float32", "mixed_float16") for x in ("off", "on")
    } | {"part_seconds"}
    for name, run in training.items():
        if name == "part_seconds":
            continue
        assert rate(run["targets_per_s"]) and run["first_epoch_s"] > 0
        assert run["jit_compile"] is name.endswith("on")
        assert run["features_gathered_on"] == "host"  # no GPU here
        assert run["precision"] in ("float32", "mixed_float16")
        assert 1 <= run["shapes_first_epoch"] <= 8  # bucketed widths
        utilisation = run["gpu_utilisation"]
        if utilisation["mean_percent"] is None:
            assert utilisation["reason"]  # no nvidia-smi here: says so
        else:
            assert 0 <= utilisation["mean_percent"] <= 100
    decoding = out["decoding"]
    assert rate(decoding["greedy_captions_per_s"])
    assert rate(decoding["beam3_captions_per_s"])
    assert 0 <= out["demo"]["bleu4"] <= 1 and out["demo"]["epochs_run"] == 1
    assert json.loads(json.dumps(out)) == out  # printed as written
