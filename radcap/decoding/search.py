"""Batched greedy and beam search: the one place captions are generated.

TensorFlow is imported at the first search.

The searches are written once, in TensorFlow operations (a `tf.while_loop`),
against a step function

    step(tokens (B,), state) -> (log_probs (B, vocab_size), state, attention (B, R))

where `state` is a tuple of tensors whose first axis is the batch. They run
eagerly, e.g. over the scripted NumPy step functions of the tests, or
compiled into one graph with a captioner's `encode` and `step`
(`radcap.decoding.compiled.CompiledSearch`: for `Captioner`, the evaluation and
inside the exported SavedModel). Search code only reorders states along the
batch axis; an entry that the step hands back as the very object it got
(the image's projections) is the same for every beam of an image, so beam
search does not reorder it. Each sequence stops at its own `<end>`.

Both searches follow `Rules`: barred tokens, a minimum length, and no
repeated n-gram ("frontal frontal frontal" may occur once, never a fourth
"frontal").
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from radcap.core.config import NO_REPEAT_NGRAM


class _TensorFlow:
    """`tensorflow`, imported when a search first runs (`radcap --help` is quick)."""

    def __getattr__(self, name):
        import tensorflow

        return getattr(tensorflow, name)


tf = _TensorFlow()


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

    @classmethod
    def of(cls, decoded: Decoded) -> Result:
        """The lists of a search's padded tensors (see `Decoded`)."""
        tokens, lengths = np.asarray(decoded.tokens), np.asarray(decoded.lengths)
        seqs = [row[:n].tolist() for row, n in zip(tokens, lengths)]
        weights = [a[:n] for a, n in zip(np.asarray(decoded.attention), lengths)]
        return cls(seqs, np.asarray(decoded.scores, np.float64), weights)


class Decoded(NamedTuple):
    """A search's output as padded tensors (what the compiled graph returns).

    Attributes:
        tokens: `(B, T)` int32 generated ids; row `i` is valid up to `lengths[i]`.
        lengths: `(B,)` int32 tokens per caption, `<end>` included.
        scores: `(B,)` float64 summed log-probabilities.
        attention: `(B, T, R)` float32 attention weights per generated token.
    """

    tokens: object
    lengths: object
    scores: object
    attention: object


def _while(cond, body, loop):
    """`tf.while_loop` that lets every axis of every loop tensor change."""
    array = tf.TensorArray
    relax = lambda x: None if isinstance(x, array) else [None] * x.shape.rank
    shapes = tf.nest.map_structure(lambda x: tf.TensorShape(relax(x)), loop)
    return tf.while_loop(cond, body, loop, shape_invariants=shapes)


def repeated_ngram_tokens(seqs, n: int):
    """The tokens that would repeat an n-gram, for each sequence.

    A token is banned for a sequence when its last `n - 1` tokens, followed
    by the token, already occur in it.

    Args:
        seqs: `(rows, t)` tokens generated so far (without `<start>`).
        n: The n-gram length; below 1 bans nothing.

    Returns:
        `(rows, tokens)`: int32 index tensors; a pair may appear twice.

    >>> [x.numpy().tolist() for x in repeated_ngram_tokens([[5, 6, 5, 6, 5]], 2)]
    [[0, 0], [6, 6]]
    """
    if n < 1:
        return tf.zeros([0], tf.int32), tf.zeros([0], tf.int32)
    # n - 1 impossible tokens in front: every position ends a window, and a
    # window reaching into them never matches the real last n - 1 tokens.
    seqs = tf.cast(seqs, tf.int32)
    padded = tf.concat([tf.fill([tf.shape(seqs)[0], n - 1], -1), seqs], axis=1)
    windows = tf.signal.frame(padded, n, 1, axis=1)  # (rows, t, n)
    prefix = padded[:, tf.shape(padded)[1] - (n - 1) :]  # (rows, n - 1)
    match = tf.reduce_all(windows[:, :, : n - 1] == prefix[:, None, :], axis=2)
    where = tf.where(match)  # (hits, 2): row, window
    return tf.cast(where[:, 0], tf.int32), tf.gather_nd(windows[:, :, n - 1], where)


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

    def apply(self, log_probs, seqs, end_id: int):
        """`log_probs` `(rows, V)` with `-inf` for every barred next token.

        Args:
            log_probs: The step's scores (a float tensor).
            seqs: `(rows, t)` tokens generated so far.
            end_id: Id of `<end>`.
        """
        barred = -np.inf * tf.ones([], log_probs.dtype)
        if self.never or self.min_len:
            columns = tf.range(tf.shape(log_probs)[1])
            ban = tf.zeros_like(columns, tf.bool)
            for token in self.never:
                ban |= columns == token
            if self.min_len:
                ban |= (columns == end_id) & (tf.shape(seqs)[1] < self.min_len)
            log_probs = tf.where(ban[None, :], barred, log_probs)
        if self.no_repeat_ngram:
            rows, tokens = repeated_ngram_tokens(seqs, self.no_repeat_ngram)
            log_probs = tf.tensor_scatter_nd_update(
                log_probs, tf.stack([rows, tokens], 1), tf.fill(tf.shape(rows), barred)
            )
        return log_probs


