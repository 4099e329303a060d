"""Greedy and beam search on scripted step functions: exact expected sequences."""

import numpy as np
import pytest

from radcap.decoding.captioner import Captioner
from radcap.decoding.search import Rules, beam_search, greedy_search
from radcap.models.runs import RunError

PAD, START, END, A, B, C = range(6)
VOCAB = 6


def scripted(table):
    """A step function whose next-token distribution depends on the last token only."""

    def step(tokens, state):
        (steps,) = state
        log_probs = np.full((len(tokens), VOCAB), -1e9)
        for i, token in enumerate(tokens):
            for nxt, p in table.get(int(token), {END: 1.0}).items():
                log_probs[i, nxt] = np.log(p)
        attention = np.tile(np.eye(1, 4, int(steps[0]) % 4), (len(tokens), 1))
        return log_probs, (steps + 1,), attention

    return step


# Greedy takes A (0.5), then B (0.4), then END: p = 0.18.
# Beam 2 keeps B (0.45 total path "B END" = 0.36) and wins.
TABLE = {
    START: {A: 0.5, B: 0.4, C: 0.1},
    A: {B: 0.4, C: 0.3, END: 0.3},
    B: {END: 0.9, C: 0.1},
    C: {END: 1.0},
    END: {END: 1.0},
}


def run(search, batch=2, **kwargs):
    state = (np.zeros(batch),)
    return search(
        scripted(TABLE), state, batch_size=batch, start_id=START, end_id=END, **kwargs
    )


def test_greedy_exact_sequence_and_score():
    result = run(greedy_search, max_len=5)
    assert result.tokens == [[A, B, END], [A, B, END]]
    np.testing.assert_allclose(result.scores, np.log(0.5 * 0.4 * 0.9))


def test_beam_finds_the_better_sequence():
    result = run(beam_search, max_len=5, beam=2)
    assert result.tokens == [[B, END], [B, END]]
    np.testing.assert_allclose(result.scores, np.log(0.4 * 0.9))


@pytest.mark.parametrize("no_repeat", [0, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy_on_random_steps(seed, no_repeat):
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(
        np.ones(VOCAB) * 0.3, size=(VOCAB, VOCAB)
    )  # (prev2, prev, next)

    def step(tokens, state):
        (prev,) = state
        probs = table[prev, tokens]
        return np.log(probs + 1e-12), (np.asarray(tokens),), np.zeros((len(tokens), 1))

    start = (np.zeros(7, np.int64),)
    kwargs = dict(
        batch_size=7,
        start_id=START,
        end_id=END,
        max_len=12,
        rules=Rules(never=(PAD, C), min_len=2, no_repeat_ngram=no_repeat),
    )
    greedy = greedy_search(step, start, **kwargs)
    beam = beam_search(step, start, beam=1, **kwargs)
    assert greedy.tokens == beam.tokens
    np.testing.assert_allclose(greedy.scores, beam.scores)


def test_length_penalty_prefers_the_longer_caption():
    table = {
        START: {A: 0.5, B: 0.45, C: 0.05},
        A: {C: 0.8, END: 0.2},
        B: {END: 1.0},
        C: {END: 1.0},
        END: {END: 1.0},
    }
    kwargs = dict(batch_size=1, start_id=START, end_id=END, max_len=5, beam=2)
    state = (np.zeros(1),)
    assert beam_search(scripted(table), state, length_penalty=0.0, **kwargs).tokens == [
        [B, END]
    ]
    assert beam_search(scripted(table), state, length_penalty=1.0, **kwargs).tokens == [
        [A, C, END]
    ]


def test_max_len_cuts_captions_without_end():
    table = {START: {A: 1.0}, A: {A: 0.9, END: 0.1}, END: {END: 1.0}}
    for search, extra in ((greedy_search, {}), (beam_search, {"beam": 3})):
        result = search(
            scripted(table),
            (np.zeros(1),),
            batch_size=1,
            start_id=START,
            end_id=END,
            max_len=4,
            rules=Rules(no_repeat_ngram=0),
            **extra,
        )
        assert result.tokens == [[A, A, A, A]]


# "A" is always the likeliest word, then "B": repetition is what the model wants.
LOOP = {
    START: {A: 0.6, B: 0.3, C: 0.1},
    A: {A: 0.6, B: 0.3, END: 0.1},
    B: {A: 0.6, B: 0.3, END: 0.1},
    C: {END: 1.0},
    END: {END: 1.0},
}


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, [A, A, A, A, A, A]),
        (3, [A, A, A, B, A, A]),  # a second A A A is barred; cut at max_len
        (2, [A, A, B, A, END]),  # A A, then A B, B A, and A A / A B are taken
        (1, [A, B, END]),  # every word at most once
    ],
)
def test_no_repeat_ngram_exact_captions(n, expected):
    assert one_caption_both_ways(LOOP, 6, Rules(no_repeat_ngram=n)) == expected


