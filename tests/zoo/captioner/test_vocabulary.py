import numpy as np
import pytest

from zoo.captioner.vocabulary import Vocabulary


def test_build_orders_by_count_then_word():
    vocab = Vocabulary.build(["A red car.", "A red hat.", "A blue car", "zebra"], min_count=2)
    assert vocab.words == ["[PAD]", "[UNK]", "[START]", "[END]", "a", "car", "red"]
    assert len(Vocabulary.build(["a b c d e f"], min_count=1, max_size=6)) == 6


def test_encode_decode():
    vocab = Vocabulary(["a", "red", "car"])
    ids = vocab.encode("A red bus, a car.", max_length=6)
    np.testing.assert_array_equal(ids, [2, 4, 5, 1, 4, 3])  # cut to 4 words, [END] kept
    assert vocab.decode([4, 5, 1, 6, 3, 6]) == "a red car"
    np.testing.assert_array_equal(vocab.encode("", 4), [2, 3, 0, 0])


def test_json_round_trip():
    vocab = Vocabulary(["a", "red"])
    assert Vocabulary.from_json(vocab.to_json()).words == vocab.words


def test_errors():
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["a", "[END]"])
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="words"):
        Vocabulary.from_json("[1, 2]")
