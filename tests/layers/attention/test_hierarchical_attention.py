import keras
import numpy as np
import pytest

from keras_attention.layers import HierarchicalAttention
from keras_attention.testing import assert_all_close, check_training_step, run_layer_test


def _words(seed=0, shape=(2, 3, 4, 6)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask():
    mask = np.ones((2, 3, 4), bool)
    mask[0, 0, -2:] = False  # padded words
    mask[0, 2] = False  # a fully padded sentence
    mask[1, 1, 1:] = False
    return mask


@pytest.mark.parametrize(
    "kwargs, call_kwargs",
    [
        ({"units": 5}, {}),
        ({"units": 3, "use_bias": False}, {"mask": True, "return_attention_scores": True}),
        ({"units": 4, "sentence_encoder": keras.layers.Dense(7, activation="tanh")},
         {"mask": True}),
    ],
    ids=["plain", "mask-nobias-scores", "sentence-encoder"],
)
def test_layer_checks(kwargs, call_kwargs):
    call_kwargs = dict(call_kwargs)
    if call_kwargs.get("mask"):
        call_kwargs["mask"] = _mask()
    encoder = kwargs.get("sentence_encoder")
    if encoder is not None:  # a fresh encoder per layer instance
        config = keras.saving.serialize_keras_object(encoder)
        kwargs = {**kwargs, "sentence_encoder": config}
    width = 7 if encoder is not None else 6
    out = run_layer_test(HierarchicalAttention, kwargs, [_words()], call_kwargs,
                         expected_output_shape=(2, width))
    if call_kwargs.get("return_attention_scores"):
        _, (word_w, sent_w) = out
        assert tuple(word_w.shape) == (2, 3, 4)
        assert tuple(sent_w.shape) == (2, 3)


def test_bidirectional_gru_sentence_encoder_gets_the_sentence_mask():
    x, mask = _words(1), _mask()
    encoder = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True))
    layer = HierarchicalAttention(4, sentence_encoder=encoder)
    out, (word_w, sent_w) = layer(x, mask=mask, return_attention_scores=True)
    assert tuple(out.shape) == (2, 6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sent_w)[0, 2], 0.0)
    # The fully masked sentence does not influence the document vector.
    x2 = x.copy()
    x2[0, 2] += 5.0
    assert_all_close(layer(x2, mask=mask), out, 1e-5, 1e-5, "masked sentence leaked")
    revived = HierarchicalAttention.from_config(layer.get_config())
    assert isinstance(revived.sentence_encoder, keras.layers.Bidirectional)
    assert revived.sentence_encoder is not encoder


def _randomize(layer, rng):
    weights = {}
    for w in layer.weights:
        value = rng.normal(size=w.shape).astype("float32") * 0.7
        w.assign(value)
        weights[w.path.split("/", 1)[1]] = value
    return weights


def _masked_softmax(logits, mask):
    logits = np.where(mask, logits, -np.inf)
    top = np.max(np.where(mask, logits, -1e30), -1, keepdims=True)
    e = np.where(mask, np.exp(logits - top), 0.0)
    denom = e.sum(-1, keepdims=True)
    return np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)


def test_golden_against_numpy():
    rng = np.random.default_rng(2)
    x, mask = _words(2), _mask()
    layer = HierarchicalAttention(5)
    layer(x, mask=mask)
    w = _randomize(layer, rng)
    doc, (word_w, sent_w) = layer(x, mask=mask, return_attention_scores=True)

    u = np.tanh(x @ w["word_projection/kernel"] + w["word_projection/bias"])  # (B, S, W, U)
    a = _masked_softmax(u @ w["word_context"], mask)  # (B, S, W)
    sentences = np.einsum("bsw,bswf->bsf", a, x)
    sent_mask = mask.any(-1)
    us = np.tanh(sentences @ w["sentence_projection/kernel"] + w["sentence_projection/bias"])
    alpha = _masked_softmax(us @ w["sentence_context"], sent_mask)  # (B, S)
    ref = np.einsum("bs,bsf->bf", alpha, sentences)

    np.testing.assert_allclose(keras.ops.convert_to_numpy(word_w), a, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sent_w), alpha, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(doc), ref, atol=1e-5)
    # Without a mask every word and sentence takes part.
    full = np.ones_like(mask)
    a = _masked_softmax(u @ w["word_context"], full)
    sentences = np.einsum("bsw,bswf->bsf", a, x)
    us = np.tanh(sentences @ w["sentence_projection/kernel"] + w["sentence_projection/bias"])
    ref = np.einsum("bs,bsf->bf", _masked_softmax(us @ w["sentence_context"], full[..., 0]),
                    sentences)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), ref, atol=1e-5)


def test_masking_semantics():
    x, mask = _words(3), _mask()
    mask[1] = False  # a fully masked document
    layer = HierarchicalAttention(4)
    doc, (word_w, sent_w) = layer(x, mask=mask, return_attention_scores=True)
    doc, word_w, sent_w = (keras.ops.convert_to_numpy(t) for t in (doc, word_w, sent_w))
    for t in (doc, word_w, sent_w):
        assert np.all(np.isfinite(t))
    np.testing.assert_array_equal(word_w[~mask], 0.0)
    np.testing.assert_allclose(word_w.sum(-1), mask.any(-1).astype("float32"), atol=1e-6)
    np.testing.assert_array_equal(sent_w[0, 2], 0.0)  # fully masked sentence
    np.testing.assert_allclose(sent_w[0].sum(), 1.0, atol=1e-6)
    np.testing.assert_array_equal(sent_w[1], 0.0)
    np.testing.assert_array_equal(doc[1], 0.0)  # fully masked document
    # Padded words have no influence.
    x2 = x.copy()
    x2[~mask] += 10.0
    assert_all_close(layer(x2, mask=mask), doc, 1e-5, 1e-5, "padding leaked")
    # Gradients stay finite with a fully masked document.
    check_training_step(HierarchicalAttention, {"units": 4}, [x], {"mask": mask})


def test_implicit_mask_equals_explicit():
    x, mask = _words(4), _mask()
    x = np.where(mask[..., None], x, 0.0).astype("float32")
    layer = HierarchicalAttention(4)
    inp = keras.Input((3, 4, 6))
    model = keras.Model(inp, layer(keras.layers.Masking()(inp)))
    assert_all_close(model(x), layer(x, mask=mask), 1e-6, 1e-6, "implicit mask")
    assert getattr(model.outputs[0], "_keras_mask", None) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": 0}, "units"),
        ({"units": 2.5}, "units"),
        ({"units": 4, "sentence_encoder": "gru"}, "sentence_encoder"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        HierarchicalAttention(**kwargs)


def test_call_errors():
    layer = HierarchicalAttention(4)
    with pytest.raises(ValueError, match="inputs"):
        layer(np.zeros((2, 3, 6), "float32"))
    with pytest.raises(ValueError, match="feature dimension"):
        HierarchicalAttention(4)(keras.Input((3, 4, None)))
    layer(_words())
    with pytest.raises(ValueError, match="mask"):
        layer(_words(), mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="mask"):
        layer(_words(), mask=np.ones((2, 3, 5), bool))
    with pytest.raises(ValueError, match="sentence_encoder"):
        HierarchicalAttention(4, sentence_encoder=keras.layers.Flatten())(_words())
