"""The transformer captioner: self-attention on words, cross-attention on the image.

```
grid (B, R, 512) ─ FeatureNormalization ─ Dense(units) + region position ─┐
features (B, 4096) ─ FeatureNormalization ─ Dropout ─ Dense(units) ────────┤ memory
                                                        LayerNorm ─ (B, R + 1, units)
tokens (B, T) ─ embedding + position ─ Dropout ─ x
N x [ x + SelfAttention(LN x, causal); x + CrossAttention(LN x, memory);
      x + FeedForward(LN x) ] ─ LayerNorm ─ Dense(vocab_size) → logits (B, T, V)
```

The blocks are pre-norm (Xiong et al. 2020: stable without a warm-up on
small data). The whole-image `fc2` vector is one more memory token beside
the R grid regions, so the decoder can use the summary that the merge model
lives on and look at regions where it needs to; the regions carry learned
position embeddings, since where a region is (which side) is what a side
word depends on.

The forward pass is written once, in `DecoderBlock.call` and
`TransformerCaptioner.call_with_cache`, with an optional key/value cache (as
keras-hub's `TransformerDecoder` and `call_with_cache`): training runs it over
whole captions without one; decoding keeps one: `encode` projects the
memory's keys and values once per image, and each `step` projects only the
new position and appends it to each block's self-attention cache. The cache
is part of the search state (batch first, `(B, heads, t, units // heads)` per
block for keys and for values), so the batched searches in
`radcap.decoding.search` reorder it like an LSTM's state.

The attention layers are written here rather than taken from keras-hub:
keras-hub's `TransformerDecoder` needs `tensorflow-text`, which is built for
one TensorFlow minor version and would replace the TensorFlow that Colab and
Kaggle ship; and `keras.layers.MultiHeadAttention` projects keys and values
inside its call, so a cache of its inputs would still project the whole
prefix at every step.

Reference:
    Vaswani et al. Attention is all you need. NeurIPS 2017.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from radcap.models.layers import FeatureNormalization, dtype_scope


@keras.saving.register_keras_serializable(package="radcap")
class CachedAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention whose keys and values can be cached.

    Args:
        units: Model width, split over the heads.
        heads: Number of heads.

    Call arguments:
        query: `(B, Tq, units)`.
        memory: `(B, Tk, units)`, the keys' and values' source.
        causal: Position i attends only to positions <= i (self-attention).

    Returns:
        `(B, Tq, units)`.
    """

    def __init__(self, units: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.heads = int(heads)
        self.query = keras.layers.Dense(units, name="query")
        self.key = keras.layers.Dense(units, name="key")
        self.value = keras.layers.Dense(units, name="value")
        self.out = keras.layers.Dense(units, name="out")

    def build(self, query_shape, memory_shape=None):
        for dense in (self.query, self.key, self.value, self.out):
            dense.build((None, None, self.units))
        self.built = True

    def call(self, query, memory, causal=False):
        keys, values = self.project(memory)
        mask = None
        if causal:
            tq, tk = ops.shape(query)[1], ops.shape(memory)[1]
            mask = ops.arange(tk)[None, :] <= ops.arange(tq)[:, None]  # (Tq, Tk)
        return self.attend(query, keys, values, mask)[0]

    def project(self, memory):
        """Keys and values of `memory` `(B, Tk, units)`, each `(B, heads, Tk, d)`."""
        return self._split(self.key(memory)), self._split(self.value(memory))

    def attend(self, query, keys, values, mask=None):
        """Attend from `query` `(B, Tq, units)` over projected keys and values.

        Args:
            mask: `(Tq, Tk)` booleans, True where attending is allowed.

        Returns:
            `(output (B, Tq, units), weights (B, heads, Tq, Tk))`.
        """
        q = self._split(self.query(query))  # (B, h, Tq, d)
        scores = ops.einsum("bhqd,bhkd->bhqk", q, keys)
        scores = scores / math.sqrt(self.units // self.heads)
        if mask is not None:
            scores = ops.where(mask[None, None], scores, -1e9)
        # The softmax written out: at the first step a row has one key, which
        # `ops.softmax` warns about.
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        weights = weights / ops.sum(weights, axis=-1, keepdims=True)
        context = ops.einsum("bhqk,bhkd->bhqd", weights, values)  # (B, h, Tq, d)
        context = ops.transpose(context, (0, 2, 1, 3))  # (B, Tq, h, d)
        shape = ops.shape(context)
        context = ops.reshape(context, (shape[0], shape[1], self.units))
        return self.out(context), weights

    def _split(self, x):
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], self.heads, self.units // self.heads))
        return ops.transpose(x, (0, 2, 1, 3))  # (B, h, T, d)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads}


@keras.saving.register_keras_serializable(package="radcap")
class DecoderBlock(keras.layers.Layer):
    """One pre-norm transformer decoder block: self-attention, cross-attention, MLP.

    Args:
        units: Model width.
        heads: Attention heads.
        ff_units: Hidden width of the feed-forward part.
        dropout: Dropout after each part, before the residual sum.

    Call arguments (as keras-hub's `TransformerDecoder` with its
    `self_attention_cache`):
        x: `(B, T, units)` word states of the new positions.
        memory: `(keys, values)` of the image memory from
            `cross_attention.project`, `(B, heads, M, d)` each.
        cache: `(keys, values)` of the `t` positions before `x`, `(B, heads,
            t, d)` each; None when `x` starts the caption.
        training: Dropout on when True.

    Returns:
        `(x (B, T, units), cache with t + T positions, cross-attention
        weights (B, heads, T, M))`.
    """

    def __init__(self, units: int, heads: int, ff_units: int, dropout: float, **kw):
        super().__init__(**kw)
        self.units, self.heads = int(units), int(heads)
        self.ff_units, self.dropout = int(ff_units), float(dropout)
        self.self_norm = keras.layers.LayerNormalization(name="self_norm")
        self.self_attention = CachedAttention(units, heads, name="self_attention")
        self.cross_norm = keras.layers.LayerNormalization(name="cross_norm")
        self.cross_attention = CachedAttention(units, heads, name="cross_attention")
        self.ff_norm = keras.layers.LayerNormalization(name="ff_norm")
        self.ff_hidden = keras.layers.Dense(ff_units, activation="gelu", name="ff_in")
        self.ff_out = keras.layers.Dense(units, name="ff_out")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, x_shape, memory_shape=None):
        shape = (None, None, self.units)
        for layer in (self.self_norm, self.cross_norm, self.ff_norm):
            layer.build(shape)
        self.self_attention.build(shape)
        self.cross_attention.build(shape)
        self.ff_hidden.build(shape)
        self.ff_out.build((None, None, self.ff_units))
        self.built = True

    def call(self, x, memory, cache=None, training=False):
        # The block's one forward pass (see the class docstring): training
        # runs it over whole captions without a cache, decoding over one new
        # position with the cache of the positions before it.
        normed = self.self_norm(x)
        keys, values = self.self_attention.project(normed)  # (B, h, T, d) each
        start = 0
        if cache is not None:
            start = ops.shape(cache[0])[2]
            keys = ops.concatenate([cache[0], keys], axis=2)  # (B, h, t + T, d)
            values = ops.concatenate([cache[1], values], axis=2)
        mask = None
        if x.shape[1] != 1:  # one new position may see every cached one
            tq, tk = ops.shape(x)[1], ops.shape(keys)[2]
            mask = ops.arange(tk)[None, :] <= start + ops.arange(tq)[:, None]
        h, _ = self.self_attention.attend(normed, keys, values, mask)
        x = x + self.drop(h, training=training)
        h, weights = self.cross_attention.attend(self.cross_norm(x), *memory)
        x = x + self.drop(h, training=training)
        feed_forward = self.ff_out(self.ff_hidden(self.ff_norm(x)))
        return x + self.drop(feed_forward, training=training), (keys, values), weights

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "heads": self.heads,
            "ff_units": self.ff_units,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="radcap")
