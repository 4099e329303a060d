"""A reference kept on purpose for bench_decode.py: radcap 0.2's batched search.

The search as radcap 0.2 ran it, a NumPy loop around a compiled step.
`bench_decode.py` times it beside radcap's search of today (the same search
in TensorFlow operations, compiled into one graph with the model:
`radcap.decoding.compiled.CompiledSearch`); it is not radcap's decoding,
which lives in `radcap.decoding.search` only. The step function is
`radcap.decoding.compiled.CompiledStep`.

In radcap 0.2 the searches were written once, against a step function

    step(tokens (B,), state) -> (log_probs (B, vocab_size), state, attention (B, R))

where `state` is a tuple of arrays whose first axis is the batch. Search code
only reorders states along that axis, so the same code drives the trained
decoder (`CompiledStep` over a captioner's `encode` and `step`) and the
scripted step functions of the tests. An entry that the step hands back as
the very object it got (the image's projections) is the same for every beam
of an image, so beam search does not reorder it. Every image in the batch
advances together; each sequence stops at its own `<end>`.

Both searches follow `Rules`: tokens never written (the captioner bars
`<pad>`, `<start>` and `<unk>`), a minimum length before `<end>` (1: never
an empty caption), and no repeated n-gram (`no_repeat_ngram=3`: a token that
would complete a 3-gram already in the caption is never chosen, so no word
or phrase loops: "frontal frontal frontal" may occur once, never a fourth
"frontal"). `Rules(min_len=0, no_repeat_ngram=0)` is the plain search.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from radcap.core.config import NO_REPEAT_NGRAM


@dataclasses.dataclass
class Result:
    """Search output for a batch.

    Attributes:
        tokens: Per image, the generated ids without `<start>`, ending with
            `<end>` unless `max_len` was reached.
        scores: Per image, the summed log-probability of `tokens`.
        attention: Per image, `(len(tokens), R)` attention weights, one row
            per generated token.
    """

    tokens: list[list[int]]
    scores: np.ndarray
    attention: list[np.ndarray]


def _take(state, index):
    return tuple(np.take(s, index, axis=0) for s in state)


def repeated_ngram_tokens(seqs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokens that would repeat an n-gram, for each sequence.

    A token is banned for a sequence when its last `n - 1` tokens, followed
    by the token, already occur in it.

    Args:
        seqs: `(rows, t)` tokens generated so far (without `<start>`).
        n: The n-gram length; below 1 bans nothing.

    Returns:
        `(rows, tokens)`: index arrays, so `log_probs[rows, tokens] = -inf`
        bans them (a pair may appear twice).

    >>> repeated_ngram_tokens(np.array([[5, 6, 5, 6, 5], [5, 6, 7, 8, 9]]), 2)
    (array([0, 0]), array([6, 6]))
    """
    rows, t = seqs.shape
    if n < 1 or t < n:  # (n = 1 with t >= 1: every token seen is banned)
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(seqs, n, axis=1)  # (rows, W, n)
    prefix = seqs[:, t - n + 1 :]  # (rows, n - 1): the last n - 1 tokens
    match = np.all(windows[:, :, : n - 1] == prefix[:, None, :], axis=2)  # (rows, W)
    row, where = np.nonzero(match)
    return row, windows[row, where, n - 1].astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Rules:
    """What a search may never write.

    Attributes:
        never: Token ids never generated (radcap's captioner passes `<pad>`,
            `<start>` and `<unk>`: a caption is made of words).
        min_len: `<end>` is barred until this many words were written, so a
            caption is never empty (with the default 1).
        no_repeat_ngram: No n-gram of this length occurs twice; 0: off.
    """

    never: tuple = ()
    min_len: int = 1
    no_repeat_ngram: int = NO_REPEAT_NGRAM

    def apply(self, log_probs: np.ndarray, seqs: np.ndarray, end_id: int) -> np.ndarray:
        """`log_probs` `(rows, V)` with `-inf` for every barred next token.

        Args:
            log_probs: The step's scores; returned as they are when nothing
                is barred, else a changed copy (the step's array stays).
            seqs: `(rows, t)` tokens generated so far.
            end_id: Id of `<end>`.
        """
        t = seqs.shape[1]
        if not (self.never or t < self.min_len or self.no_repeat_ngram):
            return log_probs
        log_probs = np.array(log_probs)
        log_probs[:, list(self.never)] = -np.inf
        if t < self.min_len:
            log_probs[:, end_id] = -np.inf
        if self.no_repeat_ngram:
            log_probs[repeated_ngram_tokens(seqs, self.no_repeat_ngram)] = -np.inf
        return log_probs


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's `k` largest scores, best first.

    The same as `np.argsort(-scores, axis=1, kind="stable")[:, :k]` (ties go
    to the lower index, `-inf` entries last in index order), but `k` passes
    of `argmax` instead of a full sort: a beam step keeps 3 to 5 of tens of
    thousands of candidates per image, and the sort cost more than the model.

    Args:
        scores: `(rows, n)` float scores, `n >= k`; may hold `-inf`.
        k: How many to keep.

    Returns:
        `(rows, k)` int64 indices.
    """
    # -inf becomes the lowest finite value, so a picked entry (set to -inf
    # below) is never picked again while unpicked -inf entries remain.
    work = np.where(np.isneginf(scores), np.finfo(np.float64).min, scores)
    rows = np.arange(len(scores))
    picks = np.empty((len(scores), k), np.int64)
    for j in range(k):
        picks[:, j] = np.argmax(work, axis=1)  # first maximum: the lowest index
        work[rows, picks[:, j]] = -np.inf
    return picks


def greedy_search(
    step,
    state,
    batch_size: int,
    start_id: int,
    end_id: int,
    max_len: int,
    rules: Rules = Rules(),
) -> Result:
    """Pick the most likely next token for every image until `<end>` or `max_len`.

    Args:
        step: Step function (see the module docstring).
        state: Initial state for `batch_size` images.
        batch_size: Number of images.
        start_id: Id of `<start>`, fed first.
        end_id: Id of `<end>`; a sequence that emits it is finished.
        max_len: Most words per caption; a caption cut at `max_len` has no `<end>`.
        rules: What may never be written (`Rules`: barred tokens, a minimum
            length, no repeated n-gram of 3 by default).

    Returns:
        A `Result`.
    """
    tokens = np.full(batch_size, start_id, np.int32)
    out = np.zeros((batch_size, max_len), np.int32)
    scores = np.zeros(batch_size, np.float64)
    lengths = np.full(batch_size, max_len, np.int64)
    done = np.zeros(batch_size, bool)
    weights = []
    for t in range(max_len):
        log_probs, state, attention = step(tokens, state)  # (B, V), ..., (B, R)
        log_probs = rules.apply(log_probs, out[:, :t], end_id)
        tokens = np.argmax(log_probs, axis=-1).astype(np.int32)  # (B,)
        scores += np.where(done, 0.0, log_probs[np.arange(batch_size), tokens])
        out[:, t] = tokens
        weights.append(attention)
        ended = ~done & (tokens == end_id)
        lengths[ended] = t + 1
        done |= ended
        if done.all():
            break
    weights = np.stack(weights, 1)  # (B, steps, R)
    seqs = [out[i, : lengths[i]].tolist() for i in range(batch_size)]
    return Result(seqs, scores, [weights[i, : len(s)] for i, s in enumerate(seqs)])


def beam_search(
    step,
    state,
    batch_size: int,
    start_id: int,
    end_id: int,
    max_len: int,
    beam: int = 3,
    length_penalty: float = 0.0,
    rules: Rules = Rules(),
) -> Result:
    """Keep the `beam` best partial captions per image; pick the best finished one.

    Beams of all images run as one batch of `batch_size * beam` sequences. A
    finished beam carries on with `<end>` at no cost, so it competes with
    the open ones on its final score. At the end each image's beams are
    ranked by `log_prob / length ** length_penalty` (length counts `<end>`);
    `length_penalty=0` ranks by log-probability alone. With `beam=1` this is
    exactly greedy search.

    Args:
        step, batch_size, start_id, end_id, max_len, rules: As for
            `greedy_search` (the rules hold within each beam).
        state: Initial state for `batch_size` images (not yet repeated).
        beam: Beam width.
        length_penalty: Exponent of the length normalisation.

    Returns:
        A `Result` with each image's best beam.
    """
    k = int(beam)
    state = _take(state, np.repeat(np.arange(batch_size), k))
    tokens = np.full(batch_size * k, start_id, np.int32)
    scores = np.full((batch_size, k), -np.inf)
    scores[:, 0] = 0.0  # one live beam at first, so the k beams start distinct
    seqs = np.zeros((batch_size, k, 0), np.int32)
    weights = None
    done = np.zeros((batch_size, k), bool)
    lengths = np.full((batch_size, k), max_len, np.int64)
    rows = np.arange(batch_size)[:, None]
    for t in range(max_len):
        before = state
        log_probs, state, attention = step(tokens, state)  # (B*k, V), ..., (B*k, R)
        vocab_size = log_probs.shape[-1]
        log_probs = rules.apply(
            log_probs.astype(np.float64), seqs.reshape(batch_size * k, -1), end_id
        ).reshape(batch_size, k, vocab_size)
        log_probs[done] = -np.inf
        log_probs[done, end_id] = 0.0
        candidates = (scores[..., None] + log_probs).reshape(batch_size, k * vocab_size)
        best = top_k(candidates, k)  # (B, k)
        parent, token = best // vocab_size, (best % vocab_size).astype(np.int32)
        scores = np.take_along_axis(candidates, best, axis=1)
        was_done = done[rows, parent]
        lengths = np.where(was_done, lengths[rows, parent], max_len)
        done = was_done | (token == end_id)
        lengths = np.where(done & ~was_done, t + 1, lengths)
        seqs = np.concatenate([seqs[rows, parent], token[..., None]], axis=2)
        attention = attention.reshape(batch_size, k, -1)[rows, parent][:, :, None]
        weights = (
            attention
            if weights is None
            else np.concatenate([weights[rows, parent], attention], axis=2)
        )  # (B, k, t + 1, R)
        flat = (rows * k + parent).reshape(-1)  # parents stay within their image
        state = tuple(
            new if new is old else np.take(new, flat, axis=0)
            for new, old in zip(state, before)
        )
        tokens = token.reshape(-1)
        if done.all():
            break
    return _best_beams(seqs, scores, lengths, weights, length_penalty)


def _best_beams(seqs, scores, lengths, weights, length_penalty: float) -> Result:
    """Each image's best beam by `score / length ** length_penalty`."""
    final = scores / np.power(lengths, length_penalty)
    pick = np.argmax(final, axis=1)  # (B,)
    out = [seqs[i, p, : lengths[i, p]].tolist() for i, p in enumerate(pick)]
    return Result(
        out,
        scores[np.arange(len(pick)), pick],
        [weights[i, pick[i], : len(o)] for i, o in enumerate(out)],
    )
