"""`Captioner`: a trained run folder that captions image files or cached features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from radcap.core.config import Config
from radcap.core.text import Vocabulary
from radcap.data.dicom import frame_note
from radcap.decoding.compiled import CompiledSearch, CompiledStep
from radcap.decoding.search import Result, Rules
from radcap.features.backbone import LAYER, STATS, shared_extractor
from radcap.features.familiarity import Familiarity
from radcap.models import runs


class Caption(str):
    """A generated caption (a `str`) that also says how familiar its image was.

    Attributes:
        familiarity: The image's familiarity score (low is familiar), or
            None when the run has no familiarity reference.
        familiar: Whether the score is within the run's threshold; None when
            unknown. An unfamiliar image's caption should not be believed.
    """

    familiarity: float | None
    familiar: bool | None

    def __new__(cls, text: str, familiarity=None, familiar=None):
        caption = super().__new__(cls, text)
        caption.familiarity = None if familiarity is None else float(familiarity)
        caption.familiar = None if familiar is None else bool(familiar)
        return caption


class Captioner:
    """A trained captioner: model, vocabulary and config from one run folder.

    Args:
        model: A trained captioner with `encode` and `step`, e.g. a
            `radcap.models.merge.MergeCaptioner`.
        vocab: Its vocabulary.
        config: The run's config.
        familiarity: The run's `Familiarity` reference, or None (then every
            image's familiarity is unknown).
        run_dir: The run folder it came from, for messages.
        familiarity_problem: Why the run's reference could not be read, when
            it could not (then `familiarity` is None).
    """

    def __init__(
        self,
        model,
        vocab: Vocabulary,
        config: Config,
        familiarity: Familiarity | None = None,
        run_dir: str | Path | None = None,
        familiarity_problem: str | None = None,
    ):
        self.model = model
        self.vocab = vocab
        self.config = config
        self.familiarity = familiarity
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.step = CompiledStep(model)
        self.searcher = CompiledSearch(model)
        self._extractor = None
        self._familiarity_problem = familiarity_problem

    @classmethod
    def load(cls, run_dir: str | Path) -> Captioner:
        """The captioner of a run folder (see `radcap.models.runs`)."""
        run_dir = runs.check(run_dir)
        config = runs.load_config(run_dir)
        vocab = runs.load_vocab(run_dir)
        try:
            familiarity, problem = runs.load_familiarity(run_dir), None
        except ValueError as err:  # damaged: caption anyway, familiarity unknown
            familiarity, problem = None, f"{err} Until then familiarity is unknown."
        model = runs.load_model(run_dir)
        return cls(model, vocab, config, familiarity, run_dir, problem)

    @property
    def familiarity_hint(self) -> str | None:
        """Why familiarity is unknown and how to add it; None when it is known."""
        if self.familiarity is not None:
            return None
        return self._familiarity_problem or runs.familiarity_hint(
            self.run_dir or "<run>"
        )

    def familiarity_note(self, familiarity: float | None) -> str | None:
        """The one-line warning to show beside a caption, or None when familiar.

        Args:
            familiarity: A caption's `.familiarity` (None: unknown).
        """
        if self.familiarity is None or familiarity is None:
            return "familiarity unknown (no usable familiarity reference in this run)"
        if familiarity <= self.familiarity.threshold:
            return None
        return (
            f"warning: unlike the training images (familiarity {familiarity:.2f} > "
            f"{self.familiarity.threshold:.2f}): do not trust this caption."
        )

    def familiarity_scores(self, stats) -> tuple[np.ndarray, np.ndarray] | None:
        """`(scores, familiar)` of `(N, 1472)` block means; None without reference."""
        if self.familiarity is None or stats is None:
            return None
        scores = self.familiarity.scores(stats)
        return scores, self.familiarity.familiar(scores)

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
        no_repeat_ngram: int | None = None,
    ) -> Result:
        """Run greedy (`beam=1`) or beam search over cached features, in batches.

        Args:
            features: `(N, 4096)` fc2 features.
            grid: `(N, R, 512)` grid features, for attention models.
            beam: Beam width; 1 is greedy search.
            length_penalty: Beam length normalisation; default from the config.
            batch_size: Images decoded together.
            no_repeat_ngram: No n-gram of this length is repeated within a
                caption; 0 turns it off; default from the config.
        """
        if length_penalty is None:
            length_penalty = self.config.length_penalty
        rules = self.rules(no_repeat_ngram)
        self.check_beam(beam)
        self._check_inputs(features, grid)
        parts = []
        starts = range(0, len(features), batch_size)
        if len(starts) > 4:  # long work shows progress
            starts = tqdm(starts, desc="greedy" if beam == 1 else f"beam {beam}")
        settings = dict(
            start_id=self.vocab.start_id,
            end_id=self.vocab.end_id,
            max_len=self.vocab.max_len,
            beam=int(beam),
            length_penalty=float(length_penalty) if beam > 1 else 0.0,
            rules=rules,
        )
        for s in starts:
            g = None if grid is None else grid[s : s + batch_size]
            parts.append(
                Result.of(self.searcher(features[s : s + batch_size], g, **settings))
            )
        return Result(
            [t for p in parts for t in p.tokens],
            np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
            [a for p in parts for a in p.attention],
        )

    def check_beam(self, beam) -> None:
        """Refuse a beam that is no whole number from 1 to the vocabulary's size."""
        if (
            isinstance(beam, bool)
            or not isinstance(beam, (int, np.integer))
            or beam < 1
        ):
            raise ValueError(f"beam={beam!r} is invalid: use 1 (greedy) or more.")
        self.vocab.check_beam(beam)

    def rules(self, no_repeat_ngram: int | None = None) -> Rules:
        """What this captioner's searches never write.

        `<pad>` and `<start>`, and `<unk>` unless the config's `allow_unk`;
        `<end>` before the first word (no empty caption); a repeated n-gram
        of `no_repeat_ngram` words (default: the config's, 3).
        """
        vocab, config = self.vocab, self.config
        never = (vocab.pad_id, vocab.start_id)
        never += () if config.allow_unk else (vocab.unk_id,)
        if no_repeat_ngram is None:
            no_repeat_ngram = config.no_repeat_ngram
        if isinstance(no_repeat_ngram, bool) or not (
            isinstance(no_repeat_ngram, (int, np.integer)) and no_repeat_ngram >= 0
        ):
            raise ValueError(
                f"no_repeat_ngram={no_repeat_ngram!r} is invalid: use 0 (off) or "
                "a positive n-gram length such as 3."
            )
        return Rules(never=never, min_len=1, no_repeat_ngram=no_repeat_ngram)

    def _check_inputs(self, features, grid) -> None:
        """Say clearly when cached features do not fit this model."""
        dim = self.model.feature_dim
        if getattr(features, "ndim", None) != 2 or features.shape[1] != dim:
            raise ValueError(
                f"features of shape {getattr(features, 'shape', None)} do not fit "
                f"this model: it takes (images, {dim}) {LAYER} "
                "features from the run's backbone."
            )
        if not self.attention:
            return
        width = self.model.grid_dim
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

    def image_features(self, paths) -> tuple[dict[str, np.ndarray], dict]:
        """Run the run's backbone over image files.

        Returns:
            `(arrays, errors)`: `arrays` maps each layer of
            `radcap.features.backbone.layers_for` (`fc2`, the block means, the grid for
            attention; perhaps more, from the process's shared backbone) to its
            `(N, ...)` array; `errors` maps the index of each unreadable image
            to its reason (its rows are zeros).
        """
        if self._extractor is None:
            self._extractor = shared_extractor(self.config, more=True)
        paths = [str(p) for p in paths]
        outputs = [[] for _ in self._extractor.layers]
        errors = {}

        def on_batch(start, batch_outputs, batch_errors):
            for store, out in zip(outputs, batch_outputs):
                store.append(out)
            errors.update({start + i: r for i, r in batch_errors.items()})

        self._extractor.run(
            paths, on_batch, desc="images", frame=self.config.dicom_frame
        )
        arrays = {
            layer: np.concatenate(o)
            for layer, o in zip(self._extractor.layers, outputs)
        }
        return arrays, errors

    def frame_note(self, path) -> str | None:
        """ "frame 2 of 3" when `path` is a multi-frame DICOM file, else None."""
        return None if path is None else frame_note(path, self.config.dicom_frame)

    def caption(self, images, beam: int = 1, return_attention: bool = False, **kwargs):
        """Caption image files, or cached features, each with its familiarity.

        Every readable image gets a caption, familiar or not; the flag says
        whether to believe it (see `radcap.features.familiarity`).

        Args:
            images: Paths of image files, or an `(N, 4096)` array of cached
                `fc2` features (then pass `grid=` for attention models, and
                `stats=` with the block means for familiarity).
            beam: Beam width; 1 is greedy search.
            return_attention: Return dicts with the caption, its words and
                their attention maps `(words, R)` instead of strings.
            **kwargs: `grid`, and `length_penalty`, `batch_size` and
                `no_repeat_ngram` for `search`.

        Returns:
            One `Caption` per image (a `str` with `.familiarity` and
            `.familiar`; both None when the run has no reference); an
            unreadable image gets `None`. With `return_attention`, dicts with
            `path`, `caption`, `words`, `attention`, `score` (the caption's
            summed log-probability), `familiarity`, `familiar`, `frame`
            ("frame 2 of 3" for a multi-frame DICOM file, the frame the
            config's `dicom_frame` chose; else None) and `error` (why an
            image could not be read).
        """
        self.check_beam(beam)  # before reading any image
        if isinstance(images, np.ndarray) and images.ndim == 2:
            features, grid, errors = images, kwargs.pop("grid", None), {}
            stats = kwargs.pop("stats", None)
            images = [None] * len(features)
        else:
            images = [images] if isinstance(images, (str, Path)) else list(images)
            if not images:
                raise ValueError("No images to caption: give at least one file.")
            arrays, errors = self.image_features(images)
            features, stats = arrays[LAYER], arrays[STATS]
            grid = arrays.get(self.config.grid_layer) if self.attention else None
        result = self.search(features, grid, beam=beam, **kwargs)
        scores, familiar = self.familiarity_scores(stats) or (
            [None] * len(features),
            [None] * len(features),
        )
        out = []
        for i, tokens in enumerate(result.tokens):
            text = None
            if i not in errors:
                text = Caption(self.vocab.decode(tokens), scores[i], familiar[i])
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
                    "score": None if text is None else float(result.scores[i]),
                    "familiarity": None if text is None else text.familiarity,
                    "familiar": None if text is None else text.familiar,
                    "frame": None if text is None else self.frame_note(images[i]),
                    "error": errors.get(i),
                }
            )
        return out
