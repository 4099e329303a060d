"""Retrieval: the contrastive loss by hand, batches, ranks, the index, the Retriever,
and a tiny dual encoder trained, indexed, scored and searched from its run folder.

The demo's quality (R@1 both ways beside the likelihood ranking) is measured
by `radcap retrieval --preset demo` and reported in docs/quality.md; here the
figures are checked on scripted inputs with known answers.
"""

import json
import math
import shutil

import numpy as np
import pytest
from tiny_run import patch_tiny_backbone, shared_tiny_run, tiny_config

from radcap import cli
from radcap.core.text import Vocabulary, clean_caption
from radcap.evaluation.ranking import rank_metrics
from radcap.models import runs
from radcap.models.dual import contrastive_loss
from radcap.retrieval.index import Index, top_k
from radcap.retrieval.retriever import QueryError, Retriever
from radcap.retrieval.train import PairBatches, caption_keys

# --- the loss ------------------------------------------------------------------


def loss(targets, logits) -> np.ndarray:
    return np.asarray(contrastive_loss(np.float32(targets), np.float32(logits)))


# Pairs 0 and 1 have one caption ("a"), pair 2 another ("b").
SAME = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)


def test_the_loss_of_equal_logits_is_log_of_the_batch_size():
    # Every row and column of the softmax is 1/3, whatever the targets.
    np.testing.assert_allclose(loss(SAME, np.zeros((3, 3))), [math.log(3)] * 3, 1e-6)
    np.testing.assert_allclose(loss(np.eye(3), np.zeros((3, 3))), [math.log(3)] * 3)


def test_a_repeated_caption_is_a_positive_not_a_negative():
    logits = 50 * SAME  # each image scores both copies of its caption alike
    # The softmax of row 0 is (1/2, 1/2, 0): the targets' normalised row, so
    # the cross-entropy is its entropy, log 2, and pair 2's is 0.
    np.testing.assert_allclose(loss(SAME, logits), [math.log(2)] * 2 + [0], atol=1e-6)
    # Raising the score of image 0 for the other copy of its caption changes
    # nothing at first order (it is not pushed away)...
    assert abs(slope(SAME, logits, (0, 1))) < 1e-3
    # ...while CLIP's identity targets count it as a negative: the softmax's
    # 1/2 in row 0 and in column 1, halved and averaged over the batch: 1/6.
    assert slope(np.eye(3), logits, (0, 1)) == pytest.approx(1 / 6, rel=1e-2)


def slope(targets, logits, at, eps=1e-2) -> float:
    """d mean loss / d logits[at], by a central difference."""
    up, down = logits.copy(), logits.copy()
    up[at] += eps
    down[at] -= eps
    return float(loss(targets, up).mean() - loss(targets, down).mean()) / (2 * eps)


def test_batch_targets_join_equal_captions_and_the_same_image():
    vocab = Vocabulary(["a", "b", "c"], max_len=4)
    captions = ["a b", "A  b.", "c", "b c"]  # the first two are equal once cleaned
    keys = caption_keys(captions)
    assert keys.tolist() == [0, 0, 1, 2]
    rows = np.array([0, 1, 2, 2])  # the last two captions share an image
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    batches = PairBatches(
        vocab.encode_batch(captions), rows, keys, {"features": features}, 4, False
    )
    inputs, targets = batches.batch(np.arange(4))
    expected = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert targets.tolist() == expected
    assert inputs["tokens"][0].tolist() == [1, 4, 5, 2]  # <start> a b <end>
    np.testing.assert_array_equal(inputs["features"], features[rows])


# --- ranks and top k --------------------------------------------------------------


def test_recall_at_k_and_median_rank_of_a_hand_made_matrix():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.2],  # relevant: 0, first at rank 1
            [0.9, 0.8, 0.1, 0.7],  # relevant: 3, rank 3
            [0.3, 0.3, 0.9, 0.1],  # relevant: 1 (tied with 0, which comes first): 3
            [0.1, 0.2, 0.3, 0.4],  # relevant: 2 and 3: rank 1
        ]
    )
    relevant = np.zeros((4, 4), bool)
    relevant[0, 0] = relevant[1, 3] = relevant[2, 1] = relevant[3, 2:] = True
    out = rank_metrics(scores, relevant, ks=(1, 2, 3))
    assert out == {
        "R@1": 0.5,
        "R@2": 0.5,
        "R@3": 1.0,
        "median_rank": 2.0,
        "queries": 4,
    }
    with pytest.raises(ValueError, match="relevant"):
        rank_metrics(scores, np.zeros((4, 4), bool))


def test_top_k_is_a_sort_cut_short_with_ties_to_the_lower_column():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 50)).round(1)  # many ties
    index, values = top_k(scores, 7)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(index, order)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, order, 1))
    one, _ = top_k(np.array([0.2, 0.9, 0.9]), 10)  # more than there are
    assert one.tolist() == [1, 2, 0]


