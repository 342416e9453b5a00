import pytest
import tensorflow as tf

from zoo.translator import data
from zoo.translator import tokenizer as tokenizer_lib


VOCAB = tokenizer_lib.RESERVED + ["¿", "?", ".", "!", "'", "Dónde", "está", "la", "bib",
                                  "##lio", "##teca", "I", "don", "t", "know", "##w"]


def test_pretokenize_splits_punctuation_and_keeps_case_and_accents():
    words = tokenizer_lib.pretokenize(tf.constant(["¿Dónde está la biblioteca?", "I don't."]))
    assert words.to_list() == [
        [w.encode() for w in ["¿", "Dónde", "está", "la", "biblioteca", "?"]],
        [w.encode() for w in ["I", "don", "'", "t", "."]],
    ]


def test_core_tokenizer_hand_checked_ids_and_unknown_words():
    tok = tokenizer_lib.SubwordTokenizer(VOCAB)
    ids = tok.tokenize_core(tf.constant(["¿Dónde está la biblioteca?", "I knoww xyz!"]))
    v = {t: i for i, t in enumerate(VOCAB)}
    assert ids.to_list() == [
        [v["¿"], v["Dónde"], v["está"], v["la"], v["bib"], v["##lio"], v["##teca"], v["?"]],
        [v["I"], v["know"], v["##w"], tokenizer_lib.UNK_ID, v["!"]],
    ]
    assert ids.to_list() == tok.tokenize(tf.constant(["¿Dónde está la biblioteca?",
                                                      "I knoww xyz!"])).to_list()


def test_detokenize_joins_pieces_and_stops_at_eos():
    tok = tokenizer_lib.SubwordTokenizer(VOCAB)
    v = {t: i for i, t in enumerate(VOCAB)}
    ids = [[v["¿"], v["Dónde"], v["está"], v["la"], v["bib"], v["##lio"], v["##teca"],
            v["?"], tokenizer_lib.EOS_ID, v["la"]],
           [tokenizer_lib.BOS_ID, v["I"], v["don"], v["'"], v["t"], v["know"], v["."], 0, 0, 0]]
    text = [t.decode() for t in tok.detokenize(tf.constant(ids)).numpy()]
    assert text == ["¿Dónde está la biblioteca?", "I don't know."]


def test_detokenize_drops_the_marker_of_a_leading_suffix_piece():
    tok = tokenizer_lib.SubwordTokenizer(VOCAB)
    v = {t: i for i, t in enumerate(VOCAB)}
    ids = [[tokenizer_lib.BOS_ID, v["##lio"], v["##teca"], v["la"], tokenizer_lib.EOS_ID]]
    assert [t.decode() for t in tok.detokenize(tf.constant(ids)).numpy()] == ["lioteca la"]


def test_vocabulary_must_start_with_reserved_tokens():
    with pytest.raises(ValueError, match=r"must start with"):
        tokenizer_lib.SubwordTokenizer(["a", "b"])


def test_core_and_keras_hub_tokenizers_agree_on_real_sentences():
    pairs = data.read_pairs()
    splits = data.split_pairs(pairs)
    train = splits["train"][:3000]
    vocabulary = tokenizer_lib.train_vocabulary(
        [e for e, _ in train] + [s for _, s in train], 800)
    tok = tokenizer_lib.SubwordTokenizer(vocabulary)
    sentences = [e for e, _ in splits["test"][:300]] + [r[0] for _, r in splits["test"][:300]]
    fast = tok.tokenize(tf.constant(sentences)).to_list()
    core = tok.tokenize_core(tf.constant(sentences)).to_list()
    assert fast == core
    assert sum(len(x) for x in fast) > len(sentences)  # subwords, not one id per line
