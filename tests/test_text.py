"""Caption cleaning and the vocabulary."""

import numpy as np
import pytest

from radcap.text import Vocabulary, clean_caption


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
