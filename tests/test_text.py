"""Caption cleaning and the vocabulary."""

import numpy as np
import pytest

from radcap.core.text import Vocabulary, clean_caption, fold_unicode


@pytest.mark.parametrize(
    "raw, clean",
    [
        (
            " Axial T2-weighted MRI (arrow): a 3.5 cm mass.\n",
            "axial t2-weighted mri arrow a 3.5 cm mass",
        ),
        ("Fracture at C5/6; 50% narrowing!", "fracture at c5/6 50% narrowing"),
        ("  CT\tscan\r\n -- ", "ct scan"),
        ("...", ""),
        ("Follow-up - 2 weeks.", "follow-up 2 weeks"),
    ],
)
def test_clean_caption(raw, clean):
    assert clean_caption(raw) == clean


# Fragments of real ROCO captions (and a few of other scripts), as published.
@pytest.mark.parametrize(
    "raw, clean",
    [
        ("Ménétrier disease", "menetrier disease"),
        (
            " Scanner du fémur droit (coupe axiale)",
            "scanner du femur droit coupe axiale",
        ),
        (
            "nodule of size 10 × 6\u2009cm in right middle",
            "nodule of size 10 x 6 cm in right middle",
        ),
        ("a 5×3 cm mass", "a 5x3 cm mass"),
        ("It measured 4.3\u00a0cm in diameter", "it measured 4.3 cm in diameter"),
        ("ANC of 200/µl.", "anc of 200/ul"),
        ("scale bar corresponds to 1.0 μm.", "scale bar corresponds to 1.0 um"),
        ("view of α-grains in EBM", "view of α-grains in ebm"),
        ("homozygous ΔF508 CF", "homozygous δf508 cf"),
        (" Posterior–anterior plain radiograph", "posterior-anterior plain radiograph"),
        ("Coronal contrast\u2010enhanced CT", "coronal contrast-enhanced ct"),
        (" — Dysmorphic profile", "dysmorphic profile"),
        ("CTA\u200a=\u200acomputed tomography", "cta computed tomography"),
        ("the \u2018fleck\u2019 sign (arrow)", "the fleck sign arrow"),
        ("Waldenström's macroglobulinemia", "waldenstrom s macroglobulinemia"),
        ("semanas após a admissão", "semanas apos a admissao"),
        ("rotated 45° to the left", "rotated 45 degrees to the left"),
        ("radiograph of patient n°1", "radiograph of patient n 1"),
        ("a 1½ cm cyst", "a 1 1/2 cm cyst"),
        ("ﬁbrosis of the lung", "fibrosis of the lung"),
        ("Straße naïve Ångström", "strasse naive angstrom"),
        ("zero\u200bwidth", "zerowidth"),
        ("صورة شعاعية للصدر", "صورة شعاعية للصدر"),
        ("胸部X光片", "胸部x光片"),
        ("Μεγάλη μάζα στον πνεύμονα", "μεγάλη μάζα στον πνεύμονα"),
        ("एक्स-रे छाती", "एक्स-रे छाती"),
    ],
)
def test_clean_caption_unicode(raw, clean):
    assert clean_caption(raw) == clean


def test_fold_unicode_leaves_ascii_alone():
    text = "Axial T2-weighted MRI (arrow): 3.5 cm, 50%!"
    assert fold_unicode(text) is text


def test_vocabulary_ids_and_round_trip(tmp_path):
    vocab = Vocabulary.build(["a b b", "b c", "c d"], min_count=2, max_len=3)
    assert vocab.words == ["<pad>", "<start>", "<end>", "<unk>", "b", "c"]
    assert vocab.encode("B c d") == [1, 4, 5, 3, 2]
    assert vocab.encode("b b b b b") == [1, 4, 4, 4, 2]  # cut at max_len
    np.testing.assert_array_equal(
        vocab.encode_batch(["c", "b c"]), [[1, 5, 2, 0, 0], [1, 4, 5, 2, 0]]
    )
    assert vocab.decode([1, 4, 5, 2, 4]) == "b c"
    assert vocab.decode(vocab.encode("c b")) == "c b"
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.words == vocab.words and loaded.max_len == 3
    assert vocab.coverage(["b d"]) == 0.5


def test_load_refuses_other_json(tmp_path):
    (tmp_path / "v.json").write_text('{"max_len": 3, "words": ["a", "b", "c", "d"]}')
    with pytest.raises(ValueError, match="not a radcap vocabulary"):
        Vocabulary.load(tmp_path / "v.json")
