import os
import tempfile

import keras
import numpy as np
import pytest

from keras_attention.layers import LinearAttention, MultiHeadAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4},
        {"num_heads": 2, "key_dim": 4, "feature_map": "relu", "causal": True,
         "chunk_size": 4},
        {"num_heads": 2, "key_dim": 4, "position_encoding": "rotary", "use_bias": False},
    ],
    ids=["elu", "relu-causal", "rotary"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(LinearAttention, kwargs, attention_mask=False, scores=False)


FAVOR_GQA = {"num_heads": 4, "key_dim": 4, "feature_map": "favor+", "num_random_features": 8,
             "seed": 3, "num_key_value_heads": 2, "value_dim": 6, "output_dim": 10}


def test_favor_layer_checks():
    run_attention_layer_test(LinearAttention, FAVOR_GQA, attention_mask=False, scores=False)


def test_favor_causal_does_not_leak_future_keys():
    x = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("float32")
    layer = LinearAttention(**FAVOR_GQA)
    base = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    x2 = x.copy()
    x2[:, -2:] += 10.0
    out = keras.ops.convert_to_numpy(layer(x2, x2, use_causal_mask=True))
    np.testing.assert_allclose(out[:, :-2], base[:, :-2], atol=1e-5, rtol=1e-5)


def _features(x, feature_map, projection=None, key_valid=None):
    """NumPy feature map of (B, L, N, H), with the op's stabilising shifts."""
    if feature_map == "elu":
        return np.where(x > 0, x + 1.0, np.exp(x))
    if feature_map == "relu":
        return np.maximum(x, 0.0)
    h, m = projection.shape
    x = x * h**-0.25
    wx = np.einsum("blnh,hm->blnm", x, projection)
    sq = 0.5 * np.sum(x * x, -1, keepdims=True)
    if key_valid is None:  # queries: one shift per query
        shift = wx.max(-1, keepdims=True)
    else:  # keys: one shift per (batch, head) over the real keys
        real = key_valid[:, :, None, None]
        shift = np.where(real, wx, -np.inf).max(axis=(1, 3), keepdims=True)
    return np.exp(wx - sq - shift) / np.sqrt(m)


def _numpy_linear(x, weights, num_heads, kv_heads, feature_map, causal, key_valid,
                  query_valid, projection=None, eps=0.0):
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    g = num_heads // kv_heads
    q = np.einsum("btf,fnh->btnh", x, wq) + bq
    k = np.einsum("bsf,fkh->bskh", x, wk) + bk
    v = np.einsum("bsf,fkv->bskv", x, wv) + bv
    phi_q = _features(q, feature_map, projection)
    phi_k = _features(k, feature_map, projection, key_valid) * key_valid[:, :, None, None]
    phi_k, v = np.repeat(phi_k, g, axis=2), np.repeat(v, g, axis=2)
    t = x.shape[1]
    allowed = np.tril(np.ones((t, t))) if causal else np.ones((t, t))
    scores = np.einsum("btnm,bsnm->bnts", phi_q, phi_k) * allowed
    den = scores.sum(-1)[..., None].transpose(0, 2, 1, 3) + eps
    out = np.einsum("bnts,bsnv->btnv", scores, v) / np.where(den > 0, den, 1.0)
    out = np.einsum("btnv,nvo->bto", out, wo) + bo
    return np.where(query_valid[..., None], out, 0.0)


@pytest.mark.parametrize("feature_map", ["elu", "relu", "favor+"])
@pytest.mark.parametrize("causal", [False, True])
def test_golden_against_numpy(feature_map, causal):
    rng = np.random.default_rng(0)
    b, t = 2, 10
    x = rng.normal(size=(b, t, 6)).astype("float32")
    extra = {"num_random_features": 12, "seed": 0} if feature_map == "favor+" else {}
    layer = LinearAttention(4, 3, feature_map=feature_map, causal=causal,
                            num_key_value_heads=2, chunk_size=3, **extra)
    layer(x, x)
    # Layout: MultiHeadAttention's weights, preceded by random_features for favor+.
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5
               for w in layer.trainable_weights]
    layer.set_weights([keras.ops.convert_to_numpy(w)
                       for w in layer.non_trainable_weights] + weights)
    pad = np.ones((b, t), bool)
    pad[1, -3:] = False
    out = layer(x, x, query_mask=pad, value_mask=pad)
    projection = None
    if feature_map == "favor+":
        projection = keras.ops.convert_to_numpy(layer.random_features)
    expected = _numpy_linear(x, weights, 4, 2, feature_map, causal, pad, pad, projection)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-4,
                               rtol=1e-4)


