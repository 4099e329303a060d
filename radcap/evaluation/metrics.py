"""Caption metrics: the COCO toolkit's scores, two scorings, and diversity.

- **Metrics**: BLEU-1..4, METEOR, ROUGE-L and CIDEr from `pycocoevalcap`.
- **NLTK BLEU**: `nltk.translate.bleu_score.corpus_bleu`, cumulative
  BLEU-1..4 as the classic Keras captioning tutorials compute it, on the
  same cleaned words, reported beside the COCO toolkit's (see `nltk_bleu`).
- **Diversity**: share of distinct captions, vocabulary words used, share of
  captions copied verbatim from the training captions, mean caption length
  against the references'.

Two scorings (`scoring=`), and which one to quote:

- `"coco"` (default): the COCO caption evaluation. Captions are cleaned by
  `radcap.core.text.clean_caption` (lowercase, punctuation that is not part of a
  token dropped; "t2-weighted", "3.5" kept), and BLEU is the corpus BLEU of
  the whole split. Quote this to compare with image-captioning papers. The PTB
  tokenizer is not used (it needs Java and the captions are already clean).
- `"imageclef"`: as the ImageCLEFmedical caption task's evaluator does it.
  Each caption is lowercased, every run of digits becomes the word "number",
  and ASCII punctuation is deleted ("t2-weighted" -> "tnumberweighted"; an en
  dash stays, as in that evaluator); each metric is computed per caption and
  averaged over captions. BLEU and METEOR then differ from the corpus figures
  (per-caption METEOR runs well above corpus METEOR: 0.92 against 0.70 on the
  demo); ROUGE-L and CIDEr are per-caption means in both scorings. Quote this
  beside ImageCLEFmedical results. That task's headline
  metrics (BERTScore, ROUGE-1, BLEURT, CLIPScore) need large models and are
  not computed here.

METEOR needs Java; where it is missing METEOR is left out and `metrics.json`
says so.
"""

from __future__ import annotations

import atexit
import re
import shutil
import string

import numpy as np

from radcap.core.config import SCORINGS
from radcap.core.text import SCORES, clean_caption

METRICS = SCORES
TABLE_COLUMNS = (*METRICS, "distinct", "copied")
_DIGITS = re.compile(r"\d+")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def java_available() -> bool:
    """Whether METEOR can run (it is a Java program)."""
    return shutil.which("java") is not None


def distinct_share(captions) -> float:
    """Share of distinct captions: 1.0 when all differ, 1/N when all are the same."""
    captions = list(captions)
    return len(set(captions)) / len(captions) if captions else 0.0


def imageclef_normalize(caption: str) -> str:
    """Normalise a caption as the ImageCLEFmedical caption evaluator does.

    Lowercase, every run of digits replaced by "number", then every ASCII
    punctuation character deleted (not replaced by a space), whitespace
    collapsed.

    >>> imageclef_normalize("Axial T2-weighted MRI (arrow): a 3.5 cm mass.")
    'axial tnumberweighted mri arrow a numbernumber cm mass'
    """
    text = _DIGITS.sub("number", str(caption).lower())
    return " ".join(text.translate(_NO_PUNCTUATION).split())


def normalizer(scoring: str):
    if scoring not in SCORINGS:
        raise ValueError(
            f"scoring={scoring!r} is unknown: use 'coco' (COCO caption evaluation, "
            "for captioning papers) or 'imageclef' (ImageCLEFmedical style)."
        )
    return clean_caption if scoring == "coco" else imageclef_normalize


