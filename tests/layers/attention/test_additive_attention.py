import keras
import numpy as np
import pytest

from keras_attention.layers import AdditiveAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"units": 8},
        {"units": 8, "normalize": True},
        {"units": 4, "use_bias": False},
    ],
    ids=["bahdanau", "normalized", "nobias"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(AdditiveAttention, kwargs)


def _softmax(x, mask):
    x = np.where(mask, x, -np.inf)
    m = np.max(np.where(mask, x, -1e30), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(x - m), 0.0)
    s = e.sum(-1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)


def _numpy_additive(query, key, value, w1, w2, v, b=None, g=None, mask=None):
    """Bahdanau attention in NumPy: softmax_j(v^T tanh(W1 q_t + W2 k_j + b)) @ value."""
    hidden = (query @ w1)[:, :, None, :] + (key @ w2)[:, None, :, :]  # (B, T, S, U)
    if b is not None:
        hidden = hidden + b
    if g is not None:
        v = g * v / np.linalg.norm(v)
    energy = np.tanh(hidden) @ v  # (B, T, S)
    if mask is None:
        mask = np.ones(energy.shape, bool)
    w = _softmax(energy, mask)
    return w @ value, w


def _set_weights(layer, rng, scale=0.5):
    values = {}
    for name, var in (("w1", layer._query_dense.kernel), ("w2", layer._key_dense.kernel),
                      ("v", layer.attention_v), ("b", layer.attention_b),
                      ("g", layer.attention_g)):
        if var is None:
            values[name] = None
            continue
        val = (rng.normal(size=var.shape) * scale).astype("float32")
        if name == "g":
            val = np.float32(1.7)
        var.assign(val)
        values[name] = val
    return values


@pytest.mark.parametrize("normalize, use_bias", [(False, False), (False, True), (True, True)])
def test_golden_against_numpy(normalize, use_bias):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 3, 5)).astype("float32")
    key = rng.normal(size=(2, 7, 4)).astype("float32")
    value = rng.normal(size=(2, 7, 6)).astype("float32")
    layer = AdditiveAttention(units=3, use_bias=use_bias, normalize=normalize)
    layer(query, value, key=key)
    w = _set_weights(layer, rng)
    mask = rng.random((2, 3, 7)) > 0.4
    mask[0, 1] = False  # an empty row
    out, scores = layer(query, value, key=key, attention_mask=mask,
                        return_attention_scores=True)
    ref_out, ref_w = _numpy_additive(query, key, value, w["w1"], w["w2"], w["v"], w["b"],
                                     w["g"], mask)
    assert tuple(scores.shape) == (2, 1, 3, 7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores)[:, 0], ref_w, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-5)


def test_causal_is_bottom_right_with_fewer_queries():
    rng = np.random.default_rng(1)
    query = rng.normal(size=(2, 3, 4)).astype("float32")
    value = rng.normal(size=(2, 6, 4)).astype("float32")
    layer = AdditiveAttention(units=4)
    out, scores = layer(query, value, use_causal_mask=True, return_attention_scores=True)
    causal = np.arange(6)[None, :] <= np.arange(3)[:, None] + 3  # (T, S)
    mask = np.broadcast_to(causal, (2, 3, 6))
    ref_out, ref_scores = layer(query, value, attention_mask=mask,
                                return_attention_scores=True)
    assert_all_close(scores, ref_scores, 1e-6, 1e-6, "causal scores")
    assert_all_close(out, ref_out, 1e-6, 1e-6, "causal output")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scores)[:, 0, 0, 4:], 0.0)


def test_single_decoding_step_matches_full_sequence():
    """Without a causal mask each query row is independent: T = 1 steps match."""
    rng = np.random.default_rng(2)
    query = rng.normal(size=(2, 4, 5)).astype("float32")
    value = rng.normal(size=(2, 6, 3)).astype("float32")
    value_mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    layer = AdditiveAttention(units=4, normalize=True)
    full = keras.ops.convert_to_numpy(layer(query, value, value_mask=value_mask))
    steps = [keras.ops.convert_to_numpy(layer(query[:, i:i + 1], value,
                                              value_mask=value_mask)) for i in range(4)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


def test_dynamic_lengths_in_a_functional_model():
    rng = np.random.default_rng(4)
    query = rng.normal(size=(2, 3, 4)).astype("float32")
    ctx = rng.normal(size=(2, 6, 5)).astype("float32")
    layer = AdditiveAttention(units=4)
    expected = layer(query, ctx, use_causal_mask=True)
    q_in, v_in = keras.Input((None, 4)), keras.Input((None, 5))
    model = keras.Model([q_in, v_in], layer(q_in, v_in, use_causal_mask=True))
    got = model.predict([query, ctx], verbose=0)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), atol=1e-5)


def test_dropout_only_in_training():
    x = np.random.default_rng(3).normal(size=(2, 5, 4)).astype("float32")
    layer = AdditiveAttention(units=4, dropout=0.5, seed=1)
    inference = keras.ops.convert_to_numpy(layer(x, x))
    assert_all_close(layer(x, x, training=False), inference, 1e-6, 1e-6, "inference")
    trained = keras.ops.convert_to_numpy(layer(x, x, training=True))
    assert not np.allclose(trained, inference)
    assert np.all(np.isfinite(trained))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"units": 0}, ValueError, "units"),
        ({"units": 2.5}, TypeError, "units"),
        ({"units": 4, "dropout": 1.0}, ValueError, "dropout"),
        ({"units": 4, "dropout": "high"}, TypeError, "dropout"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdditiveAttention(**kwargs)


def test_key_value_length_mismatch_raises():
    x = np.zeros((2, 3, 4), "float32")
    with pytest.raises(ValueError, match="key"):
        AdditiveAttention(units=4)(x, np.zeros((2, 5, 4), "float32"),
                                   key=np.zeros((2, 6, 4), "float32"))
