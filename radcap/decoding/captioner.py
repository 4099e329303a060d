"""`Captioner`: a trained run folder that captions image files or cached features.

`caption(paths)` gives the captions, `describe(paths)` one `CaptionResult`
each (caption, words, attention, familiarity, or why the image could not be
read). The backbone that reads the images is the captioner's own: passed in
(`extractor=`, so that an app or a notebook that already holds one builds
no second), or built once, the first time an image is read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from radcap.core.config import Config
from radcap.core.text import Vocabulary
from radcap.data.dicom import frame_note
from radcap.decoding.compiled import CompiledSearch, CompiledStep
from radcap.decoding.results import Caption, CaptionResult
from radcap.decoding.search import Result, Rules
from radcap.features.backbone import BLOCK_MEANS, LAYER, Extractor, layers_for
from radcap.features.familiarity import Familiarity
from radcap.models import runs


class Captioner:
    """A trained captioner: model, vocabulary and config from one run folder.

    Args:
        model: A trained captioner with `encode`, `step` and `uses_grid`, e.g.
            a `radcap.models.merge.MergeCaptioner`.
        vocab: Its vocabulary.
        config: The run's config.
        familiarity: The run's `Familiarity` reference, or None (then every
            image's familiarity is unknown).
        run_dir: The run folder it came from, for messages.
        familiarity_problem: Why the run's reference could not be read, when
            it could not (then `familiarity` is None).
        extractor: The backbone that reads image files: an
            `radcap.features.backbone.Extractor` with at least the layers of
            `layers_for(config)` (and the run's weights). None: one is built
            the first time an image is read, and kept.
    """

    def __init__(
        self,
        model,
        vocab: Vocabulary,
        config: Config,
        familiarity: Familiarity | None = None,
        run_dir: str | Path | None = None,
        familiarity_problem: str | None = None,
        extractor: Extractor | None = None,
    ):
        self.model = model
        self.vocab = vocab
        self.config = config
        self.familiarity = familiarity
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.step = CompiledStep(model)
        self.searcher = CompiledSearch(model)
        self._extractor = extractor
        self._familiarity_problem = familiarity_problem

    @classmethod
    def load(cls, run_dir: str | Path, extractor: Extractor | None = None) -> Captioner:
        """The captioner of a run folder (see `radcap.models.runs`).

        Args:
            run_dir: The run folder.
            extractor: The backbone to read images with (see the class).
        """
        run_dir = runs.check(run_dir)
        if runs.is_retrieval_run(run_dir):
            raise runs.RunError(
                f"{run_dir} is a retrieval run (a dual encoder), not a captioner: "
                f"search it with `radcap search --run {run_dir}`."
            )
        config = runs.load_config(run_dir)
        vocab = runs.load_vocab(run_dir)
        try:
            familiarity, problem = runs.load_familiarity(run_dir), None
        except ValueError as err:  # damaged: caption anyway, familiarity unknown
            familiarity, problem = None, f"{err} Until then familiarity is unknown."
        model = runs.load_model(run_dir)
        return cls(model, vocab, config, familiarity, run_dir, problem, extractor)

    @property
    def extractor(self) -> Extractor:
        """The backbone that reads image files: the one given, or built once."""
        if self._extractor is None:
            self._extractor = Extractor(self.config, layers_for(self.config))
        return self._extractor

    @extractor.setter
    def extractor(self, extractor: Extractor) -> None:
        """Give the captioner a backbone a caller already holds (see the class)."""
        self._extractor = extractor

    @property
    def has_extractor(self) -> bool:
        """Whether a backbone is given or built (reading images builds none)."""
        return self._extractor is not None

    @property
    def uses_grid(self) -> bool:
        """Whether the model reads grid features (then pass `grid`)."""
        return self.step.uses_grid

    @property
    def attention(self) -> bool:
        """Deprecated: `uses_grid` (the config's `attention` is Bahdanau only)."""
        warnings.warn(
            "Captioner.attention is now Captioner.uses_grid; the old name goes in "
            "the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.uses_grid

    @property
    def familiarity_hint(self) -> str | None:
        """Why familiarity is unknown and how to add it; None when it is known."""
        if self.familiarity is not None:
            return None
        return self._familiarity_problem or runs.familiarity_hint(
            self.run_dir or "<run>"
        )

    def familiarity_scores(self, block_means) -> tuple[np.ndarray, np.ndarray] | None:
        """`(scores, familiar)` of `(N, 1472)` block means; None without reference."""
        if self.familiarity is None or block_means is None:
            return None
        scores = self.familiarity.scores(block_means)
        return scores, self.familiarity.familiar(scores)

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
        if not self.uses_grid:
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
        """Run the captioner's backbone (`extractor`) over image files.

        Returns:
            `(arrays, errors)`: `arrays` maps each layer of the extractor
            (`fc2`, the block means, the grid when the model reads it;
            perhaps more) to its `(N, ...)` array; `errors` maps the index of
            each unreadable image to its reason (its rows are zeros).
        """
        extractor = self.extractor
        paths = [str(p) for p in paths]
        outputs = [[] for _ in extractor.layers]
        errors = {}

        def on_batch(start, batch_outputs, batch_errors):
            for store, out in zip(outputs, batch_outputs):
                store.append(out)
            errors.update({start + i: r for i, r in batch_errors.items()})

        extractor.run(paths, on_batch, desc="images", frame=self.config.dicom_frame)
        arrays = {
            layer: np.concatenate(o) for layer, o in zip(extractor.layers, outputs)
        }
        return arrays, errors

    def frame_note(self, path) -> str | None:
        """ "frame 2 of 3" when `path` is a multi-frame DICOM file, else None."""
        return None if path is None else frame_note(path, self.config.dicom_frame)

    def caption(self, paths, beam: int = 1, **kwargs) -> list[Caption | None]:
        """Caption image files, each with its familiarity.

        Every readable image gets a caption, familiar or not; its
        `.familiar` says whether to believe it (`radcap.features.familiarity`).

        Args:
            paths: Image files (a list, or one path).
            beam: Beam width; 1 is greedy search.
            **kwargs: `length_penalty`, `batch_size` and `no_repeat_ngram`
                for `search`.

        Returns:
            One `Caption` per image (a `str` with `.familiarity` and
            `.familiar`), None for an image that could not be read.
        """
        if getattr(paths, "ndim", 1) == 2 or "return_attention" in kwargs:
            return self._caption_old_form(paths, beam, **kwargs)
        return [r.caption for r in self.describe(paths, beam, **kwargs)]

    def describe(self, paths, beam: int = 1, **kwargs) -> list[CaptionResult]:
        """Caption image files, each with its words, attention and familiarity.

        Args:
            paths: Image files (a list, or one path).
            beam: Beam width; 1 is greedy search.
            **kwargs: `length_penalty`, `batch_size`, `no_repeat_ngram`.

        Returns:
            One `CaptionResult` per image, in order.
        """
        self.check_beam(beam)  # before reading any image
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise ValueError("No images to caption: give at least one file.")
        arrays, errors = self.image_features(paths)
        grid = arrays[self.config.grid_layer] if self.uses_grid else None
        return self.describe_features(
            arrays[LAYER], grid, arrays[BLOCK_MEANS], beam, paths, errors, **kwargs
        )

    def describe_features(
        self,
        features,
        grid=None,
        block_means=None,
        beam: int = 1,
        paths=None,
        errors: dict | None = None,
        **kwargs,
    ) -> list[CaptionResult]:
        """`describe` for arrays the backbone already gave (cached or fresh).

        Args:
            features: `(N, 4096)` `fc2` features.
            grid: `(N, R, 512)` grid features, for models that read the grid.
            block_means: `(N, 1472)` block means, for familiarity; None:
                familiarity unknown.
            beam: Beam width; 1 is greedy search.
            paths: The image files the rows came from, or None.
            errors: `{row: reason}` of rows whose image could not be read.
            **kwargs: `length_penalty`, `batch_size`, `no_repeat_ngram`.
        """
        errors = errors or {}
        paths = [None] * len(features) if paths is None else list(paths)
        result = self.search(features, grid, beam=beam, **kwargs)
        scores, familiar = self.familiarity_scores(block_means) or (
            [None] * len(features),
            [None] * len(features),
        )
        out = []
        for i, tokens in enumerate(result.tokens):
            path = None if paths[i] is None else str(paths[i])
            if i in errors:
                empty = np.asarray(result.attention[i][:0])  # (0, R)
                out.append(CaptionResult(None, [], empty, path=path, error=errors[i]))
                continue
            text = Caption(self.vocab.decode(tokens), scores[i], familiar[i])
            words = text.split()
            out.append(
                CaptionResult(
                    caption=text,
                    words=words,
                    attention=np.asarray(result.attention[i][: len(words)]),
                    score=float(result.scores[i]),
                    familiarity=text.familiarity,
                    familiar=text.familiar,
                    path=path,
                    frame=self.frame_note(paths[i]),
                )
            )
        return out

    def _caption_old_form(self, images, beam, return_attention=False, **kwargs):
        """radcap 0.3's `caption`: arrays, or dicts with `return_attention`."""
        warnings.warn(
            "Captioner.caption takes image files and returns captions: use "
            "describe(paths) for the words, attention and familiarity, and "
            "describe_features(features, grid, block_means) for arrays; "
            "caption(arrays) and return_attention go in the next release.",
            DeprecationWarning,
            stacklevel=3,
        )
        self.check_beam(beam)
        if isinstance(images, np.ndarray) and images.ndim == 2:
            grid, block_means = kwargs.pop("grid", None), kwargs.pop("stats", None)
            found = self.describe_features(images, grid, block_means, beam, **kwargs)
        else:
            found = self.describe(images, beam, **kwargs)
        if return_attention:
            return [r.as_dict() for r in found]
        return [r.caption for r in found]
