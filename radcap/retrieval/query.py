"""A text query to token ids, in TensorFlow operations: the library's and the export's.

`Retriever.embed_text` and the export's `embed_text` signature both turn
text into the ids the text tower reads through `QueryTokens`, so the
query a user types and the one a served model gets are cleaned alike.

It is `radcap.core.text.clean_caption` for text that
`radcap.core.text.fold_unicode` leaves as it is (every ASCII text, and
letters of other scripts): lowercase; characters other than letters,
digits, `%`, `-`, `.` and `/` become spaces; a `-`, `.` or `/` stays only
alone between two word characters (`t2-weighted`, `3.5`, `c5/6`), else it
becomes a space; then the words between spaces. RE2, TensorFlow's regular
expressions, has no lookbehind, so the last rule looks at each character's
neighbours instead. The library folds Unicode first (`fold_unicode`, in
Python: NFKC has no TensorFlow operation); the export leaves it to the
caller (docs/export.md). Words the vocabulary lacks are left out, as
`Retriever.search_text` says it does; the rest become `<start>`, at most
`max_len` word ids, `<end>`, padded with `<pad>`.
"""

from __future__ import annotations

import numpy as np

from radcap.core.text import SPECIALS, Vocabulary

_JOINERS = "-./"


def query_words(texts):
    """`(B,)` `tf.string` texts to a `(B, None)` ragged `tf.string` of their words."""
    import tensorflow as tf  # string operations: TensorFlow's own

    # A space at each end: a text's first and last characters have a
    # neighbour that is no word character, inside the flat values too.
    text = tf.strings.join([" ", tf.strings.lower(texts, encoding="utf-8"), " "])
    chars = tf.strings.unicode_decode(text, "UTF-8", errors="replace")  # (B, None)
    c = chars.flat_values  # (C,) int32 code points, texts one after the other
    word = (
        ((c >= ord("a")) & (c <= ord("z")))
        | ((c >= ord("0")) & (c <= ord("9")))
        | (c >= 0x80)  # letters of other scripts, as `fold_unicode` keeps them
    )
    joiner = tf.reduce_any(c[:, None] == [ord(j) for j in _JOINERS], axis=1)
    before = tf.concat([[False], word[:-1]], 0)  # the previous character's
    after = tf.concat([word[1:], [False]], 0)  # the next character's
    keep = word | (c == ord("%")) | (joiner & before & after)
    kept = chars.with_flat_values(tf.where(keep, c, ord(" ")))
    return tf.strings.split(tf.strings.unicode_encode(kept, "UTF-8"))


class QueryTokens:
    """Texts to the `(B, T)` int32 token ids of their known words, in a graph.

    Args:
        vocab: The run's vocabulary.

    Call arguments:
        texts: `(B,)` strings (a list, an array or a `tf.string` tensor).

    Returns:
        `(tokens, known)`: `(B, T)` int32 `<start>`, word ids, `<end>`, then
        `<pad>`; `(B,)` int32, how many words of each text the vocabulary has
        (all kept up to `max_len`).
    """

    def __init__(self, vocab: Vocabulary):
        import tensorflow as tf

        self.vocab = vocab
        words = vocab.words[len(SPECIALS) :]
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(words, tf.string),
                tf.range(vocab.size - len(words), vocab.size, dtype=tf.int32),
            ),
            default_value=-1,
        )

    def __call__(self, texts):
        import tensorflow as tf

        words = query_words(tf.convert_to_tensor(texts, tf.string))  # (B, None)
        ids = tf.ragged.map_flat_values(self.table.lookup, words)  # -1: unknown
        ids = tf.ragged.boolean_mask(ids, ids >= 0)
        known = tf.cast(ids.row_lengths(), tf.int32)  # (B,)
        ids = ids[:, : self.vocab.max_len]
        rows = tf.shape(known)[0]
        start = tf.fill([rows, 1], self.vocab.start_id)
        end = tf.fill([rows, 1], self.vocab.end_id)
        tokens = tf.concat([start, ids, end], axis=1)  # ragged (B, None)
        return tokens.to_tensor(self.vocab.pad_id), known

    def numpy(self, texts) -> np.ndarray:
        """`(B, T)` int32 tokens of a list of texts, eagerly."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 2), np.int32)
        tokens, _ = self(texts)
        return tokens.numpy()