def test_favor_approximates_softmax_attention():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 12, 8)).astype("float32") * 0.5
    layer = LinearAttention(2, 4, feature_map="favor+", num_random_features=4096, seed=0)
    ref = MultiHeadAttention(2, 4, implementation="full")
    layer(x, x)
    ref(x, x)
    ref.set_weights(layer.get_weights()[1:])  # all but the random projection
    for causal in (False, True):
        approx = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=causal))
        exact = keras.ops.convert_to_numpy(ref(x, x, use_causal_mask=causal))
        # Unbiased features give about 1.5% here; the error shrinks as 1/sqrt(M).
        assert np.mean(np.abs(approx - exact)) < 0.05 * np.mean(np.abs(exact))


def test_random_features_are_saved_and_seeded():
    x = np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32")
    layer = LinearAttention(2, 4, feature_map="favor+", num_random_features=6)
    layer(x, x)
    features = layer.random_features
    assert tuple(features.shape) == (4, 6)
    assert not features.trainable
    assert all(w is not features for w in layer.trainable_weights)
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, layer(inputs, inputs))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    restored = loaded.layers[-1].random_features
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored),
                                  keras.ops.convert_to_numpy(features))
    assert_all_close(loaded(x), model(x), 1e-6, 1e-6, "reloaded model")
    # An int seed fixes the draw; the default size is round(H ln H), at least H.
    a = LinearAttention(2, 8, feature_map="favor+", seed=5)
    b = LinearAttention(2, 8, feature_map="favor+", seed=5)
    y = np.zeros((1, 3, 8), "float32")
    a(y, y)
    b(y, y)
    assert tuple(a.random_features.shape) == (8, 17)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.random_features),
                                  keras.ops.convert_to_numpy(b.random_features))
    assert LinearAttention(2, 4).random_features is None


def test_causal_constructor_equals_use_causal_mask():
    x = np.random.default_rng(3).normal(size=(2, 9, 8)).astype("float32")
    layer = LinearAttention(2, 4, causal=True)
    plain = LinearAttention(2, 4)
    layer(x, x)
    plain(x, x)
    plain.set_weights(layer.get_weights())
    assert_all_close(layer(x, x), plain(x, x, use_causal_mask=True), 1e-6, 1e-6, "causal")


def test_causal_cross_attention_rows_before_first_key_are_zero():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    ctx = rng.normal(size=(2, 4, 8)).astype("float32")
    out = keras.ops.convert_to_numpy(LinearAttention(2, 4, causal=True)(x, ctx))
    # Query i sits at key position i - 3: the first three see no key.
    np.testing.assert_array_equal(out[:, :3], 0.0)
    assert np.all(np.abs(out[:, 3:]).sum(-1) > 0)


@pytest.mark.parametrize(
    "causal",
    [
        False,
        True,
    ],
)
def test_functional_model_with_unknown_length(causal):
    rng = np.random.default_rng(5)
    layer = LinearAttention(2, 4, causal=causal, chunk_size=4)
    x = keras.Input((None, 8))
    model = keras.Model(x, layer(x, x))
    for t in (11, 6):
        data = rng.normal(size=(2, t, 8)).astype("float32")
        assert_all_close(model(data), layer(data, data), 1e-6, 1e-6, f"length {t}")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"feature_map": "tanh"}, ValueError, "feature_map"),
        ({"num_random_features": 8}, ValueError, "num_random_features"),
        ({"feature_map": "favor+", "num_random_features": 0}, ValueError,
         "num_random_features"),
        ({"feature_map": "favor+", "seed": "abc"}, TypeError, "seed"),
        ({"causal": 1}, TypeError, "causal"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"dropout": 0.1}, TypeError, "dropout"),
        ({"implementation": "full"}, TypeError, "implementation"),
        ({"position_encoding": "alibi"}, ValueError, "position_encoding"),
        ({"position_encoding": "shaw"}, ValueError, "position_encoding"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    kwargs = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises(error, match=match):
        LinearAttention(**kwargs)


def test_call_errors():
    x = np.zeros((2, 4, 8), "float32")
    layer = LinearAttention(2, 4)
    layer(x, x)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match="return_attention_scores"):
        layer(x, x, return_attention_scores=True)
    with pytest.raises(ValueError, match="cache"):
        layer(x, x, cache=np.zeros((2, 2, 4, 2, 4), "float32"), cache_index=0)


@pytest.mark.large
@pytest.mark.parametrize("feature_map", ["elu", "favor+"])
def test_long_sequence_runs_without_quadratic_memory(feature_map):
    # An (N, N) float32 matrix per head would need 2 heads x 1 GiB here.
    n = 16384
    x = keras.random.normal((1, n, 16), seed=0)
    layer = LinearAttention(2, 8, feature_map=feature_map, causal=True, seed=0)
    out = keras.ops.convert_to_numpy(layer(x, x))
    assert out.shape == (1, n, 16)
    assert np.all(np.isfinite(out))