# --- the index and the Retriever, with scripted embeddings ---------------------------

WORDS = ["nodule", "cyst", "left", "right"]  # ids 4..7


class Scripted:
    """Text: the mean of one-hot word vectors; an image's features are its vector."""

    dim, uses_grid = 4, False

    def embed_texts(self, tokens):
        onehot = np.zeros((len(tokens), 4), np.float32)
        for i, row in enumerate(np.asarray(tokens)):
            for t in row[(row >= 4)]:
                onehot[i, t - 4] += 1
        return onehot / np.maximum(np.linalg.norm(onehot, axis=1, keepdims=True), 1e-9)

    def embed_images(self, features, grid=None):
        x = np.asarray(features, np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def scripted_index() -> Index:
    images = np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]  # image 3 is like image 0
    return Index(
        image_ids=np.array(["i0", "i1", "i2", "i3"]),
        paths=np.array(["a.png", "b.png", "c.png", "d.png"]),
        splits=np.array(["train", "train", "test", "test"]),
        image_captions=np.array(["nodule", "cyst", "left", "nodule"]),
        images=images,
        captions=np.array(["nodule", "cyst", "left"]),
        caption_splits=np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1]], bool),
        caption_images=np.array(["i0", "i1", "i2"]),
        texts=np.eye(4, dtype=np.float32)[:3],
        model="digest",
    )


def scripted_retriever() -> Retriever:
    vocab = Vocabulary(WORDS, max_len=5)
    return Retriever(Scripted(), vocab, scripted_index(), tiny_config())


def test_the_index_round_trips_exactly_without_pickles(tmp_path):
    index = scripted_index()
    index.save(tmp_path / "index.npz")
    again = Index.load(tmp_path / "index.npz")
    for name in ("image_ids", "splits", "images", "caption_splits", "texts"):
        np.testing.assert_array_equal(getattr(again, name), getattr(index, name))
    assert again.model == "digest"
    assert again.caption_rows("train").tolist() == [0, 1]
    assert again.image_rows("test").tolist() == [2, 3]


def test_search_text_ranks_images_and_names_unknown_words():
    found = scripted_retriever().search_text("Nodule, please!", k=3)
    assert found["image_id"].tolist()[:2] == ["i0", "i3"]  # both exactly "nodule"
    assert found["score"].tolist()[:2] == pytest.approx([1.0, 1.0])
    assert found["path"].tolist()[:2] == ["a.png", "d.png"]
    assert found.attrs["unknown_words"] == ["please"]
    only_test = scripted_retriever().search_text("nodule", k=1, split="test")
    assert only_test["image_id"].tolist() == ["i3"]
    with pytest.raises(QueryError, match="No word of 'tumour' is in"):
        scripted_retriever().search_text("tumour")


def test_search_image_and_the_retrieval_captioner_use_known_captions():
    retriever = scripted_retriever()
    found = retriever.search_image(np.array([0.1, 0.0, 1.0, 0.0]), k=2)
    assert found["caption"].tolist() == ["left", "nodule"]
    assert found["image_id"].tolist() == ["i2", "i0"]
    # The retrieval captioner picks among training captions only: "left"
    # occurs in the test split alone.
    captions = retriever.caption_features(np.array([[0, 0, 1, 0], [0, 1, 0, 0.0]]))
    assert captions == ["nodule", "cyst"]  # a tie goes to the first


# --- a tiny dual encoder from its run folder ----------------------------------------


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory):
    """A dual encoder trained on the shared tiny run's features (it reads the grid),
    with a copy of that captioner beside it for the likelihood ranking."""
    from radcap.evaluation.ranking import evaluate_retrieval
    from radcap.retrieval.train import train_retrieval

    tiny_dir, dataset = shared_tiny_run(tmp_path_factory)
    root = tiny_dir.parents[1]
    checkpoints = tmp_path_factory.mktemp("retrieval-checkpoints")
    shutil.copytree(tiny_dir, checkpoints / "tiny")
    config = tiny_config().replace(
        name="tiny-retrieval", checkpoints_dir=str(checkpoints), batch_size=8
    )
    summary = train_retrieval(config, dataset, root, verbose=False)
    metrics = evaluate_retrieval(config.run_dir(root), root, verbose=False)
    return config.run_dir(root), root, summary, metrics


