"""A retrieval run scored both ways on a split, beside what it has to beat.

Every test image is a query for the captions (image to text); every distinct
cleaned caption of the split is a query for the images (text to image). A
hit is a caption equal to one of the image's own references, or an image
whose reference equals the query, after `clean_caption`: the demo repeats
captions, so many images and captions are right for one query. The figures
are recall at 1, 5 and 10 (`R@k`: the share of queries with a hit among the
k best) and the median rank of the first hit.

Beside the dual encoder, on the same queries and candidates:

- `random`: a random ranking (seeded), the floor;
- `nearest_neighbour`: raw VGG16 fc2 features, as radcap's baseline
  captioner uses them (`radcap.evaluation.baselines`): a caption scores an
  image by the cosine of the most similar training image that has it;
- `likelihood`: a captioner of the same features (a finished run beside
  this one) scores a caption for an image by its log-likelihood
  (`radcap.evaluation.retrieval`); absent, and said so, when there is none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radcap.core.files import folder_lock, read_json, write_json
from radcap.core.text import clean_caption
from radcap.data import load as load_dataset
from radcap.decoding.captioner import Captioner
from radcap.evaluation.baselines import training_mean, unit_rows
from radcap.evaluation.retrieval import caption_log_likelihood
from radcap.features.splits import Split, load_split
from radcap.models import runs
from radcap.retrieval.index import embed_features, embed_tokens
from radcap.retrieval.retriever import Retriever

KS = (1, 5, 10)
DIRECTIONS = ("image_to_text", "text_to_image")


def rank_metrics(scores: np.ndarray, relevant: np.ndarray, ks=KS) -> dict:
    """Recall at k and the median rank of the first hit, over the queries.

    Args:
        scores: `(Q, N)` a score per query and candidate, higher is better.
        relevant: `(Q, N)` bool, which candidates are hits; every query
            needs one at least.
        ks: The k values.

    Returns:
        `{"R@1": share, ..., "median_rank": rank, "queries": Q}`; ranks
        start at 1, ties go to the candidate that comes first.
    """
    scores, relevant = np.asarray(scores, np.float64), np.asarray(relevant, bool)
    if scores.shape != relevant.shape or not relevant.any(1).all():
        raise ValueError(
            "Every query needs a relevant candidate, in a matrix of the scores' shape."
        )
    order = np.argsort(-scores, axis=1, kind="stable")  # (Q, N)
    hits = np.take_along_axis(relevant, order, 1)
    ranks = hits.argmax(1) + 1  # (Q,)
    out = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["queries"] = int(len(ranks))
    return out


def both_ways(text_by_image: np.ndarray, relevant: np.ndarray) -> dict:
    """`{"image_to_text": ..., "text_to_image": ...}` from one `(C, N)` score
    matrix of captions by images and its relevance."""
    return {
        "image_to_text": rank_metrics(text_by_image.T, relevant.T),
        "text_to_image": rank_metrics(text_by_image, relevant),
    }


def queries_of(split: Split) -> tuple[list[str], np.ndarray]:
    """The split's distinct cleaned captions and `(C, N)` which images have each."""
    references = split.references()
    own = [{clean_caption(c) for c in references[i]} for i in split.image_ids]
    captions = list(dict.fromkeys(c for refs in own for c in sorted(refs)))
    relevant = np.array([[c in refs for refs in own] for c in captions], bool)
    return captions, relevant.reshape(len(captions), len(own))


def nearest_neighbour_scores(train: Split, features, captions) -> np.ndarray:
    """`(C, N)`: each caption's score for each image, the cosine (centred, as
    `radcap.evaluation.baselines.nearest_neighbours`) of the most similar
    training image that has that caption; -inf where no training image has it."""
    mean = training_mean(train.features, train.rows)
    sims = (
        unit_rows(features, mean) @ unit_rows(train.features[train.rows], mean).T
    )  # (N, M)
    references = train.references()
    out = np.full((len(captions), len(features)), -np.inf)
    position = {c: i for i, c in enumerate(captions)}
    for j, image_id in enumerate(train.image_ids):
        for caption in {clean_caption(c) for c in references[image_id]}:
            if caption in position:
                q = position[caption]
                out[q] = np.maximum(out[q], sims[:, j])
    return out


