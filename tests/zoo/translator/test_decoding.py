import keras
import numpy as np
import pytest
from keras import ops

from zoo.translator import decoding
from zoo.translator.gru_seq2seq import GRUSeq2Seq
from zoo.translator.tokenizer import EOS_ID, PAD_ID
from zoo.translator.transformer_seq2seq import TransformerSeq2Seq

V = 23


def _source():
    rng = np.random.RandomState(0)
    source = rng.randint(4, V, size=(3, 6)).astype("int32")
    source[1, 4:] = 0  # padding
    return source


def _transformer():
    keras.utils.set_random_seed(1)
    model = TransformerSeq2Seq(V, hidden_dim=16, num_heads=2, intermediate_dim=32,
                               num_encoder_layers=1, num_decoder_layers=2, dropout=0.0)
    model({"encoder_tokens": _source(), "decoder_tokens": np.ones((3, 2), "int32")})
    return model


def _reference_greedy(step_logits, max_length):
    """Greedy decoding by re-running the full decoder on the whole prefix."""
    tokens = np.full((3, 1), 2, "int32")
    finished = np.zeros(3, bool)
    for _ in range(max_length):
        nxt = np.argmax(np.asarray(step_logits(tokens))[:, -1], axis=-1).astype("int32")
        nxt = np.where(finished, PAD_ID, nxt)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        finished |= nxt == EOS_ID
        if finished.all():
            break
    out = np.zeros((3, max_length), "int32")
    out[:, : tokens.shape[1] - 1] = tokens[:, 1:]
    return out


def test_cached_greedy_equals_full_recompute():
    model = _transformer()
    source = _source()
    memory, mask = model.encode(source)
    expected = _reference_greedy(lambda t: model.decode(t, memory, mask), 7)
    got = np.asarray(decoding.greedy_decode(model, ops.convert_to_tensor(source), 7))
    np.testing.assert_array_equal(got, expected)


def test_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well():
    model = _transformer()
    source = ops.convert_to_tensor(_source())
    greedy = np.asarray(decoding.greedy_decode(model, source, 7))
    beam1 = np.asarray(decoding.beam_search(model, source, 7, beam_size=1, length_penalty=0.0))
    np.testing.assert_array_equal(beam1, greedy)

    def log_prob(tokens):
        memory, mask = model.encode(source)
        inputs = np.concatenate([np.full((3, 1), 2, "int32"), tokens[:, :-1]], axis=1)
        logp = np.asarray(ops.log_softmax(model.decode(inputs, memory, mask), axis=-1))
        picked = np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
        return (picked * (tokens != PAD_ID)).sum(axis=1)

    beam4 = np.asarray(decoding.beam_search(model, source, 7, beam_size=4, length_penalty=0.0))
    assert beam4.shape == (3, 7)
    assert np.all(log_prob(beam4) >= log_prob(greedy) - 1e-4)


def test_gru_greedy_equals_full_recompute():
    keras.utils.set_random_seed(2)
    model = GRUSeq2Seq(V, hidden_dim=12, dropout=0.0)
    source = _source()
    model({"encoder_tokens": source, "decoder_tokens": np.ones((3, 2), "int32")})
    memory, mask, state = model.encode(source)
    expected = _reference_greedy(lambda t: model.decode(t, memory, mask, state)[0], 6)
    got = np.asarray(decoding.greedy_decode_gru(model, ops.convert_to_tensor(source), 6))
    np.testing.assert_array_equal(got, expected)


def test_model_config_round_trip_and_errors():
    model = _transformer()
    clone = TransformerSeq2Seq.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    with pytest.raises(ValueError, match="divisible by `num_heads`"):
        TransformerSeq2Seq(V, hidden_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="vocabulary_size"):
        TransformerSeq2Seq(0)
    with pytest.raises(ValueError, match="hidden_dim"):
        GRUSeq2Seq(V, hidden_dim=-1)