def score(
    references: dict,
    candidates: dict,
    meteor: bool | None = None,
    scoring: str = "coco",
) -> dict:
    """Score generated captions against references.

    Args:
        references: image_id → list of reference captions.
        candidates: image_id → generated caption (same keys).
        meteor: Compute METEOR; default: when Java is installed.
        scoring: `"coco"` (corpus BLEU over `clean_caption`ed text) or
            `"imageclef"` (ImageCLEFmedical normalisation, every metric
            averaged per caption); see the module docstring.

    Returns:
        `{"BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr", "distinct"}` plus `"METEOR"`
        (or `"METEOR_skipped"` with the reason), floats in [0, 1] (CIDEr up to 10).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    normalize = normalizer(scoring)
    per_caption = scoring == "imageclef"
    missing = set(references) ^ set(candidates)
    if missing:
        raise ValueError(
            f"references and candidates differ in {len(missing)} image ids, "
            f"e.g. {sorted(missing)[:3]}: give one generated caption per image."
        )
    if not candidates:
        raise ValueError("Nothing to score: no captions given.")
    gts = {k: [normalize(r) for r in refs] for k, refs in references.items()}
    # An empty candidate breaks the scorers; a placeholder word scores as wrong.
    res = {k: [normalize(c) or "<empty>"] for k, c in candidates.items()}
    out = {}
    bleu, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    if per_caption:
        bleu = [np.mean(scores) for scores in per_image]
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if meteor is False:
        out["METEOR_skipped"] = "METEOR was turned off (--no-meteor, meteor=False)."
    elif meteor or java_available():
        try:
            out["METEOR"] = _meteor(gts, res, per_caption)
        except Exception as err:  # a JVM that fails to start, or dies mid-way
            out["METEOR_skipped"] = (
                f"METEOR failed ({type(err).__name__}: {err}); check that `java "
                "-version` runs and that 2 GB of memory are free for it."
            )
    else:
        out["METEOR_skipped"] = (
            "Java not found: METEOR is a Java program. Install a JRE."
        )
    out["nltk"] = nltk_bleu(gts, res)
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["distinct"] = distinct_share(candidates.values())
    return out


def nltk_bleu(gts: dict, res: dict) -> dict:
    """Corpus BLEU-1..4 by NLTK, as the classic captioning tutorials report it.

    Cumulative weights (BLEU-2 is the geometric mean of the 1- and 2-gram
    precisions), no smoothing, the brevity penalty against the closest
    reference length. It differs from the COCO toolkit's BLEU mostly in
    rounding and in the smoothing of n-gram orders with no match (COCO adds
    a tiny count, NLTK scores them 0 and warns), so the two agree closely on
    the same words; the tutorials' own figures differ more, because they
    also drop one-letter words and numbers before scoring.

    Args:
        gts: image_id → list of normalised reference captions.
        res: image_id → `[normalised generated caption]`.

    Returns:
        `{"BLEU-1": ..., "BLEU-4": ...}` floats in [0, 1].
    """
    import warnings

    from nltk.translate.bleu_score import corpus_bleu

    keys = list(gts)
    references = [[r.split() for r in gts[k]] for k in keys]
    hypotheses = [res[k][0].split() for k in keys]
    weights = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the hypothesis contains 0 counts of 4-gram"
        return {
            f"BLEU-{n}": float(corpus_bleu(references, hypotheses, weights=w))
            for n, w in enumerate(weights, 1)
        }


# One METEOR process per Python process: the Java program takes about 8 s to
# start and then scores a split in a fraction of a second, so every scoring
# of an evaluation (decodings, baselines, several runs) shares it.
_meteor_scorer = None


def start_meteor() -> None:
    """Start METEOR's Java process now, so that it boots while other work runs.

    `score` uses it (and starts it when nothing has). Does nothing without
    Java; a process that cannot start is reported by `score`.
    """
    if java_available():
        try:
            _meteor_process()
        except OSError:
            pass  # `score` tries again and says why in "METEOR_skipped"


def _meteor_process():
    """The running METEOR scorer, started when there is none."""
    global _meteor_scorer
    if _meteor_scorer is None:
        from pycocoevalcap.meteor.meteor import Meteor

        _meteor_scorer = Meteor()
    return _meteor_scorer


def _stop_meteor() -> None:
    """End the METEOR process (at exit, or after it failed mid-way)."""
    global _meteor_scorer
    scorer, _meteor_scorer = _meteor_scorer, None
    if scorer is None:
        return
    if scorer.lock.locked():  # a failed call never released it; the destructor
        scorer.lock.release()  # of pycocoevalcap's scorer would wait on it forever
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()
    try:  # closed here, so that the destructor does not flush into a dead pipe
        scorer.meteor_p.stdin.close()
    except OSError:
        pass


atexit.register(_stop_meteor)  # the Java process ends with this one


def _meteor(gts: dict, res: dict, per_caption: bool) -> float:
    scorer = _meteor_process()
    try:
        total, per_image = scorer.compute_score(gts, res)
    except Exception:
        _stop_meteor()  # the next call starts a fresh process
        raise
    return float(np.mean(per_image) if per_caption else total)


def diversity(captions, train_captions) -> dict:
    """How varied generated captions are, and how much they copy.

    Captions are compared after `clean_caption`.

    Args:
        captions: Generated captions, one per image.
        train_captions: Every caption of the training split.

    Returns:
        `distinct`: share of distinct captions; `words_used`: number of
        distinct words; `copied`: share of captions that equal a training
        caption word for word; `mean_length`: mean words per caption.
    """
    captions = [clean_caption(c or "") for c in captions]
    train = {clean_caption(c) for c in train_captions}
    n = max(len(captions), 1)
    return {
        "distinct": distinct_share(captions),
        "words_used": len({w for c in captions for w in c.split()}),
        "copied": sum(c in train for c in captions) / n,
        "mean_length": sum(len(c.split()) for c in captions) / n,
    }