def search(
    step,
    state,
    batch_size,
    start_id: int,
    end_id: int,
    max_len: int,
    beam: int = 1,
    length_penalty: float = 0.0,
    rules: Rules = Rules(),
) -> Decoded:
    """Greedy search (`beam=1`) or beam search, as TensorFlow operations.

    Runs eagerly, or inside a `tf.function` (then `batch_size` may be a
    tensor). See `greedy_search` and `beam_search` for the arguments.

    Returns:
        The padded tensors of a `Decoded`.
    """
    state = tuple(tf.convert_to_tensor(s) for s in state)
    if beam == 1:
        return _greedy(step, state, batch_size, start_id, end_id, max_len, rules)
    return _beam(
        step, state, batch_size, start_id, end_id, max_len, beam, length_penalty, rules
    )


def _greedy(step, state, batch_size, start_id, end_id, max_len, rules) -> Decoded:
    def body(t, tokens, state, seqs, scores, lengths, done, weights):
        log_probs, state, attention = step(tokens, state)  # (B, V), ..., (B, R)
        log_probs = rules.apply(tf.convert_to_tensor(log_probs), seqs, end_id)
        tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)  # (B,)
        picked = tf.cast(tf.gather(log_probs, tokens, batch_dims=1), tf.float64)
        scores += tf.where(done, tf.zeros_like(picked), picked)
        ended = ~done & (tokens == end_id)
        return (
            t + 1,
            tokens,
            tuple(tf.convert_to_tensor(s) for s in state),
            tf.concat([seqs, tokens[:, None]], axis=1),
            scores,
            tf.where(ended, t + 1, lengths),
            done | ended,
            weights.write(t, tf.cast(attention, tf.float32)),
        )

    loop = (
        tf.constant(0),
        tf.fill([batch_size], start_id),
        state,
        tf.zeros([batch_size, 0], tf.int32),
        tf.zeros([batch_size], tf.float64),
        tf.fill([batch_size], max_len),
        tf.zeros([batch_size], tf.bool),
        tf.TensorArray(tf.float32, size=0, dynamic_size=True),
    )
    running = lambda t, *rest: (t < max_len) & ~tf.reduce_all(rest[-2])
    _, _, _, seqs, scores, lengths, _, weights = _while(running, body, loop)
    return Decoded(seqs, lengths, scores, tf.transpose(weights.stack(), [1, 0, 2]))