class TransformerCaptioner(keras.Model):
    """A transformer decoder over the grid regions and the whole-image vector.

    Same inputs, outputs and decoding interface (`encode`, `step`) as
    `radcap.models.merge.MergeCaptioner` with attention, so training, resume, the
    run folder and the searches treat both alike.

    Args:
        vocab_size: Number of token ids (0 is padding).
        units: Model width (embeddings, attention, residual stream).
        heads: Attention heads; must divide `units`.
        depth: Number of decoder blocks.
        ff_units: Feed-forward hidden width; default `2 * units`.
        dropout: Dropout on the embeddings, the image vector and each block's
            parts.
        max_positions: Most token positions (`<start>` and the words).
        feature_dim: Width of the whole-image features (4096 for `fc2`).
        grid_dim: Width of a grid region's features.
        regions: Number of grid regions (49 for 7x7).

    Call arguments:
        inputs: `{"features": (B, feature_dim), "grid": (B, regions, grid_dim),
            "tokens": (B, T) int32}`; tokens are right-padded with 0, so the
            causal mask alone keeps padding out of every real position.
        training: Dropout on when True.

    Returns:
        Next-token logits `(B, T, vocab_size)` float32.
    """

    uses_grid = True  # it attends over the grid: pass `grid` to it

    def __init__(
        self,
        vocab_size: int,
        units: int = 256,
        heads: int = 4,
        depth: int = 2,
        ff_units: int | None = None,
        dropout: float = 0.1,
        max_positions: int = 64,
        feature_dim: int = 4096,
        grid_dim: int = 512,
        regions: int = 49,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.units, self.heads, self.depth = int(units), int(heads), int(depth)
        self.ff_units = int(ff_units or 2 * units)
        self.dropout = float(dropout)
        self.max_positions = int(max_positions)
        self.feature_dim, self.grid_dim = int(feature_dim), int(grid_dim)
        self.regions = int(regions)
        with dtype_scope(self.dtype_policy):  # mixed precision reaches them
            self.fc2_norm = FeatureNormalization(feature_dim, name="fc2_norm")
            self.image_dropout = keras.layers.Dropout(dropout, name="image_dropout")
            self.image_proj = keras.layers.Dense(units, name="image_proj")
            self.grid_norm = FeatureNormalization(grid_dim, name="grid_norm")
            self.grid_proj = keras.layers.Dense(units, name="grid_proj")
            self.region_position = keras.layers.Embedding(
                regions, units, name="region_position"
            )
            self.memory_norm = keras.layers.LayerNormalization(name="memory_norm")
            self.embedding = keras.layers.Embedding(vocab_size, units, name="embedding")
            self.position = keras.layers.Embedding(
                max_positions, units, name="position"
            )
            self.word_dropout = keras.layers.Dropout(dropout, name="word_dropout")
            self.blocks = [
                DecoderBlock(units, heads, self.ff_units, dropout, name=f"block_{i}")
                for i in range(self.depth)
            ]
            self.final_norm = keras.layers.LayerNormalization(name="final_norm")
            self.logits = keras.layers.Dense(vocab_size, name="logits", dtype="float32")
        self._build_layers()

    def _build_layers(self) -> None:
        width = (None, None, self.units)
        self.image_proj.build((None, self.feature_dim))
        self.grid_proj.build((None, None, self.grid_dim))
        for embedding in (self.region_position, self.embedding, self.position):
            embedding.build((None, None))
        for layer in (self.memory_norm, self.final_norm, self.logits, *self.blocks):
            layer.build(width)
        self.built = True

    def set_statistics(self, stats: dict) -> None:
        """Train-split normalisation statistics: `{"fc2": ..., "grid": ...}`."""
        self.fc2_norm.set_statistics(*stats["fc2"])
        self.grid_norm.set_statistics(*stats["grid"])

    def _memory(self, features, grid, training=False):
        """Each block's cross-attention keys and values over the image memory."""
        image = self.image_proj(
            self.image_dropout(self.fc2_norm(features), training=training)
        )  # (B, units)
        regions = self.grid_proj(self.grid_norm(grid))  # (B, R, units)
        place = ops.cast(self.region_position.embeddings, self.compute_dtype)
        regions = regions + place[None]
        memory = ops.concatenate([regions, image[:, None, :]], axis=1)
        memory = self.memory_norm(memory)  # (B, R + 1, units)
        projected = ()
        for block in self.blocks:
            projected += block.cross_attention.project(memory)
        return projected

    def _words(self, tokens, start=0, training=False):
        """Token plus position embeddings of `tokens` `(B, T)` from position `start`."""
        positions = start + ops.arange(ops.shape(tokens)[1])
        x = ops.take(self.embedding.embeddings, tokens, axis=0)
        x = x + ops.take(self.position.embeddings, positions, axis=0)[None]
        return self.word_dropout(ops.cast(x, self.compute_dtype), training=training)

    def call(self, inputs, training=False):
        memory = self._memory(inputs["features"], inputs["grid"], training)
        return self.call_with_cache(inputs["tokens"], memory, training=training)[0]

    def call_with_cache(self, tokens, memory, cache=None, training=False):
        """The decoder over `tokens`, after the positions in `cache`.

        The forward pass, written once: `call` runs it over whole captions,
        `step` over one new token with the cache of the tokens before it.

        Args:
            tokens: `(B, T)` int32.
            memory: From `encode`: each block's cross-attention keys and values.
            cache: Each block's self-attention keys and values of the `t`
                positions before `tokens` (`encode`'s carry, then `step`'s),
                or None when `tokens` start the caption.
            training: Dropout on when True.

        Returns:
            `(logits (B, T, vocab_size), cache with t + T positions, cross
            weights)`: the weights are one `(B, heads, T, R + 1)` per block,
            the last memory token being the whole image.
        """
        start = 0 if cache is None else ops.shape(cache[0])[2]
        x = self._words(tokens, start, training)  # (B, T, units)
        new_cache, weights = (), ()
        for i, block in enumerate(self.blocks):
            pair = slice(2 * i, 2 * i + 2)
            past = None if cache is None else cache[pair]
            x, past, w = block(x, memory[pair], past, training=training)
            new_cache, weights = new_cache + past, weights + (w,)
        return self.logits(self.final_norm(x)), new_cache, weights

    def encode(self, features, grid=None):
        """The per-image search state: empty caches, and the memory's keys and values.

        Args:
            features: `(B, feature_dim)` whole-image features.
            grid: `(B, R, grid_dim)`.

        Returns:
            `(carry, memory)`: `carry` holds each block's self-attention keys
            and values, `(B, heads, 0, units // heads)` each at first;
            `memory` each block's cross-attention keys and values over the
            `R + 1` memory tokens.
        """
        batch = ops.shape(features)[0]
        shape = (batch, self.heads, 0, self.units // self.heads)
        empty = ops.zeros(shape, self.compute_dtype)
        return (empty, empty) * self.depth, self._memory(features, grid)

    def step(self, tokens, carry, memory):
        """Advance every sequence by one token (see `MergeCaptioner.step`).

        Returns:
            `(logits (B, vocab_size), carry one position longer, attention
            (B, R))`: the cross-attention on the grid regions, averaged over
            heads and blocks (the rest of each row, up to 1, is on the
            whole-image token).
        """
        logits, carry, weights = self.call_with_cache(tokens[:, None], memory, carry)
        weights = sum(ops.mean(w[:, :, 0, :], axis=1) for w in weights)  # (B, R + 1)
        weights = weights / len(self.blocks)
        return logits[:, 0], carry, weights[:, : self.regions]

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "units": self.units,
            "heads": self.heads,
            "depth": self.depth,
            "ff_units": self.ff_units,
            "dropout": self.dropout,
            "max_positions": self.max_positions,
            "feature_dim": self.feature_dim,
            "grid_dim": self.grid_dim,
            "regions": self.regions,
        }