def one_caption_both_ways(table, max_len, rules):
    """The caption of one image by greedy search, checked equal to beam k=1's."""
    kwargs = dict(batch_size=1, start_id=START, end_id=END, max_len=max_len)
    greedy = greedy_search(scripted(table), (np.zeros(1),), rules=rules, **kwargs)
    beam = beam_search(scripted(table), (np.zeros(1),), rules=rules, beam=1, **kwargs)
    assert greedy.tokens == beam.tokens, rules
    return greedy.tokens[0]


def test_no_repeat_ngram_is_on_by_default_with_trigrams():
    kwargs = dict(batch_size=1, start_id=START, end_id=END, max_len=6)
    for search in (greedy_search, beam_search):
        result = search(scripted(LOOP), (np.zeros(1),), **kwargs)
        assert result.tokens == [[A, A, A, B, A, A]]


# The best first word is a barred one (think `<unk>`), and then `<end>`.
BARRED = {
    START: {PAD: 0.4, END: 0.35, A: 0.15, B: 0.1},
    A: {C: 0.6, END: 0.4},
    B: {END: 1.0},
    C: {END: 1.0},
    END: {END: 1.0},
}


@pytest.mark.parametrize(
    "rules, expected",
    [
        (Rules(min_len=0, no_repeat_ngram=0), [PAD, END]),  # the model's own best
        (Rules(never=(PAD,), min_len=0, no_repeat_ngram=0), [END]),  # empty caption
        (Rules(never=(PAD,)), [A, C]),  # min_len=1: a word first
        (Rules(never=(PAD, C)), [A, END]),
    ],
)
def test_barred_tokens_and_minimum_length_exact(rules, expected):
    assert one_caption_both_ways(BARRED, 2, rules) == expected


def test_repeated_ngram_tokens_exact():
    from radcap.decoding.search import repeated_ngram_tokens

    seqs = np.array([[5, 6, 5, 6, 5], [5, 6, 7, 8, 9], [4, 4, 4, 4, 4]])
    rows, tokens = (np.asarray(x) for x in repeated_ngram_tokens(seqs, 2))
    assert (
        sorted(zip(rows.tolist(), tokens.tolist()))
        == [(0, 6), (0, 6), (2, 4)] + [(2, 4)] * 3
    )
    rows, tokens = (np.asarray(x) for x in repeated_ngram_tokens(seqs, 3))
    pairs = sorted(zip(rows.tolist(), tokens.tolist()))
    assert pairs == [(0, 6), (2, 4), (2, 4), (2, 4)]
    assert np.size(repeated_ngram_tokens(seqs[:, :1], 3)[0]) == 0  # too short
    assert np.size(repeated_ngram_tokens(seqs[:, :0], 1)[0]) == 0  # nothing yet
    assert np.size(repeated_ngram_tokens(seqs, 0)[0]) == 0


def test_each_sequence_stops_at_its_own_end():
    # Image 0 ends after one word, image 1 after three: driven by the state.
    def step(tokens, state):
        (t,) = state
        log_probs = np.full((len(tokens), VOCAB), -1e9)
        stop_at = np.array([1, 3])[: len(tokens)]
        for i in range(len(tokens)):
            log_probs[i, END if t[i] >= stop_at[i] else A] = 0.0
        return log_probs, (t + 1,), np.ones((len(tokens), 2)) / 2

    result = greedy_search(step, (np.zeros(2),), 2, START, END, max_len=10)
    assert result.tokens == [[A, END], [A, A, A, END]]
    assert [a.shape for a in result.attention] == [(2, 2), (4, 2)]


def test_beam_attention_follows_the_chosen_beam():
    result = run(beam_search, batch=1, max_len=5, beam=2)
    # One attention row per generated token, from the step that produced it.
    np.testing.assert_array_equal(result.attention[0], np.eye(4)[:2])


