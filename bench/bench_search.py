"""Search speed: a text query over the dual encoder's index vs the likelihood ranking.

Both rank the same 10,000 images for one text query, side by side in one
run, on one CPU core (threads set to 1 before NumPy and TensorFlow load):

- `index`: `radcap.Retriever.search_text`: the query through the text
  tower, one matrix product with the images' embeddings (computed once, when
  the index is built: `index_build_s`), the top k by a partial sort;
- `likelihood`: `radcap.evaluation.retrieval.rank_images`: the captioner
  scores the query's log-likelihood for every image, teacher-forced, 256
  images a call (a captioner needs no index, but reads every image anew).

Models are untrained with the demo preset's sizes (speed does not depend on
the weights) over random fc2 features. `speedup` is the likelihood's
seconds over the index's (the issue asks for 100 at least). Then the index
alone (random unit rows of the embedding width) at growing sizes:
`query_ms` per size, and `under_1s_rows`, the size at which a query would
reach a second, extrapolated linearly from the largest. Each time is the
best of a few rounds. Prints one JSON object.

    .venv/bin/python bench/bench_search.py          # --images 10000 --sizes ...
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # one core, set before NumPy loads

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine  # noqa: E402

from radcap.core.config import preset  # noqa: E402
from radcap.core.text import Vocabulary  # noqa: E402
from radcap.evaluation.retrieval import rank_images  # noqa: E402
from radcap.models.dual import build_dual_encoder  # noqa: E402
from radcap.models.merge import build_captioner  # noqa: E402
from radcap.retrieval.index import Index, embed_features, top_k  # noqa: E402
from radcap.retrieval.retriever import Retriever  # noqa: E402

QUERY = "axial mri of the chest shows a small nodule in the left lung"
GOAL = 100  # the likelihood ranking's seconds / the index's, at least


def best_of(rounds: int, work) -> float:
    """The fastest of `rounds` runs of `work()`, in seconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def synthetic_index(model, features: np.ndarray) -> Index:
    """An index of `features` (ids and captions made up)."""
    n = len(features)
    ids = np.array([f"img{i:06d}" for i in range(n)])
    return Index(
        image_ids=ids,
        paths=np.char.add(ids, ".png"),
        splits=np.array(["test"] * n),
        image_captions=np.array([QUERY] * n),
        images=embed_features(model, features),
        captions=np.array([QUERY]),
        caption_splits=np.ones((1, 3), bool),
        caption_images=ids[:1],
        texts=np.zeros((1, model.dim), np.float32),
    )


def index_alone(sizes, dim: int, rounds: int) -> dict:
    """Milliseconds per query (matrix product and top 5) at each index size."""
    rng = np.random.default_rng(0)
    query = rng.normal(size=dim).astype(np.float32)
    out = {}
    for size in sizes:
        rows = rng.normal(size=(size, dim)).astype(np.float32)
        seconds = best_of(rounds, lambda r=rows: top_k(r @ query, 5))
        out[str(size)] = round(1000 * seconds, 3)
        del rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--likelihood-rounds", type=int, default=2)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    config = preset("demo")
    vocab = Vocabulary(QUERY.split() + [f"word{i}" for i in range(200)], 20)
    features = np.random.default_rng(0).normal(size=(args.images, 4096))
    features = features.astype(np.float16)
    dual = build_dual_encoder(config, vocab.size)
    started = time.perf_counter()
    index = synthetic_index(dual, features)
    build = time.perf_counter() - started
    retriever = Retriever(dual, vocab, index, config)
    retriever.search_text(QUERY)  # warm-up: traces the text tower
    index_s = best_of(args.rounds, lambda: retriever.search_text(QUERY, k=5))

    captioner = type("Captioner", (), {})()
    captioner.vocab, captioner.model = vocab, build_captioner(config, vocab.size)
    rank_images(captioner, QUERY, features[:256])  # warm-up
    likelihood_s = best_of(
        args.likelihood_rounds, lambda: rank_images(captioner, QUERY, features, top=5)
    )
    alone = index_alone(args.sizes, dual.dim, args.rounds)
    largest = max(args.sizes)
    print(
        json.dumps(
            {
                "images": args.images,
                "index_build_s": round(build, 2),
                "index_query_ms": round(1000 * index_s, 2),
                "likelihood_query_s": round(likelihood_s, 2),
                "speedup": round(likelihood_s / index_s, 1),
                "goal": GOAL,
                "index_alone_query_ms": alone,
                "under_1s_rows": int(largest * 1000 / alone[str(largest)]),
                "dim": dual.dim,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
