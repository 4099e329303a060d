"""Evaluation: a trained run scored on a split beside its baselines and
controls, clinical consistency, reports and comparisons, search by caption.
"""

from radcap.evaluation.evaluate import decoding_name, decodings, evaluate
from radcap.evaluation.metrics import METRICS, SCORINGS, score
from radcap.evaluation.report import (
    compare_runs,
    markdown_table,
    metrics_table,
    write_comparison,
)

__all__ = [
    "METRICS",
    "SCORINGS",
    "compare_runs",
    "decoding_name",
    "decodings",
    "evaluate",
    "markdown_table",
    "metrics_table",
    "score",
    "write_comparison",
]
