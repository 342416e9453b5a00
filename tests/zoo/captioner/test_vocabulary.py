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
    assert Vocabulary.from_json(vocab.to_json()).endings() is None
    built = Vocabulary.build(["A red car.", "Car", "a car"], min_count=1)
    again = Vocabulary.from_json(built.to_json())
    assert (again.final_words, again.single_words) == (["car"], ["car"])
    np.testing.assert_array_equal(again.endings(), built.endings())


def test_build_records_how_captions_end():
    # "zebra" ends a caption but is cut from the vocabulary by min_count.
    vocab = Vocabulary.build(["A red car.", "Car", "a red", "a car", "zebra"], min_count=2)
    assert vocab.words == ["[PAD]", "[UNK]", "[START]", "[END]", "a", "car", "red"]
    assert vocab.final_words == ["car", "red"] and vocab.single_words == ["car"]
    endings = vocab.endings()
    # Row 0: may end after the id; row 1: may end after it as the first word.
    #                       PAD    UNK    START  END   a      car   red
    np.testing.assert_array_equal(endings, [[True, False, False, True, False, True, True],
                                            [True, False, False, True, False, True, False]])


def test_min_end_share_keeps_words_that_rarely_end_a_caption_from_ending_one():
    captions = ["a red a", "a cat", "a dog", "the letter a", "cat", "red"]
    # "a": 5 uses, 2 end a caption (0.4); "red": 2 uses, 1 ends one (0.5);
    # "cat" ends both of its uses, "dog" its one, "letter" none.
    every = Vocabulary.build(captions, min_count=1)
    assert every.final_words == ["a", "cat", "dog", "red"]
    assert Vocabulary.build(captions, min_count=1, min_end_share=0.4).final_words == \
        ["a", "cat", "dog", "red"]
    strict = Vocabulary.build(captions, min_count=1, min_end_share=0.45)
    assert strict.final_words == ["cat", "dog", "red"]
    assert strict.single_words == every.single_words == ["cat", "red"]
    assert Vocabulary.build(captions, min_count=1, min_end_share=0.6).final_words == \
        ["cat", "dog"]
    assert Vocabulary.build(captions, min_count=1, min_end_share=1).final_words == \
        ["cat", "dog"]
    for bad in (-0.1, 1.5, "0.1", True, None):
        with pytest.raises(ValueError, match="min_end_share"):
            Vocabulary.build(captions, min_end_share=bad)


def test_errors():
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["a", "[END]"])
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="words"):
        Vocabulary.from_json("[1, 2]")
    with pytest.raises(ValueError, match="or neither"):
        Vocabulary(["a", "b"], final_words=["a"])
    with pytest.raises(ValueError, match="words of the vocabulary"):
        Vocabulary(["a", "b"], final_words=["c"], single_words=[])
    with pytest.raises(ValueError, match="words of the vocabulary"):
        Vocabulary(["a", "b"], final_words=["a"], single_words=["[END]"])
