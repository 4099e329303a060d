"""The evaluation stage: scores, baselines, controls, reports, caption search.

Stage: evaluation, after `captioner`. Modules, in import order: `metrics`
(the COCO toolkit's scores, diversity), `retrieval` (search images by
caption), `baselines` (what a model has to beat; controls), `evidence` (the
training images most like an image, to judge its caption), `attention`
(where an attention model looks on the demo), `report` (tables,
`report.md`, `comparison.md`) and `evaluate` (the orchestration).
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