def test_a_tiny_dual_encoder_is_trained_indexed_and_scored(retrieval_run):
    run_dir, root, summary, metrics = retrieval_run
    assert summary["epochs_run"] == 2 and runs.is_retrieval_run(run_dir)
    assert not (run_dir / runs.BACKUP).exists() and (run_dir / runs.LOGS).is_dir()
    index = Index.load(run_dir / runs.INDEX)
    assert len(index.image_ids) == len(set(index.image_ids)) > 0
    np.testing.assert_allclose(np.linalg.norm(index.images, axis=1), 1, rtol=1e-5)
    section = metrics["retrieval"]
    assert section == json.loads((run_dir / runs.METRICS).read_text())["retrieval"]
    for name in ("image_to_text", "text_to_image"):
        figures = section[name]
        assert 0 <= figures["R@1"] <= figures["R@5"] <= figures["R@10"] <= 1
        assert figures["median_rank"] >= 1
    assert set(section["baselines"]) == {"random", "nearest_neighbour", "likelihood"}
    assert section["baselines"]["likelihood"]["run"] == "tiny"
    assert section["absent"] == {}


def test_a_retriever_loads_the_run_and_its_own_images_come_first(retrieval_run):
    run_dir, root, *_ = retrieval_run
    import radcap

    retriever = radcap.Retriever.load(run_dir)
    index = retriever.index
    # An indexed image's own cached features give back its indexed embedding.
    from radcap.data import load
    from radcap.features.splits import load_split

    split = load_split(retriever.config, load(retriever.config, root), "test", root)
    features, grid = split.image_features()
    mine = retriever.embed_features(features, grid)
    rows = [list(index.image_ids).index(i) for i in split.image_ids]
    np.testing.assert_allclose(mine, index.images[rows], atol=1e-5)
    # The traced text tower embeds a training caption as the index did.
    row = index.caption_rows("train")[0]
    text = retriever.embed_text(str(index.captions[row]))
    np.testing.assert_allclose(text[0], index.texts[row], atol=1e-5)
    with pytest.raises(runs.RunError, match="holds a captioner"):
        Retriever.load(run_dir.parent / "tiny")
    from radcap.decoding.captioner import Captioner

    with pytest.raises(runs.RunError, match="is a retrieval run"):
        Captioner.load(run_dir)


def test_the_search_command_prints_json_names_unknown_words_and_refuses_none(
    retrieval_run, capsys, monkeypatch
):
    run_dir, root, *_ = retrieval_run
    patch_tiny_backbone(monkeypatch)
    word = Retriever.load(run_dir).vocab.words[4]
    argv = ["search", "--run", str(run_dir), "--root", str(root), "--json", "--k"]
    assert cli.main([*argv, "2", word, "zzyzx"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 and set(lines[0]) >= {"path", "score", "caption"}
    assert "not in the vocabulary, ignored: zzyzx" in err
    assert cli.main([*argv, "1", "zzyzx"]) == 2
    assert "No word of 'zzyzx' is in" in capsys.readouterr().err
    image = Index.load(run_dir / runs.INDEX).paths[0]
    assert cli.main([*argv, "3", "--image", str(image)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and set(lines[0]) == {"caption", "score", "image_id", "path"}


def test_bad_retrieval_settings_and_searches_get_one_line(tmp_path, capsys):
    argv = ["retrieval", "--root", str(tmp_path), "--set", "retrieval_dim=0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Config.retrieval_dim=0 is invalid" in err and err.count("\n") == 1
    assert cli.main(["search", "--run", str(tmp_path), "--root", str(tmp_path)]) == 2
    assert "takes a text or --image FILE" in capsys.readouterr().err


def test_a_query_is_cleaned_in_the_graph_as_clean_caption_cleans_it():
    """`radcap.retrieval.query` (the library's and the export's) against
    `clean_caption`, on text `fold_unicode` leaves as it is, and its ids
    against `Vocabulary.encode` of the known words."""
    from radcap.retrieval.query import QueryTokens, query_words

    texts = [
        " Axial T2-weighted MRI (arrow): a 3.5 cm mass.\n",
        "a./b a..b -x- c5/6.7 50% 5.% _under_score A-B-C x/ /y",
        "",
        "tab\there,\tcomma;semi 'quoted' \"twice\" [1] {2} <3> #4 @5",
        "α-fetoprotein ab--cd",
        "LEFT lung NODULE... 1/2 -- 4-/5",
    ]
    words = [[w.decode() for w in row] for row in query_words(texts).to_list()]
    assert words == [clean_caption(t).split() for t in texts]
    vocab = Vocabulary(["left", "lung", "nodule", "mass", "3.5"], max_len=3)
    tokens, known = QueryTokens(vocab)(texts)
    kept = [" ".join(w for w in ws if w in vocab.index) for ws in words]
    expected = vocab.encode_batch(kept)
    assert tokens.numpy().tolist() == expected[:, : tokens.shape[1]].tolist()
    assert not expected[:, tokens.shape[1] :].any()
    assert known.numpy().tolist() == [2, 0, 0, 0, 0, 3]
