"""The one-line notes printed or shown beside a caption (CLI, app, evaluation).

What a caption is comes from `radcap.decoding.captioner`; how to say it to
a reader lives here, once, for every place that says it.
"""

from __future__ import annotations

from radcap.features.familiarity import Familiarity

UNKNOWN = "familiarity unknown (no usable familiarity reference in this run)"


def familiarity_note(
    familiarity: float | None, reference: Familiarity | None
) -> str | None:
    """The warning to show beside a caption, or None when its image is familiar.

    Args:
        familiarity: The caption's `.familiarity` (None: unknown).
        reference: The run's familiarity reference (`Captioner.familiarity`),
            None when the run has none.
    """
    if reference is None or familiarity is None:
        return UNKNOWN
    if familiarity <= reference.threshold:
        return None
    return (
        f"warning: unlike the training images (familiarity {familiarity:.2f} > "
        f"{reference.threshold:.2f}): do not trust this caption."
    )
