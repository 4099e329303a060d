"""Search by caption: rank images by how likely the trained model finds a caption.

The text-to-image direction of CLIP-style retrieval, with the captioner itself
as the scorer. For a query caption w_1..w_T and every image,

    score(image) = log p(w_1..w_T, <end> | image)
                 = sum_t log p(w_t | <start>, w_1..w_{t-1}, image)

computed teacher-forced: the query's token ids go into the training model
once for a whole batch of images (the same tokens on every row), and the
log-probabilities of the next tokens are summed. Scores of one query are
comparable across images (same tokens, same length); images whose model
output puts the query's words first rank first.

`recall_at_k` measures it on a split whose references are known: every
distinct reference caption is a query, and a hit is any of the top k images
whose own reference equals the query (many demo images share a caption).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from radcap.core.text import clean_caption


def caption_log_likelihood(
    captioner, features, grid=None, caption: str = "", batch_size: int = 256
) -> np.ndarray:
    """Log-probability of one caption given each image, teacher-forced.

    Args:
        captioner: A `radcap.decoding.captioner.Captioner`, or any object with
            `vocab` (a `radcap.core.text.Vocabulary`) and `model`: a callable taking
            `{"features": (B, 4096), "tokens": (B, T) int32[, "grid": (B, R, 512)]}`
            and `training=False`, returning next-token logits `(B, T, vocab_size)`.
        features: `(N, 4096)` fc2 features of the images.
        grid: `(N, R, 512)` grid features, for attention models.
        caption: The query; cleaned and encoded with the run's vocabulary
            (unknown words become `<unk>`, more than `max_len` words are cut).
        batch_size: Images per model call.

    Returns:
        `(N,)` float64: `log p(caption words, <end> | image)` for every image.

    Raises:
        ValueError: The caption has no words, or an attention model got no grid.
    """
    if not clean_caption(caption):
        raise ValueError(
            f"Query caption {caption!r} has no words: give a caption to search for."
        )
    if grid is None and getattr(captioner, "attention", False):
        raise ValueError("This model uses attention: pass the grid features too.")
    if grid is not None and len(grid) != len(features):
        raise ValueError(
            f"features has {len(features)} rows but grid has {len(grid)}: "
            "pass the same images in the same order."
        )
    ids = np.asarray(captioner.vocab.encode(caption), np.int32)
    inputs, targets = ids[:-1], ids[1:]  # (T,), (T,)
    out = np.zeros(len(features), np.float64)
    for s in range(0, len(features), batch_size):
        f = np.asarray(features[s : s + batch_size], np.float32)  # (B, 4096)
        batch = {"features": f, "tokens": np.tile(inputs, (len(f), 1))}  # (B, T)
        if grid is not None:
            batch["grid"] = np.asarray(grid[s : s + batch_size], np.float32)
        logits = np.asarray(captioner.model(batch, training=False), np.float64)
        logits -= logits.max(-1, keepdims=True)  # (B, T, V)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        out[s : s + len(f)] = log_probs[:, np.arange(len(targets)), targets].sum(1)
    return out


def rank_images(
    captioner,
    caption: str,
    features,
    grid=None,
    ids=None,
    top: int | None = 10,
    batch_size: int = 256,
) -> pd.DataFrame:
    """The images of a split, most likely first, for one query caption.

    Args:
        captioner: See `caption_log_likelihood`.
        caption: The query.
        features: `(N, 4096)` fc2 features.
        grid: `(N, R, 512)` grid features, for attention models.
        ids: Image id of every row; default the row numbers.
        top: Rows to return; `None` for all.
        batch_size: Images per model call.

    Returns:
        A DataFrame with columns `image_id`, `row` and `log_likelihood`, best
        first; ties keep the row order.
    """
    scores = caption_log_likelihood(captioner, features, grid, caption, batch_size)
    order = np.argsort(-scores, kind="stable")[:top]
    ids = list(range(len(scores))) if ids is None else list(ids)
    if len(ids) != len(scores):
        raise ValueError(f"ids has {len(ids)} entries for {len(scores)} feature rows.")
    return pd.DataFrame(
        {
            "image_id": [ids[i] for i in order],
            "row": order,
            "log_likelihood": scores[order],
        }
    )


def _row_references(references, n: int, ids) -> list[set[str]]:
    """Each feature row's reference captions as a set of cleaned strings."""
    if isinstance(references, dict):
        ids = list(references) if ids is None else [str(i) for i in ids]
        missing = [i for i in ids if i not in references]
        if missing:
            raise ValueError(
                f"{len(missing)} image ids have no references, e.g. {missing[:3]}."
            )
        references = [references[i] for i in ids]
    references = list(references)
    if len(references) != n:
        raise ValueError(
            f"references cover {len(references)} images but features has {n} rows: "
            "give one entry per feature row, in row order (pass ids= with a dict)."
        )
    return [
        {clean_caption(r)} if isinstance(r, str) else {clean_caption(c) for c in r}
        for r in references
    ]


def recall_at_k(
    captioner,
    features,
    grid=None,
    references=None,
    ks=(1, 5),
    ids=None,
    batch_size: int = 256,
) -> dict:
    """Recall@k of search by caption, every distinct reference caption a query.

    A query is a hit at k when any of its k best images has the query among
    its own references (compared after `clean_caption`).

    Args:
        captioner: See `caption_log_likelihood`.
        features: `(N, 4096)` fc2 features of a split.
        grid: `(N, R, 512)` grid features, for attention models.
        references: Each row's reference captions: a list in row order (of
            strings or lists of strings), or `{image_id: [captions]}` such as
            `Dataset.references(split)`, read in the order of `ids`.
        ks: The k values.
        ids: Image id of every feature row (e.g. `Features.ids`), for a dict
            of references; default the dict's order.
        batch_size: Images per model call.

    Returns:
        `{"recall@1": float, "recall@5": float, ...}` (one per k) and
        `"queries"`: the number of distinct captions searched.
    """
    if references is None:
        raise ValueError("recall_at_k needs the references of the feature rows.")
    refs = _row_references(references, len(features), ids)
    queries = list(dict.fromkeys(c for r in refs for c in sorted(r)))
    hits = {int(k): 0 for k in ks}
    for query in queries:
        scores = caption_log_likelihood(captioner, features, grid, query, batch_size)
        order = np.argsort(-scores, kind="stable")
        relevant = np.array([query in refs[i] for i in order])
        first = int(np.argmax(relevant))  # relevant is never all False
        for k in hits:
            hits[k] += first < k
    out = {f"recall@{k}": hits[k] / len(queries) for k in hits}
    out["queries"] = len(queries)
    return out