def _beam(
    step, state, batch_size, start_id, end_id, max_len, k, length_penalty, rules
) -> Decoded:
    k = int(k)
    state = tuple(tf.repeat(s, k, axis=0) for s in state)
    first = tf.range(batch_size)[:, None] * k  # (B, 1): each image's first beam

    def body(t, tokens, state, scores, seqs, done, lengths, chosen, parents):
        before = state
        log_probs, state, attention = step(tokens, state)  # (B*k, V), ..., (B*k, R)
        log_probs = rules.apply(
            tf.convert_to_tensor(log_probs),
            tf.reshape(seqs, [batch_size * k, t]),
            end_id,
        )
        scores, parent, token = _extend(log_probs, scores, done, k, end_id)
        was_done = tf.gather(done, parent, batch_dims=1)
        lengths = tf.where(was_done, tf.gather(lengths, parent, batch_dims=1), max_len)
        done = was_done | (token == end_id)
        lengths = tf.where(done & ~was_done, t + 1, lengths)
        seqs = tf.concat([tf.gather(seqs, parent, batch_dims=1), token[..., None]], 2)
        attention = tf.reshape(tf.cast(attention, tf.float32), [batch_size, k, -1])
        flat = tf.reshape(first + parent, [-1])  # parents stay within their image
        state = tuple(
            new if new is old else tf.gather(new, flat)
            for new, old in zip(state, before)
        )
        return (
            t + 1,
            tf.reshape(token, [-1]),
            tuple(tf.convert_to_tensor(s) for s in state),
            scores,
            seqs,
            done,
            lengths,
            chosen.write(t, tf.gather(attention, parent, batch_dims=1)),
            parents.write(t, parent),
        )

    # One live beam at first, so the k beams start distinct.
    scores = tf.constant([[0.0] + [-np.inf] * (k - 1)], tf.float64)
    scores *= tf.ones([batch_size, 1], tf.float64)
    loop = (
        tf.constant(0),
        tf.fill([batch_size * k], start_id),
        state,
        scores,
        tf.zeros([batch_size, k, 0], tf.int32),
        tf.zeros([batch_size, k], tf.bool),
        tf.fill([batch_size, k], max_len),
        tf.TensorArray(tf.float32, size=0, dynamic_size=True),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True),
    )
    running = lambda t, *rest: (t < max_len) & ~tf.reduce_all(rest[-4])
    _, _, _, scores, seqs, _, lengths, chosen, parents = _while(running, body, loop)
    final = scores / tf.pow(tf.cast(lengths, tf.float64), length_penalty)
    pick = tf.argmax(final, axis=1, output_type=tf.int32)  # (B,) the first best
    return Decoded(
        tf.gather(seqs, pick, batch_dims=1),
        tf.gather(lengths, pick, batch_dims=1),
        tf.gather(scores, pick, batch_dims=1),
        _trace_back(chosen.stack(), parents.stack(), pick),
    )


def _extend(log_probs, scores, done, k: int, end_id: int):
    """The `k` best continuations of each image's `k` beams.

    Args:
        log_probs: `(B*k, V)` next-token scores of the beams, rules applied.
        scores: `(B, k)` float64 scores of the beams so far.
        done: `(B, k)` which beams have written `<end>`.
        k: The beam width.
        end_id: Id of `<end>`.

    Returns:
        `(scores, parent, token)`, each `(B, k)`, best first.
    """
    batch_size = tf.shape(scores)[0]
    # Each beam's k best next tokens hold the image's k best continuations.
    values, tokens = tf.math.top_k(log_probs, k)  # (B*k, k)
    values = tf.reshape(tf.cast(values, tf.float64), [batch_size, k, k])
    tokens = tf.reshape(tokens, [batch_size, k, k])
    # A finished beam carries on with <end> at no cost (the rest: -inf).
    ends = tf.range(tf.shape(log_probs)[1]) == end_id
    zero, inf = tf.zeros([], tf.float64), tf.constant(np.inf, tf.float64)
    finished, carry_on = tf.math.top_k(tf.where(ends, zero, -inf)[None], k)
    values = tf.where(done[..., None], finished[0], values)
    tokens = tf.where(done[..., None], carry_on[0], tokens)
    candidates = tf.reshape(scores[..., None] + values, [batch_size, k * k])
    scores, best = tf.math.top_k(candidates, k)  # (B, k), best first
    token = tf.gather(tf.reshape(tokens, [batch_size, k * k]), best, batch_dims=1)
    return scores, best // k, token


def _trace_back(chosen, parents, pick):
    """`(B, T, R)` attention of each image's picked beam, from its last step back.

    Args:
        chosen: `(T, B, k, R)` attention of each beam after step `t`'s reorder.
        parents: `(T, B, k)` the beam each beam came from at step `t`.
        pick: `(B,)` the beam picked at the end.
    """

    def back(carry, step):  # carry: (this step's beam, its attention)
        return tuple(tf.gather(x, carry[0], batch_dims=1) for x in step)

    start = (pick, tf.zeros_like(chosen[0, :, 0]))
    _, attention = tf.scan(back, (parents, chosen), initializer=start, reverse=True)
    return tf.transpose(attention, [1, 0, 2])


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
    return Result.of(
        search(step, state, batch_size, start_id, end_id, max_len, 1, 0, rules)
    )


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
    args = (batch_size, start_id, end_id, max_len, beam, length_penalty, rules)
    return Result.of(_beam(step, state, *args))  # beam=1 too: then it is greedy
