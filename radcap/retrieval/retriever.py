"""`Retriever`: search a retrieval run both ways, from Python.

```python
from radcap import Retriever

retriever = Retriever.load("checkpoints/demo-retrieval")
retriever.search_text("left lung nodule")  # the images, best first
retriever.search_image("scan.png")         # the known captions, best first
```

Embeddings come from cached features (`embed_features`), from a new
image file through the run's backbone settings (`embed_images`) or from
text (`embed_text`): the three things a web page's search box or an
exported `embed_*` signature need, each one call.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.config import Config
from radcap.core.text import Vocabulary, clean_caption, fold_unicode
from radcap.features.backbone import LAYER, shared_extractor
from radcap.models import runs
from radcap.retrieval.index import Index, embed_features, embed_tokens, top_k
from radcap.retrieval.query import QueryTokens


def _traced_text_tower(model):
    """`model.embed_texts` traced once into a graph, for any batch and width.

    Eagerly, the GRU's Python steps cost about 80 ms a query on a CPU core;
    the graph, a few. A model without Keras variables (a test's scripted
    one) is used as it is.
    """
    if not hasattr(model, "trainable_variables"):
        return model
    import tensorflow as tf  # a graph function: TensorFlow's own

    spec = tf.TensorSpec((None, None), tf.int32)
    traced = tf.function(model.embed_texts, input_signature=[spec], autograph=False)
    return types.SimpleNamespace(embed_texts=traced, dim=model.dim)


class QueryError(ValueError):
    """A query that cannot be searched (no known word, an unreadable image)."""


class Retriever:
    """A trained dual encoder and its index.

    Args:
        model: The `radcap.models.dual.DualEncoder`.
        vocab: The run's vocabulary.
        index: The run's `radcap.retrieval.index.Index`.
        config: The run's config.
        run_dir: The run folder (for messages).
        extractor: A backbone for image files; built on first use when None.
    """

    def __init__(self, model, vocab: Vocabulary, index: Index, config: Config,
                 run_dir=None, extractor=None):  # fmt: skip
        self.model, self.vocab, self.index = model, vocab, index
        self.config = config
        self._text_tower = _traced_text_tower(model)
        self.query_tokens = QueryTokens(vocab)  # as the export's `embed_text`
        self.run_dir = None if run_dir is None else Path(run_dir)
        self._extractor = extractor

    @classmethod
    def load(cls, run_dir: str | Path, extractor=None) -> Retriever:
        """The retrieval run in `run_dir` (made by `radcap retrieval`).

        Raises:
            radcap.models.runs.RunError: Not a finished retrieval run.
        """
        run_dir = runs.check(run_dir)
        if not runs.is_retrieval_run(run_dir):
            raise runs.RunError(
                f"{run_dir} holds a captioner, not a retrieval run: make one with "
                "`radcap retrieval --preset <preset>` and pass its --run."
            )
        if not (run_dir / runs.INDEX).is_file():
            raise runs.RunError(
                f"{run_dir} has no {runs.INDEX} (its training did not finish): run "
                "the same `radcap retrieval` again to finish it."
            )
        model, vocab = runs.load_model(run_dir), runs.load_vocab(run_dir)
        index = Index.load(run_dir / runs.INDEX)
        return cls(model, vocab, index, runs.load_config(run_dir), run_dir, extractor)

    # --- embeddings -------------------------------------------------------------

    def words(self, text: str) -> tuple[list[str], list[str]]:
        """`(known, unknown)`: the cleaned query's words the vocabulary has, or not."""
        words = clean_caption(text).split()
        known = [w for w in words if w in self.vocab.index]
        return known, [w for w in words if w not in self.vocab.index]

    def embed_text(self, texts) -> np.ndarray:
        """`(N, dim)` float32 unit rows of texts (a str or a list of them);
        unknown words are left out (`radcap.retrieval.query.QueryTokens`)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        tokens = self.query_tokens.numpy([fold_unicode(str(t)) for t in texts])
        return embed_tokens(self._text_tower, tokens)

    def embed_features(self, features, grid=None) -> np.ndarray:
        """`(N, dim)` float32 unit rows of images from `(N, 4096)` fc2 features
        (and `(N, R, 512)` grid features when the run reads the grid)."""
        features = np.atleast_2d(np.asarray(features, np.float32))
        if self.model.uses_grid and grid is None:
            raise QueryError("This run reads the grid too: pass grid features.")
        return embed_features(self.model, features, grid)

    def embed_images(self, paths) -> np.ndarray:
        """`(N, dim)` float32 unit rows of image files, through the run's
        backbone (VGG16 with its weights, as its features were extracted).

        Raises:
            QueryError: An image cannot be read; the message says which and why.
        """
        if self._extractor is None:
            self._extractor = shared_extractor(self.config, more=True)
        extractor, paths = self._extractor, [str(p) for p in paths]
        outputs, errors = [[] for _ in extractor.layers], {}

        def on_batch(start, batch_outputs, batch_errors):
            for store, out in zip(outputs, batch_outputs):
                store.append(out)
            errors.update({start + i: r for i, r in batch_errors.items()})

        extractor.run(paths, on_batch, desc="images", frame=self.config.dicom_frame)
        if errors:
            i, reason = next(iter(errors.items()))
            raise QueryError(f"{paths[i]}: {reason}")
        arrays = dict(zip(extractor.layers, (np.concatenate(o) for o in outputs)))
        grid = arrays.get(self.config.grid_layer) if self.model.uses_grid else None
        return self.embed_features(arrays[LAYER], grid)

    # --- search -----------------------------------------------------------------

    def search_text(self, text: str, k: int = 5, split: str | None = None):
        """The `k` images most like a text, best first.

        Args:
            text: Free text; words the vocabulary lacks are ignored (and
                listed in the result's `attrs["unknown_words"]`).
            k: Images to return.
            split: Search only this split's images; default all.

        Returns:
            A DataFrame with columns `image_id`, `path`, `score` (cosine),
            `caption` (the image's own) and `split`.

        Raises:
            QueryError: No word of the query is in the vocabulary.
        """
        known, unknown = self.words(text)
        if not known:
            raise QueryError(
                f"No word of {text!r} is in this run's vocabulary "
                f"({self.vocab.size - 4} words, e.g. "
                f"{', '.join(self.vocab.words[4:9])}): rephrase the query."
            )
        query = self.embed_text(text)[0]  # (dim,)
        rows = self.index.image_rows(split)
        found, scores = top_k(self.index.images[rows] @ query, k)
        hits = rows[found]
        out = pd.DataFrame(
            {
                "image_id": self.index.image_ids[hits],
                "path": self.index.paths[hits],
                "score": scores.astype(float),
                "caption": self.index.image_captions[hits],
                "split": self.index.splits[hits],
            }
        )
        out.attrs["unknown_words"] = unknown
        return out

    def search_image(self, image, k: int = 5, split: str | None = None):
        """The `k` known captions most like an image, best first.

        Args:
            image: An image file (PNG, JPEG, DICOM...), or its `(4096,)` fc2
                feature vector.
            k: Captions to return.
            split: Only captions that occur in this split (e.g. `"train"`);
                default every distinct caption of the dataset.

        Returns:
            A DataFrame with columns `caption`, `score` (cosine), `image_id`
            and `path` (the first image the caption belongs to).
        """
        if isinstance(image, (str, Path)):
            query = self.embed_images([image])[0]
        else:
            query = self.embed_features(image)[0]
        return self.caption_table(query[None], k, split)[0]

    def caption_table(self, queries: np.ndarray, k: int, split=None) -> list:
        """For each of `(Q, dim)` image embeddings, its `k` best captions."""
        rows = self.index.caption_rows(split)
        found, scores = top_k(queries @ self.index.texts[rows].T, k)  # (Q, k)
        where = dict(zip(self.index.image_ids, self.index.paths))
        tables = []
        for hits, score in zip(rows[found], scores):
            images = self.index.caption_images[hits]
            tables.append(
                pd.DataFrame(
                    {
                        "caption": self.index.captions[hits],
                        "score": score.astype(float),
                        "image_id": images,
                        "path": [where.get(i, "") for i in images],
                    }
                )
            )
        return tables

    def caption_features(self, features, grid=None, split: str = "train") -> list:
        """The retrieval captioner: for each image, the best caption of `split`.

        Args:
            features: `(N, 4096)` fc2 features (and `grid` if the run reads it).
            split: Whose captions are candidates; the training split by
                default, so that a test image never gets its own caption
                because it was indexed.

        Returns:
            `N` captions (cleaned, as the index holds them).
        """
        rows = self.index.caption_rows(split)
        if len(rows) == 0:
            raise ValueError(f"The index holds no caption of the {split} split.")
        queries = self.embed_features(features, grid)  # (N, dim)
        best = np.argmax(queries @ self.index.texts[rows].T, axis=1)
        return [str(self.index.captions[rows[j]]) for j in best]
