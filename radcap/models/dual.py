"""The dual encoder: images and captions embedded in one space, trained contrastively.

```
features (B, 4096) ─ FeatureNormalization ─ Dropout ─ Dense(units, relu) ─┐
grid (B, R, 512) ─ FeatureNormalization ─ Dense(units, relu) ─ mean ──────┴ add
        ─ Dense(dim) ─ L2 norm → image embeddings (B, dim)
tokens (B, T) ─ Embedding ─ Dropout ─ bidirectional GRU ─ masked mean
        ─ Dense(dim) ─ L2 norm → text embeddings (B, dim)
logits (B, B) = exp(min(logit_scale, log 100)) * images @ texts.T
```

Where the captioner (`radcap.models.merge`) writes a caption for an image,
the dual encoder scores how well a caption and an image go together with one
dot product, so a search over thousands of images is a matrix product over
embeddings computed once (`radcap.retrieval.index`).

The text tower is a small bidirectional GRU, not a transformer encoder:
radiology captions are short (tens of words) from a vocabulary of thousands,
the demo trains on 252 images, and a GRU learns word order from so little
data and runs fast on two CPU cores, where a transformer would need more
data, a position embedding and more steps to match it.

The loss (`contrastive_loss`) is CLIP's symmetric cross-entropy over the
batch's similarity matrix, except that a batch may hold one caption (or one
image) several times (the demo repeats captions heavily, so does ROCO): the
pairs whose cleaned captions are equal, or whose image is the same, are all
positives of each other. The targets are that 0/1 matrix, each row (and each
column) normalised to sum to 1, so a repeated caption is never pushed away
from an image it truly describes.

Reference:
    Radford et al. Learning Transferable Visual Models From Natural Language
    Supervision (CLIP). ICML 2021.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from radcap.core.config import Config
from radcap.features.backbone import FEATURE_SHAPES, GRID_SHAPES, LAYER
from radcap.models.layers import FeatureNormalization, dtype_scope

# CLIP's temperature: 1/0.07 at first, the scale clipped at 100.
INITIAL_SCALE = 1 / 0.07
MAX_SCALE = 100.0


@keras.saving.register_keras_serializable(package="radcap")
def contrastive_loss(targets, logits):
    """Symmetric cross-entropy over a batch's similarity matrix, repeats as positives.

    Args:
        targets: `(B, B)` 1 where image i and caption j belong together (the
            same cleaned caption or the same image; the diagonal always), else 0.
        logits: `(B, B)` scaled similarities, images along rows, captions
            along columns.

    Returns:
        `(B,)` float32: per pair, the mean of the image-to-text cross-entropy
        of row i and the text-to-image cross-entropy of column i, each against
        its targets normalised to sum to 1. Keras averages it over the batch.
    """
    t = ops.cast(targets, "float32")
    logits = ops.cast(logits, "float32")
    rows = t / ops.sum(t, axis=1, keepdims=True)  # each image's captions
    cols = t / ops.sum(t, axis=0, keepdims=True)  # each caption's images
    image_to_text = -ops.sum(rows * ops.log_softmax(logits, axis=1), axis=1)  # (B,)
    text_to_image = -ops.sum(cols * ops.log_softmax(logits, axis=0), axis=0)  # (B,)
    return (image_to_text + text_to_image) / 2


def _unit(x):
    """Rows of `x` scaled to length 1, in float32."""
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="radcap")
class DualEncoder(keras.Model):
    """An image tower and a text tower that end in unit vectors of one width.

    Args:
        vocab_size: Number of token ids (0 is padding).
        embed_dim: Word embedding size.
        units: Hidden width of both towers (the GRU: half each way).
        dim: Width of the shared embedding.
        dropout: Dropout on the image features and the word embeddings.
        use_grid: The image tower also reads the grid regions.
        feature_dim: Width of the whole-image features (4096 for `fc2`).
        grid_dim: Width of a grid region's features (512 for VGG16).

    Call arguments:
        inputs: `{"features": (B, feature_dim), "tokens": (B, T) int32}` plus
            `"grid": (B, R, grid_dim)` with `use_grid`; token 0 is padding.
        training: Dropout on when True.

    Returns:
        `(B, B)` float32 logits: row i scores image i against every caption.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        units: int = 256,
        dim: int = 128,
        dropout: float = 0.1,
        use_grid: bool = False,
        feature_dim: int = FEATURE_SHAPES[LAYER][0],
        grid_dim: int = 512,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.embed_dim = int(vocab_size), int(embed_dim)
        self.units, self.dim, self.dropout = int(units), int(dim), float(dropout)
        self.use_grid = bool(use_grid)
        self.feature_dim, self.grid_dim = int(feature_dim), int(grid_dim)
        with dtype_scope(self.dtype_policy):
            self.fc2_norm = FeatureNormalization(feature_dim, name="fc2_norm")
            self.image_dropout = keras.layers.Dropout(dropout, name="image_dropout")
            self.image_hidden = keras.layers.Dense(
                units, activation="relu", name="image_hidden"
            )
            if self.use_grid:
                self.grid_norm = FeatureNormalization(grid_dim, name="grid_norm")
                self.grid_hidden = keras.layers.Dense(
                    units, activation="relu", name="grid_hidden"
                )
            self.image_out = keras.layers.Dense(dim, name="image_out")
            self.embedding = keras.layers.Embedding(
                vocab_size, embed_dim, mask_zero=True, name="embedding"
            )
            self.word_dropout = keras.layers.Dropout(dropout, name="word_dropout")
            self.rnn = keras.layers.Bidirectional(
                keras.layers.GRU(max(units // 2, 1), return_sequences=True),
                name="rnn",
            )
            self.text_out = keras.layers.Dense(dim, name="text_out")
        self.logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(INITIAL_SCALE)),
            name="logit_scale",
            dtype="float32",
        )
        self._build_layers()

    def _build_layers(self) -> None:
        self.image_hidden.build((None, self.feature_dim))
        if self.use_grid:
            self.grid_hidden.build((None, None, self.grid_dim))
        self.image_out.build((None, self.units))
        self.embedding.build((None, None))
        self.rnn.build((None, None, self.embed_dim))
        self.text_out.build((None, 2 * max(self.units // 2, 1)))
        self.built = True

    def set_statistics(self, stats: dict) -> None:
        """Normalisation statistics from the train split (`{"fc2": (mean, std)}`,
        plus `"grid"` with `use_grid`), as `MergeCaptioner.set_statistics`."""
        self.fc2_norm.set_statistics(*stats["fc2"])
        if self.use_grid:
            self.grid_norm.set_statistics(*stats["grid"])

    def embed_images(self, features, grid=None, training=False):
        """`(B, dim)` float32 unit vectors of images from their cached features."""
        x = self.image_dropout(self.fc2_norm(features), training=training)
        hidden = self.image_hidden(x)  # (B, units)
        if self.use_grid:
            regions = self.grid_hidden(self.grid_norm(grid))  # (B, R, units)
            hidden = hidden + ops.mean(regions, axis=1)
        return _unit(self.image_out(hidden))  # (B, dim)

    def embed_texts(self, tokens, training=False):
        """`(B, dim)` float32 unit vectors of encoded captions `(B, T)` int32."""
        mask = ops.not_equal(tokens, 0)  # (B, T)
        words = self.word_dropout(self.embedding(tokens), training=training)
        seq = self.rnn(words, mask=mask, training=training)  # (B, T, units)
        weights = ops.cast(mask, seq.dtype)[:, :, None]  # (B, T, 1)
        pooled = ops.sum(seq * weights, axis=1) / ops.maximum(
            ops.sum(weights, axis=1), 1.0
        )  # (B, units)
        return _unit(self.text_out(pooled))  # (B, dim)

    @property
    def scale(self):
        """The temperature's inverse, `exp(logit_scale)` clipped at `MAX_SCALE`."""
        return ops.exp(ops.minimum(self.logit_scale, math.log(MAX_SCALE)))

    def call(self, inputs, training=False):
        images = self.embed_images(inputs["features"], inputs.get("grid"), training)
        texts = self.embed_texts(inputs["tokens"], training)
        return self.scale * ops.matmul(images, ops.transpose(texts))  # (B, B)

    @property
    def uses_grid(self) -> bool:
        """Whether the image tower reads the grid."""
        return self.use_grid

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
            "units": self.units,
            "dim": self.dim,
            "dropout": self.dropout,
            "use_grid": self.use_grid,
            "feature_dim": self.feature_dim,
            "grid_dim": self.grid_dim,
        }


def build_dual_encoder(
    config: Config, vocab_size: int, stats: dict | None = None, precision="float32"
) -> DualEncoder:
    """The dual encoder a config describes: `embed_dim`, `units`, `dropout`,
    `retrieval_dim` (the shared width) and the grid when `uses_grid`.

    Args:
        config: The run's config.
        vocab_size: Number of token ids.
        stats: Normalisation statistics (see `DualEncoder.set_statistics`).
        precision: The Keras dtype policy of its layers; the embeddings and
            logits are float32 always.
    """
    model = DualEncoder(
        vocab_size,
        embed_dim=config.embed_dim,
        units=config.units,
        dim=config.retrieval_dim,
        dropout=config.dropout,
        use_grid=config.uses_grid,
        grid_dim=GRID_SHAPES[config.grid_layer][-1],
        dtype=precision,
        name="dual_encoder",
    )
    if stats is not None:
        model.set_statistics(stats)
    return model