def test_captioner_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunError, match="not a radcap run folder.*vocab.json"):
        Captioner.load(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        Captioner.load(tmp_path / "nope")


@pytest.mark.parametrize("seed", range(20))
def test_top_k_matches_a_stable_sort(seed):
    """The searches rely on `tf.math.top_k` breaking ties as a stable sort."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    # Few distinct values, so ties are common; some -inf (finished beams).
    scores = rng.integers(-4, 1, size=(6, 30)).astype(np.float64)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0] = -np.inf  # a row of nothing but -inf
    for k in (1, 3, 5):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(tf.math.top_k(scores, k).indices, expected)


def history_step(vocab, regions, seed):
    """A step function whose next word depends on the whole history of its row.

    The state is `(code, image)`: `code` hashes every token so far, `image`
    never changes (and is handed back as the same object). Attention is a
    one-hot vector that also depends on the code, so it must follow the beams.
    """
    table = np.random.default_rng(seed).normal(size=(97, vocab)) * 2
    log_table = table - np.log(np.exp(table).sum(1, keepdims=True))

    def step(tokens, state):
        code, image = state
        code = (
            np.asarray(code) * 7 + np.asarray(tokens)
        ) % 97  # (B,) every token so far, this one too
        row = (code + np.asarray(image)[:, 0]) % 97
        attention = np.eye(regions)[row % regions]
        return log_table[row], (code, image), attention

    return step, log_table


def repeats(tokens, token, n):
    """Whether `tokens + [token]` ends with an n-gram that `tokens` already holds."""
    if not n or len(tokens) < n - 1:
        return False
    grams = {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
    return (*tokens[len(tokens) - n + 1 :], token) in grams


def reference_beam(
    log_table, regions, image, k, max_len, length_penalty, n=0, never=(), min_len=0
):
    """Beam search for one image, written plainly: every candidate, sorted."""
    # tokens, score, code (as the step function hashes them), done, attention
    beams = [([], 0.0, (1 * 7 + START) % 97, False, [])]
    for _ in range(max_len):
        candidates = []
        for p, (tokens, score, code, done, att) in enumerate(beams):
            row = (code + image) % 97
            for token in range(log_table.shape[1]):
                if done:
                    if token == END:
                        candidates.append((score, p, token, tokens, code, True, att))
                    continue
                if repeats(tokens, token, n) or token in never:
                    continue
                if token == END and len(tokens) < min_len:
                    continue
                new_att = [*att, np.eye(regions)[row % regions]]
                candidates.append(
                    (
                        score + log_table[row, token],
                        p,
                        token,
                        [*tokens, token],
                        (code * 7 + token) % 97,
                        token == END,
                        new_att,
                    )
                )
        candidates.sort(key=lambda c: (-c[0], c[1] * 100 + c[2]))
        beams = [(c[3], c[0], c[4], c[5], c[6]) for c in candidates[:k]]
        if all(b[3] for b in beams):
            break
    final = [b[1] / max(len(b[0]), 1) ** length_penalty for b in beams]
    best = beams[int(np.argmax(final))]
    return best[0], best[1], np.array(best[4])


@pytest.mark.parametrize(
    "no_repeat, never, min_len", [(0, (), 0), (2, (), 1), (3, (PAD, C), 2)]
)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_beam_search_matches_a_plain_reference(seed, k, no_repeat, never, min_len):
    vocab, regions, images, max_len = 7, 5, 4, 6
    length_penalty = 0.7 if seed % 2 else 0.0
    step, log_table = history_step(vocab, regions, seed)
    state = (np.ones(images, np.int64), np.arange(images)[:, None] * 13)
    result = beam_search(
        step,
        state,
        batch_size=images,
        start_id=START,
        end_id=END,
        max_len=max_len,
        beam=k,
        length_penalty=length_penalty,
        rules=Rules(never=never, min_len=min_len, no_repeat_ngram=no_repeat),
    )
    for i in range(images):
        tokens, score, attention = reference_beam(
            log_table,
            regions,
            i * 13,
            k,
            max_len,
            length_penalty,
            no_repeat,
            never,
            min_len,
        )
        assert result.tokens[i] == tokens
        assert result.scores[i] == pytest.approx(score)
        np.testing.assert_array_equal(result.attention[i], attention)
