"""The model card of a run folder: what the model is, what it is for, how it scored.

`MODEL_CARD.md` follows the sections of Hugging Face's model cards (model
details, uses, out-of-scope use, training data, evaluation, limitations,
citation). Training writes it with "not evaluated yet"; evaluation rewrites
it with its metrics, as one of the outputs that `evaluation.json` commits
(`radcap.models.runs.evaluation_outputs`), so the card never names the scores of
another model than the one beside it.
"""

from __future__ import annotations

from pathlib import Path

from radcap import __version__
from radcap.core.config import Config
from radcap.core.files import write_text
from radcap.core.text import SCORES, SPECIALS
from radcap.models import runs

DISCLAIMER = "Research use only: not for clinical use or diagnosis."
NOT_EVALUATED = "Not evaluated yet: run `radcap evaluate --run {run}` to add scores."
ROCO_CITATION = (
    "Pelka O., Koitka S., Rückert J., Nensa F., Friedrich C. M. Radiology "
    "Objects in COntext (ROCO): A Multimodal Image Dataset. MICCAI Workshop "
    "on Large-scale Annotation of Biomedical Data and Expert Label Synthesis "
    "(LABELS) 2018, LNCS 11043, pp. 180-189, Springer Cham. "
    "doi:10.1007/978-3-030-01364-6_20"
)

_NOT_CLINICAL = f"""\
**{DISCLAIMER}**

This model is for research and teaching only. It is not a medical device and
has not been validated for any clinical purpose. Its captions may be wrong,
incomplete or invented; never use them to diagnose, treat or triage a
patient, or in place of a radiologist's report."""

_USES = """\
### Intended use

Research on radiology image captioning, and teaching how an image captioner
is built, trained and evaluated; comparing decoders and decodings against
the baselines on the same data.

### Out-of-scope use

Any clinical use (diagnosis, triage, reporting, screening, decision
support); images of patients whose care could depend on the caption; images
unlike the training data (other modalities, photographs, scanned
documents); languages other than English."""


def write_card(run_dir: str | Path, model, dataset, metrics: dict | None = None):
    """Write the run's `MODEL_CARD.md` atomically (see `model_card`)."""
    text = model_card(run_dir, model, dataset, metrics)
    write_text(Path(run_dir) / runs.MODEL_CARD, text)


def model_card(run_dir: str | Path, model, dataset, metrics: dict | None = None) -> str:
    """The text of a run's model card, from its folder and its model.

    Args:
        run_dir: The run folder (its config, vocabulary and history are
            read).
        model: The run's captioner (`keras.Model`), for its parameter count.
        dataset: The run's `radcap.data.Dataset`, for the images per split.
        metrics: The metrics dict of `radcap.evaluation.evaluate`; None
            before any evaluation ("not evaluated yet").

    Returns:
        Markdown.
    """
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    facts = {
        "vocab_size": runs.load_vocab(run_dir).size,
        "parameters": int(model.count_params()),
        "images": {k: int(v) for k, v in dataset.counts()["images"].items()},
        "history": runs.read_history(run_dir, verbose=False),
    }
    return card_text(config, facts, metrics)


def card_text(config: Config, facts: dict, metrics: dict | None = None) -> str:
    """The model card of a run with `config`, from what is known of it.

    Args:
        config: The run's config.
        facts: `vocab_size`, `parameters`, `images` (`{split: count}`),
            and `history` (the `history.csv` frame, or None).
        metrics: The evaluation's metrics dict, or None.
    """
    sections = [
        f"# Model card: radcap run `{config.name}`",
        _NOT_CLINICAL,
        "## Model details\n\n" + _details(config, facts),
        "## Uses\n\n" + _USES,
        "## Training data\n\n" + _data(config, facts["images"]),
        "## Evaluation\n\n" + _evaluation(config, metrics),
        "## Limitations\n\n" + _limitations(config),
        "## Citation\n\n" + _citation(config),
    ]
    return "\n\n".join(sections) + "\n"


