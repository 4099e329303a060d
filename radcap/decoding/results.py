"""What a `radcap.decoding.captioner.Captioner` returns: `Caption`, `CaptionResult`."""

from __future__ import annotations

import dataclasses

import numpy as np


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


@dataclasses.dataclass(frozen=True)
class CaptionResult:
    """One image's caption with what explains it (`Captioner.describe`).

    Attributes:
        caption: The caption (a `Caption`), None when the image could not be read.
        words: Its words.
        attention: `(len(words), R)` float32 attention over the grid regions
            (R is 1 for a model that reads no grid).
        score: The caption's summed log-probability; None without a caption.
        familiarity: The image's familiarity score (low is familiar); None
            when unknown (no reference in the run, or no caption).
        familiar: Whether `familiarity` is within the run's threshold; None
            when unknown. An unfamiliar image's caption should not be believed.
        path: The image file, None for cached features.
        frame: "frame 2 of 3" for a multi-frame DICOM file (the frame the
            config's `dicom_frame` chose), else None.
        error: Why the image could not be read, else None.
    """

    caption: Caption | None
    words: list[str]
    attention: np.ndarray
    score: float | None = None
    familiarity: float | None = None
    familiar: bool | None = None
    path: str | None = None
    frame: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        """The fields as a dict (what `caption(..., return_attention=True)` gave)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
