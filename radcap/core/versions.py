"""Which radcap wrote a `config.json`, and what its missing fields meant then.

`radcap.core.config` reads every config through `upgrade`.

A config.json records the radcap that wrote it (`radcap_version`). One from
an older radcap lacks the fields added since; each gets the value that
reproduces what that radcap did without it, never today's default (a run
trained without a learning-rate schedule must not grow one on resume). One
from a newer radcap is refused: its fields may mean what this one cannot do.
"""

from __future__ import annotations

import re

from radcap import __version__

VERSION_KEY = "radcap_version"
# A config.json without VERSION_KEY was written before versions were
# recorded: by radcap 0.2.0 or earlier.
UNRECORDED = "0.2.0"
# Fields added after radcap's first config, each with the first version that
# recorded it and the value that meant the older behaviour. Add a row for
# every new field (its version is the release that brings it).
ADDED = {
    "include_nonradiology": ("0.2.0", False),  # ROCO: radiology folders only
    "report_fields": ("0.2.0", "findings,impression"),
    "projection": ("0.2.0", "frontal"),
    "lr_patience": ("0.2.0", 0),  # no plateau schedule
    "lr_factor": ("0.2.0", 0.5),
    "no_repeat_ngram": ("0.2.0", 0),  # the searches could repeat n-grams
    "allow_unk": ("0.2.0", True),  # the searches could write <unk>
    "demo_findings": ("0.2.0", 1),
    "decoder": ("0.2.0", "merge"),
    "heads": ("0.2.0", 4),
    "decoder_layers": ("0.2.0", 2),
    "precision": ("0.2.0", "float32"),
    "strategy": ("0.2.0", "none"),  # one device
    "dicom_frame": ("0.3.0", "middle"),  # no DICOM was read before it
    "jit_compile": ("0.4.0", "auto"),  # Keras' choice: XLA on a GPU only
    "retrieval_dim": ("0.4.1", 128),  # the dual encoder came with 0.4.1
}


def parse(version: str) -> tuple[int, ...] | None:
    """`"0.2.0"` as `(0, 2, 0)`; None for text that is no release number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)*)(?:[.+-]?[A-Za-z].*)?", str(version))
    return None if match is None else tuple(int(p) for p in match[1].split("."))


def upgrade(values: dict, fields, source: str) -> dict:
    """The fields of a config.json, for this radcap.

    Args:
        values: The JSON object read from the file.
        fields: The names of `Config`'s fields today.
        source: The file, for messages.

    Returns:
        The fields without `VERSION_KEY`, the missing ones filled with what
        the writing radcap did without them.

    Raises:
        ValueError: A newer radcap wrote it, its version is unreadable, or a
            field is missing that every radcap of its version wrote.
    """
    values = dict(values)
    recorded = VERSION_KEY in values
    written = str(values.pop(VERSION_KEY, UNRECORDED))
    version = parse(written)
    if version is None:
        raise ValueError(
            f"{source}: {VERSION_KEY}={written!r} is no radcap version (e.g. "
            f"{__version__!r}); correct it, or delete the key if this radcap wrote it."
        )
    if version > parse(__version__):
        raise ValueError(
            f"{source} was written by radcap {written}, this is {__version__}: "
            "upgrade radcap (pip install -U radcap) to use it."
        )
    for field in sorted(set(fields) - set(values)):
        since, before = ADDED.get(field, (None, None))
        if since is None or (recorded and version >= parse(since)):
            writer = f"radcap {written}" if recorded else "every radcap"
            raise ValueError(
                f"{source} has no {field!r}, which {writer} writes: add it "
                f'(e.g. "{field}": <value>; see radcap.core.config.Config for its '
                "meaning) or make the run again with this radcap."
            )
        values[field] = before
    return values
