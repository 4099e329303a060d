"""Search by caption: exact rankings from a scripted model, teacher forcing checked."""

import types

import numpy as np
import pytest

from radcap.core.config import preset
from radcap.core.text import Vocabulary
from radcap.decoding.captioner import Captioner
from radcap.evaluation.retrieval import caption_log_likelihood, rank_images, recall_at_k
from radcap.models.merge import build_captioner, feature_stats

VOCAB = Vocabulary(["alpha", "beta", "gamma"], max_len=5)  # ids 4, 5, 6
ALPHA, BETA, GAMMA = 4, 5, 6
# p(first word | image) for alpha, beta, gamma; row 2 looks most like "alpha"
# but its reference is "gamma" (a decoy).
PROBS = np.array(
    [
        [0.50, 0.30, 0.20],
        [0.15, 0.60, 0.25],
        [0.75, 0.10, 0.15],
        [0.40, 0.25, 0.35],
    ]
)
REFERENCES = ["alpha", "beta", "gamma", "alpha"]


def scripted():
    """A captioner whose first word follows PROBS[image]; then `<end>` for sure.

    The "features" of an image are its log-probabilities over the vocabulary.
    """

    def model(inputs, training=False):
        features, tokens = inputs["features"], inputs["tokens"]  # (B, V), (B, T)
        logits = np.full((*tokens.shape, VOCAB.size), -1e9)  # (B, T, V)
        logits[:, 0] = features
        logits[:, 1:, VOCAB.end_id] = 0.0
        return logits

    features = np.full((len(PROBS), VOCAB.size), -60.0)  # specials: ~0 mass
    features[:, [ALPHA, BETA, GAMMA]] = np.log(PROBS)
    return types.SimpleNamespace(vocab=VOCAB, model=model), features


def test_log_likelihood_is_the_sum_of_target_log_probs():
    captioner, features = scripted()
    for word, column in (("alpha", 0), ("Beta.", 1), ("gamma", 2)):
        scores = caption_log_likelihood(captioner, features, caption=word)
        np.testing.assert_allclose(scores, np.log(PROBS[:, column]), atol=1e-12)
    # Two words: the second is scored where the script puts all mass on <end>.
    scores = caption_log_likelihood(captioner, features, caption="alpha beta")
    assert np.all(scores < -1e8)


def test_ranking_puts_the_planted_match_first():
    captioner, features = scripted()
    found = rank_images(captioner, "beta", features, ids=list("wxyz"), top=2)
    assert found["image_id"].tolist() == ["x", "w"]  # p(beta) 0.6, then 0.3
    assert found["row"].tolist() == [1, 0]
    np.testing.assert_allclose(found["log_likelihood"], np.log([0.6, 0.3]))
    # The decoy outranks the real matches for "alpha".
    found = rank_images(captioner, "alpha", features, top=None, batch_size=3)
    assert found["row"].tolist() == [2, 0, 3, 1]


def test_recall_at_k_by_hand():
    captioner, features = scripted()
    # alpha: rows 2, 0, 3, 1 -> first match (row 0) at rank 2
    # beta:  row 1 first -> rank 1
    # gamma: rows 3, 1, 0, 2 -> its only match at rank 4
    recall = recall_at_k(captioner, features, None, REFERENCES, ks=(1, 2, 3, 4))
    assert recall == {
        "recall@1": 1 / 3,
        "recall@2": 2 / 3,
        "recall@3": 2 / 3,
        "recall@4": 1.0,
        "queries": 3,
    }
    # A dict of references is read in the order of the feature rows' ids.
    ids = ["i0", "i1", "i2", "i3"]
    as_dict = {
        k: [r, "another caption"] for k, r in reversed(list(zip(ids, REFERENCES)))
    }
    recall = recall_at_k(captioner, features, references=as_dict, ids=ids, ks=(1,))
    # "another caption" is a fourth query: every image has it, so it hits at 1.
    assert recall == {"recall@1": 2 / 4, "queries": 4}


def test_bad_queries_and_references_are_refused():
    captioner, features = scripted()
    with pytest.raises(ValueError, match="has no words"):
        caption_log_likelihood(captioner, features, caption=" ... ")
    with pytest.raises(ValueError, match="cover 2 images but features has 4 rows"):
        recall_at_k(captioner, features, references=["alpha", "beta"])
    attention = types.SimpleNamespace(vocab=VOCAB, model=None, attention=True)
    with pytest.raises(ValueError, match="pass the grid features"):
        caption_log_likelihood(attention, features, caption="alpha")


@pytest.mark.parametrize("attention, cell", [(False, "lstm"), (True, "gru")])
def test_teacher_forcing_agrees_with_the_decoder_step(attention, cell):
    """The training model, teacher-forced, gives what decoding step by step gives."""
    sizes = dict(units=16, embed_dim=8, attention_units=8, dropout=0.0)
    config = preset("demo", attention=attention, cell=cell, **sizes)
    rng = np.random.default_rng(0)
    features = rng.gamma(1.0, size=(5, 4096)).astype(np.float32)
    grid = rng.gamma(1.0, size=(5, 49, 512)).astype(np.float32) if attention else None
    stats = {"fc2": feature_stats(features)}
    if attention:
        stats["grid"] = feature_stats(grid)
    vocab = Vocabulary(["alpha", "beta", "gamma"], max_len=5)
    captioner = Captioner(build_captioner(config, vocab.size, stats), vocab, config)

    caption = "beta gamma alpha"
    scores = caption_log_likelihood(captioner, features, grid, caption, batch_size=2)
    ids = vocab.encode(caption)
    state = captioner.step.start(features, grid)
    expected = np.zeros(len(features))
    for token, target in zip(ids[:-1], ids[1:]):
        log_probs, state, _ = captioner.step(np.full(len(features), token), state)
        expected += log_probs[:, target]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