def likelihood_scores(captioner, split: Split, captions) -> np.ndarray:
    """`(C, N)`: log p(caption | image) under a captioner, teacher-forced."""
    features, grid = split.image_features()
    grid = grid if captioner.uses_grid else None
    return np.stack(
        [caption_log_likelihood(captioner, features, grid, c) for c in captions]
    )


def evaluate_retrieval(run_dir: str | Path, root=".", split: str = "test",
                       dataset=None, verbose: bool = True) -> dict:  # fmt: skip
    """Score a retrieval run on `split`; write its `metrics.json`.

    Args:
        run_dir: A finished retrieval run (`radcap.retrieval.train`).
        root: Folder that the run config's data and feature paths start from.
        split: The split whose images and captions are searched.
        dataset: The loaded manifest; default loaded from the run's config.
        verbose: Print the table.

    Returns:
        The metrics: `"retrieval"` with `"image_to_text"`, `"text_to_image"`,
        `"split"`, `"images"`, `"captions"`, `"baselines"` (`random`,
        `nearest_neighbour` and, when a captioner run of the same features
        sits beside this one, `likelihood` with its `"run"`) and `"absent"`
        (each missing baseline and why).
    """
    retriever = Retriever.load(run_dir)
    config, run_dir = retriever.config, retriever.run_dir
    dataset = dataset if dataset is not None else load_dataset(config, root)
    test = load_split(config, dataset, split, root)
    if not test.image_ids:
        raise ValueError(
            f"No {split} image to search: the split is empty or unreadable."
        )
    captions, relevant = queries_of(test)
    features, grid = test.image_features()
    images = embed_features(retriever.model, features, grid)  # (N, dim)
    texts = embed_tokens(retriever.model, retriever.vocab.encode_batch(captions))
    section = {**both_ways(texts @ images.T, relevant), "split": split}
    section.update(images=len(test.image_ids), captions=len(captions))
    random = np.random.default_rng(config.seed).random(relevant.shape)
    train = load_split(config, dataset, "train", root)
    baselines = {
        "random": both_ways(random, relevant),
        "nearest_neighbour": both_ways(
            nearest_neighbour_scores(train, features, captions), relevant
        ),
    }
    absent = {}
    others = runs.finished_runs(run_dir, retrieval=False)
    if others:
        captioner = Captioner.load(others[0])
        own = load_split(captioner.config, dataset, split, root)
        if own.image_ids != test.image_ids:
            raise ValueError(f"{others[0]} reads other {split} images than {run_dir}.")
        baselines["likelihood"] = both_ways(
            likelihood_scores(captioner, own, captions), relevant
        )
        baselines["likelihood"]["run"] = others[0].name
    else:
        absent["likelihood"] = (
            f"no finished captioner run of dataset {config.dataset!r} beside this run"
            " (`radcap train` with the same preset makes one)"
        )
    section.update(baselines=baselines, absent=absent)
    with folder_lock(run_dir, "run folder"):
        path = run_dir / runs.METRICS
        metrics = read_json(path, "metrics file") if path.is_file() else {}
        metrics["retrieval"] = section
        write_json(path, metrics)
    if verbose:
        print(ranking_table(metrics).to_string(float_format=lambda x: f"{x:.3f}"))
        for name, why in absent.items():
            print(f"{name}: absent: {why}")
        print(f"Wrote {path}")
    return metrics


def ranking_table(metrics: dict) -> pd.DataFrame:
    """A row per ranking (the dual encoder, then the baselines), a column per
    direction and figure (`i2t R@1` ... `t2i median_rank`)."""
    section = metrics["retrieval"]
    rows = {"dual encoder": section, **section.get("baselines", {})}
    short = {"image_to_text": "i2t", "text_to_image": "t2i"}
    keys = [f"R@{k}" for k in KS] + ["median_rank"]
    return pd.DataFrame(
        {
            name: {f"{short[d]} {k}": r[d][k] for d in DIRECTIONS for k in keys}
            for name, r in rows.items()
        }
    ).T
