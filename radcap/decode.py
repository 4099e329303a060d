"""Batched greedy and beam search, and `Captioner`: a trained run folder that captions.

The searches are written once, against a step function

    step(tokens (B,), state) -> (log_probs (B, vocab_size), state, attention (B, R))

where `state` is a tuple of arrays whose first axis is the batch. Search code
only reorders states along that axis, so the same code drives the trained
decoder (`radcap.model.DecoderStep`) and the scripted step functions of the
tests. An entry that the step hands back as the very object it got (the
image's projections) is the same for every beam of an image, so beam search
does not reorder it. Every image in the batch advances together; each
sequence stops at its own `<end>`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from radcap.config import Config
from radcap.text import Vocabulary


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
    step, state, batch_size: int, start_id: int, end_id: int, max_len: int
) -> Result:
    """Pick the most likely next token for every image until `<end>` or `max_len`.

    Args:
        step: Step function (see the module docstring).
        state: Initial state for `batch_size` images.
        batch_size: Number of images.
        start_id: Id of `<start>`, fed first.
        end_id: Id of `<end>`; a sequence that emits it is finished.
        max_len: Most words per caption; a caption cut at `max_len` has no `<end>`.

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
) -> Result:
    """Keep the `beam` best partial captions per image; pick the best finished one.

    Beams of all images run as one batch of `batch_size * beam` sequences. A
    finished beam carries on with `<end>` at no cost, so it competes with
    the open ones on its final score. At the end each image's beams are
    ranked by `log_prob / length ** length_penalty` (length counts `<end>`);
    `length_penalty=0` ranks by log-probability alone. With `beam=1` this is
    exactly greedy search.

    Args:
        step: Step function (see the module docstring).
        state: Initial state for `batch_size` images (not yet repeated).
        batch_size: Number of images.
        start_id: Id of `<start>`.
        end_id: Id of `<end>`.
        max_len: Most words per caption.
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
        log_probs = log_probs.reshape(batch_size, k, vocab_size).astype(np.float64)
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
    final = scores / np.power(lengths, length_penalty)
    pick = np.argmax(final, axis=1)  # (B,)
    out = [seqs[i, pick[i], : lengths[i, pick[i]]].tolist() for i in range(batch_size)]
    return Result(
        out,
        scores[np.arange(batch_size), pick],
        [weights[i, pick[i], : len(o)] for i, o in enumerate(out)],
    )


class RunError(FileNotFoundError):
    """A folder that is not a usable radcap run folder."""


def check_run_dir(run_dir: str | Path) -> Path:
    """Return `run_dir` as a Path, or say clearly why it is not a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(
            f"Run folder {run_dir} does not exist. Train one first with "
            "`radcap demo` or `radcap train`, or pass the right --run."
        )
    missing = [
        n
        for n in ("config.json", "vocab.json", "best.keras")
        if not (run_dir / n).is_file()
    ]
    if missing:
        raise RunError(
            f"{run_dir} is not a radcap run folder: it lacks {', '.join(missing)}. "
            "A run folder is made by `radcap train` (or `radcap demo`) and holds "
            "config.json, vocab.json and best.keras."
        )
    return run_dir


