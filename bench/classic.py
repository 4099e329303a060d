"""The classic captioning tutorial, as the reference the benchmarks compare against.

The merge model of the well-known tutorials: the image vector and an LSTM
over the caption prefix (padded to a fixed length) are added, and a softmax
predicts the next word. Training feeds one sample per word prefix, each with
its own copy of the image vector; decoding runs one image at a time with one
`model.predict` per word. Sizes follow radcap's config so the comparison is
like for like.
"""

import keras
import numpy as np


def build_classic(
    vocab_size: int, prefix_len: int, embed_dim: int, units: int, feature_dim: int
) -> keras.Model:
    """The classic merge model: `(features, prefix)` → next-word probabilities.

    Args:
        vocab_size: Number of token ids (0 is padding).
        prefix_len: Fixed prefix length; prefixes are pre-padded to it.
        embed_dim: Word embedding size.
        units: LSTM units, also the size of the image projection and the head.
        feature_dim: Image vector size (4096 for VGG16 fc2).

    Returns:
        A model with inputs `features` `(B, feature_dim)` and `prefix`
        `(B, prefix_len)` int32, output `(B, vocab_size)` softmax.
    """
    features = keras.Input((feature_dim,), name="features")
    image = keras.layers.Dropout(0.3)(features)
    image = keras.layers.Dense(units, activation="relu")(image)  # (B, units)
    prefix = keras.Input((prefix_len,), dtype="int32", name="prefix")
    words = keras.layers.Embedding(vocab_size, embed_dim, mask_zero=True)(prefix)
    words = keras.layers.Dropout(0.3)(words)  # (B, prefix_len, embed_dim)
    seq = keras.layers.LSTM(units)(words)  # (B, units): last step only
    x = keras.layers.add([image, seq])
    x = keras.layers.Dense(units, activation="relu")(x)
    probs = keras.layers.Dense(vocab_size, activation="softmax")(x)
    model = keras.Model({"features": features, "prefix": prefix}, probs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def prefix_samples(tokens: np.ndarray, rows: np.ndarray, features: np.ndarray):
    """One training sample per word prefix, the tutorials' way.

    Args:
        tokens: `(N, L)` int32 captions, `<start>` first, 0-padded.
        rows: `(N,)` row of each caption's image in `features`.
        features: `(M, dim)` image vectors.

    Returns:
        `({"features": (S, dim) float32, "prefix": (S, L - 1) int32}, (S,) targets)`
        with one sample per target word; the image vector is copied into
        every sample, as the tutorials do.
    """
    width = tokens.shape[1] - 1
    caption, position = np.nonzero(tokens[:, 1:])  # target index i + 1
    prefixes = np.zeros((len(caption), width), np.int32)
    for s, (c, p) in enumerate(zip(caption, position)):
        prefixes[s, width - p - 1 :] = tokens[c, : p + 1]  # pre-padded
    targets = tokens[caption, position + 1]
    inputs = {
        "features": np.asarray(features[rows[caption]], np.float32),
        "prefix": prefixes,
    }
    return inputs, targets


def classic_caption(
    model: keras.Model,
    features: np.ndarray,
    start_id: int,
    end_id: int,
    max_len: int,
    force_length: bool = False,
) -> list[int]:
    """Greedy caption for one image: one `model.predict` per word.

    Args:
        model: From `build_classic`.
        features: `(dim,)` one image vector.
        start_id: Id of `<start>`.
        end_id: Id of `<end>`.
        max_len: Most words.
        force_length: Never pick `<end>`, so every caption has `max_len` words.

    Returns:
        The word ids, without `<start>`.
    """
    width = model.input["prefix"].shape[1]
    seq = [start_id]
    for _ in range(max_len):
        prefix = np.zeros((1, width), np.int32)
        prefix[0, width - len(seq) :] = seq
        probs = model.predict(
            {"features": features[None], "prefix": prefix}, verbose=0
        )[0]  # (vocab_size,)
        if force_length:
            probs[end_id] = -np.inf
        word = int(np.argmax(probs))
        seq.append(word)
        if word == end_id:
            break
    return seq[1:]