def _details(config: Config, facts: dict) -> str:
    if config.decoder == "transformer":
        decoder = (
            f"Transformer decoder ({config.decoder_layers} layers, "
            f"{config.heads} heads), attending over the {config.grid_layer} grid"
        )
    else:
        decoder = f"merge decoder ({config.cell.upper()})"
        decoder += (
            f" with Bahdanau attention over the {config.grid_layer} grid"
            if config.attention
            else ", no attention"
        )
    lines = [
        f"- Decoder: {decoder}",
        f"- Image backbone: VGG16, frozen, {_weights(config)}",
        f"- Vocabulary size: {facts['vocab_size']} tokens (the train split's "
        f"words, min_count={config.min_count}, and {len(SPECIALS)} special tokens)",
        f"- Parameters: {facts['parameters']:,} (the decoder; the backbone's "
        "are not trained)",
        f"- Caption length: at most {config.max_len} words",
        f"- radcap version: {__version__}",
        f"- Config name: {config.name}",
    ]
    history = facts["history"]
    if history is not None:
        best = int(history["val_loss"].idxmin())
        lines.append(
            f"- Training: {len(history)} epochs, best validation loss "
            f"{history['val_loss'][best]:.4f} at epoch {best + 1}"
        )
    return "\n".join(lines)


def _weights(config: Config) -> str:
    if config.weights == "imagenet":
        return "ImageNet weights"
    if config.weights is None:
        return "random weights (an offline smoke run; no ImageNet features)"
    return f"weights from {config.weights}"


def _data(config: Config, images: dict) -> str:
    counts = ", ".join(f"{images.get(s, 0):,} {s}" for s in ("train", "validation"))
    counts = f"Images: {counts}, {images.get('test', 0):,} test."
    if config.source == "demo":
        source = (
            "radcap's synthetic demo dataset: drawn images and captions made by "
            "radcap's own generator (`radcap.data.demo`). No patient data; the "
            "scores say nothing about real radiology images."
        )
    elif config.source == "roco":
        source = (
            "ROCO, Radiology Objects in COntext (Pelka et al., 2018): radiology "
            "figures and their captions from articles in the PubMed Central Open "
            "Access subset. The figures are not radcap's: each keeps the licence "
            "of the article it comes from, as the source states it per figure "
            "(the original repository's `licences.txt` lists ROCO_ID, PMC_ID "
            "and the CC licence). Check a figure's licence before you reuse it."
        )
    else:
        source = (
            f"The `{config.source}` dataset `{config.dataset}`. Its images, "
            "captions, licence and citation are its publisher's: see its own "
            "documentation."
        )
    return f"{source}\n\n{counts}"


def _evaluation(config: Config, metrics: dict | None) -> str:
    if metrics is None:
        return NOT_EVALUATED.format(run=config.name)
    rows = dict(metrics["results"])
    rows.update({f"baseline: {k}": r for k, r in metrics.get("baselines", {}).items()})
    columns = [c for c in SCORES if any(c in r for r in rows.values())]
    table = ["| decoding | " + " | ".join(columns) + " |"]
    table.append("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.4f}" if c in row else "" for c in columns]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    text = (
        f"Split `{metrics['split']}`, {metrics['images']} images, "
        f"{metrics['scoring']} scoring. The baselines: `frequency` gives every "
        "image the most frequent training caption; `nearest_neighbour` the "
        "caption of the most similar training image. A model that does not "
        "beat both has learnt nothing from the images.\n\n" + "\n".join(table)
    )
    return text + "\n\n" + _familiarity(metrics.get("familiarity", {}))


def _familiarity(figures: dict) -> str:
    if "threshold" not in figures:
        return f"Familiarity: unknown. {figures.get('unknown', '')}".strip()
    return (
        f"Familiarity threshold: {figures['threshold']:.4f}; "
        f"{figures['flagged']} of {figures['images']} evaluated images are "
        "flagged as unlike the training images."
    )


def _limitations(config: Config) -> str:
    learnt = {
        "imagenet": "learnt on ImageNet's photographs, never tuned on radiology",
        None: "untrained: they hold no learnt knowledge of images",
    }.get(config.weights, "never tuned on radiology by radcap")
    return f"""\
- The image features come from VGG16, frozen, with {_weights(config)}:
  {learnt}.
- English captions only; at most {config.max_len} words (longer captions were
  cut to that length in training, and generation stops there).
- The familiarity flag (`radcap.features.familiarity`) warns when an image lies far
  from the training images in the backbone's block means (about 1 validation
  image in 100 is flagged by design). It catches other kinds of images
  (photographs, blank or noise images, other modalities); it does not catch a
  familiar-looking image whose caption is wrong: a missed or invented
  finding, the wrong side, a wrong measurement.
- The metrics compare words with reference captions; a high score does not
  mean a clinically correct caption."""


def _citation(config: Config) -> str:
    text = "Cite the data the model was trained on"
    if config.source == "demo":
        return f"{text}: radcap's synthetic demo data (no external dataset)."
    if config.source == "roco":
        return f"{text}:\n\n> {ROCO_CITATION}"
    return f"{text}: see the `{config.dataset}` dataset's own documentation."
