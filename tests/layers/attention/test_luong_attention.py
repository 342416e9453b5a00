import keras
import numpy as np
import pytest

from keras_attention.layers import LuongAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test, run_layer_test


@pytest.mark.parametrize(
    "kwargs, extra",
    [
        # "dot" has no weights (no training step) and needs F_v == F_q for cross-attention.
        ({"score": "dot"}, {"value_shape": (2, 5, 16), "run_training": False}),
        ({"score": "general", "scale": True}, {}),
        ({"score": "concat", "units": 4}, {}),
        ({"score": "general", "mode": "local-m", "window": 1}, {}),
        # The helper checks that score rows sum to one: true with renormalize=True.
        # The paper's un-normalised local-p is checked in test_local_p_paper_variant.
        ({"score": "general", "mode": "local-p", "window": 2, "renormalize": True}, {}),
    ],
    ids=["dot", "general-scale", "concat", "local-m", "local-p-renormalized"],
)
def test_layer_checks(kwargs, extra):
    run_attention_layer_test(LuongAttention, kwargs, **extra)


def test_local_p_paper_variant():
    """local-p as in the paper (softmax * Gaussian, rows sum below one)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    ctx = rng.normal(size=(2, 5, 8)).astype("float32")
    value_mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    kwargs = {"score": "general", "mode": "local-p", "window": 2}
    run_layer_test(LuongAttention, kwargs, [x, ctx], {"value_mask": value_mask},
                   expected_output_shape=(2, 6, 8))
    layer = LuongAttention(**kwargs)
    _, scores = layer(x, ctx, value_mask=value_mask, return_attention_scores=True)
    scores = keras.ops.convert_to_numpy(scores)
    sums = scores.sum(-1)
    assert np.all(sums <= 1.0 + 1e-6) and np.all(sums > 0.0)
    assert np.any(sums < 0.99), "local-p weights are not renormalised"
    np.testing.assert_array_equal(scores[1, :, :, 3:], 0.0)


# ---------------------------------------------------------------------- NumPy reference
def _softmax(x, mask):
    m = np.max(np.where(mask, x, -1e30), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(np.where(mask, x, 0.0) - np.where(mask, m, 0.0)), 0.0)
    s = e.sum(-1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)


def _numpy_luong(query, key, value, w, score, mode, window, mask, renormalize=False,
                 query_start=None):
    b, t, _ = query.shape
    s = key.shape[1]
    if score == "dot":
        energy = np.einsum("btf,bsf->bts", query, key)
    elif score == "general":
        energy = np.einsum("btf,bsf->bts", query, key @ w["key"])
    else:
        hidden = (query @ w["query"])[:, :, None] + (key @ w["key"])[:, None]
        energy = np.tanh(hidden) @ w["v"]
    if w.get("g") is not None:
        energy = energy * w["g"]
    pos = np.arange(s)[None, None, :].astype("float64")
    gauss = None
    if mode == "local-m":
        start = s - t if query_start is None else query_start
        center = np.clip(np.arange(t) + start, 0, s - 1)[None, :, None]
        mask = mask & (np.abs(pos - center) <= window)
    elif mode == "local-p":
        gate = 1.0 / (1.0 + np.exp(-(np.tanh(query @ w["position"]) @ w["position_v"])))
        last = np.where(mask, np.arange(s), 0).max(-1)  # (B, T)
        center = (last * gate)[..., None]
        mask = mask & (np.abs(pos - center) <= window)
        gauss = np.exp(-((pos - center) ** 2) / (2 * (window / 2) ** 2))
    weights = _softmax(energy, mask)
    if gauss is not None:
        weights = weights * gauss
        if renormalize:
            total = weights.sum(-1, keepdims=True)
            weights = weights / np.where(total > 0, total, 1.0)
    return weights @ value, weights


def _set_weights(layer, rng):
    w = {}
    pairs = {"key": "_key_dense", "query": "_query_dense", "position": "_position_dense"}
    for name, attr in pairs.items():
        if hasattr(layer, attr):
            val = (rng.normal(size=getattr(layer, attr).kernel.shape) * 0.5).astype("float32")
            getattr(layer, attr).kernel.assign(val)
            w[name] = val
    for name, attr in (("v", "attention_v"), ("position_v", "position_v")):
        if getattr(layer, attr, None) is not None:
            val = rng.normal(size=getattr(layer, attr).shape).astype("float32")
            getattr(layer, attr).assign(val)
            w[name] = val
    if layer.attention_g is not None:
        layer.attention_g.assign(np.float32(0.7))
        w["g"] = np.float32(0.7)
    return w


@pytest.mark.parametrize(
    "kwargs",
    [
        {"score": "dot"},
        {"score": "general", "scale": True},
        {"score": "concat", "units": 3},
        {"score": "dot", "mode": "local-m", "window": 1},
        {"score": "concat", "mode": "local-m", "window": 2, "units": 4},
        {"score": "dot", "mode": "local-p", "window": 2},
        {"score": "general", "mode": "local-p", "window": 1, "units": 3},
        {"score": "concat", "mode": "local-p", "window": 2, "renormalize": True},
    ],
    ids=["dot", "general", "concat", "local-m", "local-m-concat", "local-p",
         "local-p-general", "local-p-renormalized"],
)
def test_golden_against_numpy(kwargs):
    rng = np.random.default_rng(1)
    b, t, s, f = 2, 4, 7, 5
    query = rng.normal(size=(b, t, f)).astype("float32")
    key = rng.normal(size=(b, s, f)).astype("float32")
    value = rng.normal(size=(b, s, 3)).astype("float32")
    layer = LuongAttention(**kwargs)
    layer(query, value, key=key)
    w = _set_weights(layer, rng)
    value_mask = np.ones((b, s), bool)
    value_mask[1, 5:] = False
    attention_mask = rng.random((b, t, s)) > 0.2
    attention_mask[0, 2] = False  # an empty row
    out, scores = layer(query, value, key=key, value_mask=value_mask,
                        attention_mask=attention_mask, return_attention_scores=True)
    mask = attention_mask & value_mask[:, None, :]
    ref_out, ref_w = _numpy_luong(query, key, value, w, kwargs["score"],
                                  kwargs.get("mode", "global"), kwargs.get("window"), mask,
                                  kwargs.get("renormalize", False))
    assert tuple(scores.shape) == (b, 1, t, s)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores)[:, 0], ref_w, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out)[0, 2], 0.0)


def test_local_m_window_is_bottom_right_aligned():
    """With T = 3, S = 6 and window 1, query t is centred on key t + 3."""
    x = np.random.default_rng(2).normal(size=(1, 3, 4)).astype("float32")
    ctx = np.random.default_rng(3).normal(size=(1, 6, 4)).astype("float32")
    _, scores = LuongAttention(mode="local-m", window=1)(x, ctx, return_attention_scores=True)
    support = keras.ops.convert_to_numpy(scores)[0, 0] > 0
    expected = np.zeros((3, 6), bool)
    for i, c in enumerate([3, 4, 5]):
        expected[i, max(c - 1, 0):c + 2] = True
    np.testing.assert_array_equal(support, expected)


@pytest.mark.parametrize("mode", ["local-m", "local-p"])
def test_step_decoding_with_query_start_matches_full_call(mode):
    rng = np.random.default_rng(4)
    query = rng.normal(size=(2, 5, 4)).astype("float32")
    ctx = rng.normal(size=(2, 8, 4)).astype("float32")
    layer = LuongAttention(score="general", mode=mode, window=2)
    full = keras.ops.convert_to_numpy(layer(query, ctx, use_causal_mask=True))
    steps = []
    for i in range(5):
        out = layer(query[:, i:i + 1], ctx, use_causal_mask=True, query_start=3 + i)
        steps.append(keras.ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


@pytest.mark.parametrize("mode", ["global", "local-m", "local-p"])
def test_dynamic_lengths_in_a_functional_model(mode):
    rng = np.random.default_rng(7)
    query = rng.normal(size=(2, 3, 4)).astype("float32")
    ctx = rng.normal(size=(2, 6, 4)).astype("float32")
    value_mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    layer = LuongAttention(score="general", mode=mode,
                           window=None if mode == "global" else 2)
    expected = layer(query, ctx, value_mask=value_mask, use_causal_mask=True)
    q_in, v_in = keras.Input((None, 4)), keras.Input((None, 4))
    m_in = keras.Input((None,), dtype="bool")
    model = keras.Model([q_in, v_in, m_in],
                        layer(q_in, v_in, value_mask=m_in, use_causal_mask=True))
    got = model.predict([query, ctx, value_mask], verbose=0)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), atol=1e-5)


def test_local_p_position_network_receives_gradients():
    """The predicted position is trained through the Gaussian (the only weights with dot)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 6)).astype("float32")
    ctx = rng.normal(size=(2, 9, 6)).astype("float32")
    layer = LuongAttention(mode="local-p", window=3)
    q_in, v_in = keras.Input((4, 6)), keras.Input((9, 6))
    model = keras.Model([q_in, v_in], layer(q_in, v_in))
    before = keras.ops.convert_to_numpy(layer.position_v)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit([x, ctx], rng.normal(size=(2, 4, 6)).astype("float32"), epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(layer.position_v)
    assert np.all(np.isfinite(after))
    assert not np.allclose(before, after), "no gradient reached the position network"


def test_dropout_only_in_training():
    x = np.random.default_rng(6).normal(size=(2, 5, 4)).astype("float32")
    layer = LuongAttention(score="general", dropout=0.5, seed=2)
    inference = keras.ops.convert_to_numpy(layer(x, x))
    assert_all_close(layer(x, x, training=False), inference, 1e-6, 1e-6, "inference")
    assert not np.allclose(keras.ops.convert_to_numpy(layer(x, x, training=True)), inference)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"score": "bilinear"}, ValueError, "score"),
        ({"mode": "local"}, ValueError, "mode"),
        ({"mode": "local-m"}, ValueError, "window"),
        ({"mode": "local-p"}, ValueError, "window"),
        ({"window": 2}, ValueError, "window"),
        ({"mode": "local-m", "window": 0}, ValueError, "window"),
        ({"mode": "local-m", "window": 1.5}, TypeError, "window"),
        ({"units": 4}, ValueError, "units"),
        ({"score": "concat", "units": 0}, ValueError, "units"),
        ({"renormalize": True}, ValueError, "renormalize"),
        ({"mode": "local-m", "window": 2, "renormalize": True}, ValueError, "renormalize"),
        ({"dropout": -0.1}, ValueError, "dropout"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        LuongAttention(**kwargs)


def test_dot_score_feature_mismatch_raises_in_build():
    with pytest.raises(ValueError, match="score='dot'"):
        LuongAttention()(np.zeros((2, 3, 4), "float32"), np.zeros((2, 5, 6), "float32"))


def test_negative_query_start_raises():
    x = np.zeros((2, 3, 4), "float32")
    with pytest.raises(ValueError, match="query_start"):
        LuongAttention(mode="local-m", window=1)(x, x, query_start=-1)