class Captioner:
    """A trained captioner: model, vocabulary and config from one run folder.

    Args:
        model: Model from `radcap.model.build_model`, trained.
        vocab: Its vocabulary.
        config: The run's config.
    """

    def __init__(self, model, vocab: Vocabulary, config: Config):
        from radcap.model import DecoderStep

        self.model = model
        self.vocab = vocab
        self.config = config
        self.step = DecoderStep(model)
        self._extractor = None

    @classmethod
    def load(cls, run_dir: str | Path) -> Captioner:
        """Load `config.json`, `vocab.json` and `best.keras` from a run folder."""
        import keras

        import radcap.model  # noqa: F401  (registers the custom layers)

        run_dir = check_run_dir(run_dir)
        config = Config.load(run_dir / "config.json")
        vocab = Vocabulary.load(run_dir / "vocab.json")
        model = keras.saving.load_model(run_dir / "best.keras", compile=False)
        return cls(model, vocab, config)

    @property
    def attention(self) -> bool:
        """Whether the model attends over grid features (then pass `grid`)."""
        return self.step.attention

    def search(
        self,
        features,
        grid=None,
        beam: int = 1,
        length_penalty: float | None = None,
        batch_size: int = 64,
    ) -> Result:
        """Run greedy (`beam=1`) or beam search over cached features, in batches.

        Args:
            features: `(N, 4096)` fc2 features.
            grid: `(N, R, 512)` grid features, for attention models.
            beam: Beam width; 1 is greedy search.
            length_penalty: Beam length normalisation; default from the config.
            batch_size: Images decoded together.
        """
        if length_penalty is None:
            length_penalty = self.config.length_penalty
        if (
            isinstance(beam, bool)
            or not isinstance(beam, (int, np.integer))
            or beam < 1
        ):
            raise ValueError(f"beam={beam!r} is invalid: use 1 (greedy) or more.")
        self._check_inputs(features, grid)
        parts = []
        starts = range(0, len(features), batch_size)
        if len(starts) > 4:  # long work shows progress
            starts = tqdm(starts, desc="greedy" if beam == 1 else f"beam {beam}")
        for s in starts:
            f = np.asarray(features[s : s + batch_size], np.float32)
            g = (
                None
                if grid is None
                else np.asarray(grid[s : s + batch_size], np.float32)
            )
            state = self.step.start(f, g)
            args = dict(
                batch_size=len(f),
                start_id=self.vocab.start_id,
                end_id=self.vocab.end_id,
                max_len=self.vocab.max_len,
            )
            if beam == 1:
                parts.append(greedy_search(self.step, state, **args))
            else:
                parts.append(
                    beam_search(
                        self.step,
                        state,
                        beam=beam,
                        length_penalty=length_penalty,
                        **args,
                    )
                )
        return Result(
            [t for p in parts for t in p.tokens],
            np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
            [a for p in parts for a in p.attention],
        )

    def _check_inputs(self, features, grid) -> None:
        """Say clearly when cached features do not fit this model."""
        dim = len(self.model.get_layer("fc2_norm").mean)
        if getattr(features, "ndim", None) != 2 or features.shape[1] != dim:
            raise ValueError(
                f"features of shape {getattr(features, 'shape', None)} do not fit "
                f"this model: it takes (images, {dim}) {self.config.layer} "
                "features from the run's backbone."
            )
        if not self.attention:
            return
        width = len(self.model.get_layer("grid_norm").mean)
        if grid is None:
            raise ValueError(
                "This model uses attention: pass the grid features too (grid=)."
            )
        if grid.ndim != 3 or grid.shape[0] != len(features) or grid.shape[2] != width:
            raise ValueError(
                f"grid of shape {grid.shape} does not fit: expected "
                f"({len(features)}, regions, {width}) {self.config.grid_layer} "
                "features."
            )

    def caption_features(
        self, features, grid=None, beam: int = 1, **kwargs
    ) -> list[str]:
        """Captions for cached features (see `search` for the arguments)."""
        result = self.search(features, grid, beam=beam, **kwargs)
        return [self.vocab.decode(t) for t in result.tokens]

    def image_features(self, paths) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Run the run's backbone over image files.

        Returns:
            `(features, grid or None, errors)` where `errors` maps the index
            of each unreadable image to its reason (its rows are zeros).
        """
        from radcap.features import Extractor, layers_for

        if self._extractor is None:
            self._extractor = Extractor(self.config, layers_for(self.config))
        paths = [str(p) for p in paths]
        outputs = [[] for _ in self._extractor.layers]
        errors = {}

        def on_batch(start, batch_outputs, batch_errors):
            for store, out in zip(outputs, batch_outputs):
                store.append(out)
            errors.update({start + i: r for i, r in batch_errors.items()})

        self._extractor.run(paths, on_batch, desc="images")
        arrays = [np.concatenate(o) for o in outputs]
        return arrays[0], (arrays[1] if len(arrays) > 1 else None), errors

    def caption(self, images, beam: int = 1, return_attention: bool = False, **kwargs):
        """Caption image files, or cached features.

        Args:
            images: Paths of image files, or an `(N, 4096)` array of cached
                `fc2` features (then pass `grid=` for attention models).
            beam: Beam width; 1 is greedy search.
            return_attention: Return dicts with the caption, its words and
                their attention maps `(words, R)` instead of strings.
            **kwargs: `grid`, and `length_penalty`/`batch_size` for `search`.

        Returns:
            One caption per image; an unreadable image gets `None` (strings),
            or a dict whose `error` says why.
        """
        if isinstance(images, np.ndarray) and images.ndim == 2:
            features, grid, errors = images, kwargs.pop("grid", None), {}
            images = [None] * len(features)
        else:
            images = [images] if isinstance(images, (str, Path)) else list(images)
            if not images:
                raise ValueError("No images to caption: give at least one file.")
            features, grid, errors = self.image_features(images)
        result = self.search(features, grid, beam=beam, **kwargs)
        out = []
        for i, tokens in enumerate(result.tokens):
            text = None if i in errors else self.vocab.decode(tokens)
            if not return_attention:
                out.append(text)
                continue
            words = [] if text is None else text.split()
            out.append(
                {
                    "path": None if images[i] is None else str(images[i]),
                    "caption": text,
                    "words": words,
                    "attention": result.attention[i][: len(words)],
                    "error": errors.get(i),
                }
            )
        return out
