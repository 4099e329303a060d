"""`Captioner`: the backbone it is given, its two result types, its old call forms."""

import numpy as np
import pytest
from tiny_run import untrained_run

import radcap.features.backbone
from radcap.decoding.captioner import Caption, Captioner, CaptionResult


class StandIn:
    """A backbone stand-in: zeros for every image, and a reason for "bad" ones."""

    layers = ["fc2", "block_means"]

    def __init__(self):
        self.runs = 0

    def run(self, paths, on_batch, desc="features", frame="middle"):
        self.runs += 1
        n = len(paths)
        errors = {i: "not an image file" for i, p in enumerate(paths) if "bad" in p}
        on_batch(0, [np.zeros((n, 4096), "float32"), np.zeros((n, 1472))], errors)


@pytest.fixture
def builds(monkeypatch):
    """Every backbone radcap builds from now on (none is, for real)."""
    built = []
    monkeypatch.setattr(
        radcap.features.backbone, "build_backbone", lambda *a, **k: built.append(a)
    )
    monkeypatch.setattr(radcap.features.backbone, "_shared", {})
    return built


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("captioner"), "r")


@pytest.fixture(scope="module")
def captioner(run_dir):
    """One captioner on a stand-in backbone (its searches compile once)."""
    return Captioner.load(run_dir, extractor=StandIn())


def test_an_injected_backbone_is_the_only_one_it_uses(captioner, builds):
    backbone = captioner.extractor
    assert type(backbone) is StandIn and backbone.runs == 0
    captioner.caption(["a.png"])
    captioner.describe(["a.png", "b.png"], beam=2)
    captioner.caption("c.png")
    assert builds == [] and backbone.runs == 3 and captioner.extractor is backbone
    assert radcap.features.backbone._shared == {}  # no process-wide one either


def test_a_captioner_without_one_builds_its_own_once(run_dir, builds, monkeypatch):
    stand_ins = []

    def extractor(config, layers=None):
        stand_ins.append(StandIn())
        return stand_ins[-1]

    monkeypatch.setattr(radcap.decoding.captioner, "Extractor", extractor)
    captioner = Captioner.load(run_dir)
    assert not captioner.has_extractor  # loading reads no image: builds nothing
    captioner.caption(["a.png"])
    captioner.caption(["b.png"])
    assert len(stand_ins) == 1 and stand_ins[0].runs == 2
    assert radcap.features.backbone._shared == {} and builds == []


def test_caption_gives_strings_and_describe_gives_results(captioner, builds):
    captions = captioner.caption(["a.png", "bad.png"])
    assert type(captions[0]) is Caption and captions[1] is None
    assert (captions[0].familiarity, captions[0].familiar) == (None, None)
    expected = captioner.caption_features(np.zeros((1, 4096), "float32"))[0]
    assert captions[0] == expected

    good, bad = captioner.describe(["a.png", "bad.png"])
    assert type(good) is CaptionResult and type(bad) is CaptionResult
    assert (good.caption, good.words) == (expected, expected.split())
    assert good.attention.shape == (len(good.words), 1)  # the model reads no grid
    assert bad.attention.shape == (0, 1)
    assert isinstance(good.score, float) and good.score < 0
    assert (good.path, good.frame, good.error, good.familiar) == ("a.png", *[None] * 3)
    assert (bad.caption, bad.words, bad.score, bad.path, bad.error) == (
        None,
        [],
        None,
        "bad.png",
        "not an image file",
    )


def test_the_old_call_forms_still_work_and_say_what_replaces_them(captioner, builds):
    features = np.zeros((2, 4096), "float32")
    with pytest.warns(DeprecationWarning, match="describe_features"):
        from_arrays = captioner.caption(features)
    assert from_arrays == captioner.caption_features(features)
    assert all(type(c) is Caption for c in from_arrays)
    with pytest.warns(DeprecationWarning, match="return_attention"):
        dicts = captioner.caption(["a.png", "bad.png"], return_attention=True)
    described = captioner.describe(["a.png", "bad.png"])
    assert [sorted(d) for d in dicts] == [sorted(r.as_dict()) for r in described]
    assert [(d["caption"], d["error"]) for d in dicts] == [
        (described[0].caption, None),
        (None, "not an image file"),
    ]
    with pytest.warns(DeprecationWarning, match="uses_grid"):
        assert captioner.attention is False
    assert captioner.uses_grid is False
