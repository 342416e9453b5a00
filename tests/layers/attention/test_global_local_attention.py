import keras
import numpy as np
import pytest

from keras_attention import masks
from keras_attention.layers import GlobalLocalAttention, MultiHeadAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test, run_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4, "window_size": 1, "num_global_tokens": 1},
        {"num_heads": 4, "key_dim": 4, "window_size": 1, "num_global_tokens": 2,
         "num_key_value_heads": 2, "value_dim": 6, "output_dim": 10, "block_size": 2},
        {"num_heads": 2, "key_dim": 4, "window_size": 2, "position_encoding": "rotary",
         "dropout": 0.2, "seed": 1},
    ],
    ids=["global1", "gqa-global2", "rotary-dropout-noglobal"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(GlobalLocalAttention, kwargs)


def test_global_mask_passes_layer_checks():
    x = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
    global_mask = np.zeros((2, 6), bool)
    global_mask[0, 3] = True
    global_mask[1, [1, 4]] = True
    pad = np.ones((2, 6), bool)
    pad[1, -1] = False
    run_layer_test(
        GlobalLocalAttention,
        {"num_heads": 2, "key_dim": 4, "window_size": 1, "max_global_tokens": 2},
        [x, x], {"global_mask": global_mask, "query_mask": pad, "value_mask": pad},
        expected_output_shape=(2, 6, 8),
    )


def _numpy_attention(x, weights, num_heads, mask):
    """Reference self-attention in NumPy under a boolean (B, T, T) mask."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btf,fnh->btnh", x, wq) + bq
    k = np.einsum("bsf,fnh->bsnh", x, wk) + bk
    v = np.einsum("bsf,fnv->bsnv", x, wv) + bv
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -np.inf)
    w = np.exp(logits - np.max(logits, -1, keepdims=True, initial=-1e30))
    w = np.where(mask[:, None], w, 0.0)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
    out = np.einsum("btnv,nvo->bto", np.einsum("bnts,bsnv->btnv", w, v), wo) + bo
    return np.where(mask.any(-1)[..., None], out, 0.0)


def test_golden_against_numpy():
    rng = np.random.default_rng(1)
    b, t, w = 2, 12, 1
    x = rng.normal(size=(b, t, 6)).astype("float32")
    layer = GlobalLocalAttention(2, 3, window_size=w, num_global_tokens=1,
                                 max_global_tokens=3, block_size=5)
    is_global = np.zeros((b, t), bool)
    is_global[0, 7] = True
    is_global[1, [4, 10]] = True
    layer(x, x, global_mask=is_global)
    weights = [rng.normal(size=v.shape).astype("float32") * 0.5 for v in layer.weights]
    layer.set_weights(weights)
    pad = np.ones((b, t), bool)
    pad[1, -1] = False
    g = is_global | (np.arange(t) < 1)
    band = np.abs(np.arange(t)[:, None] - np.arange(t)[None]) <= w
    pattern = band[None] | g[:, :, None] | g[:, None, :]
    mask = pattern & pad[:, :, None] & pad[:, None, :]
    out = layer(x, x, query_mask=pad, value_mask=pad, global_mask=is_global)
    expected = _numpy_attention(x, weights, 2, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-4)


def _pair(kwargs, x, ctx):
    """The layer and a MultiHeadAttention with the same weights."""
    layer = GlobalLocalAttention(4, 4, num_key_value_heads=2, block_size=3, **kwargs)
    layer(x, ctx)
    ref = MultiHeadAttention(4, 4, num_key_value_heads=2, implementation="full")
    ref(x, ctx)
    ref.set_weights(layer.get_weights())
    return layer, ref


def _check_against_dense(layer, ref, x, pattern, causal, global_mask=None, full=None):
    t = x.shape[1]
    pad = np.ones((2, t), bool)
    pad[1, -2:] = False
    kv_pad = pad.copy()
    kv_pad[0, 5] = False  # a padded key inside the sequence
    kw = {"query_mask": pad, "value_mask": kv_pad, "use_causal_mask": causal}
    dense_mask = np.broadcast_to(pattern, (2, t, t))
    if full is not None:
        dense_mask = dense_mask & full
    expected = ref(x, x, attention_mask=dense_mask, **kw)
    out = layer(x, x, attention_mask=full, global_mask=global_mask, **kw)
    assert_all_close(out, expected, 1e-5, 1e-5, "efficient path")
    out, scores = layer(x, x, attention_mask=full, global_mask=global_mask,
                        return_attention_scores=True, **kw)
    ref_out, ref_scores = ref(x, x, attention_mask=dense_mask, return_attention_scores=True,
                              **kw)
    assert_all_close(out, ref_out, 1e-5, 1e-5, "dense path")
    assert_all_close(scores, ref_scores, 1e-6, 1e-6, "scores")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_full_mask", [False, True])
def test_leading_global_tokens_match_dense(causal, with_full_mask):
    rng = np.random.default_rng(2)
    t = 13
    x = rng.normal(size=(2, t, 8)).astype("float32")
    full = rng.random((2, t, t)) > 0.3 if with_full_mask else None
    layer, ref = _pair({"window_size": 2, "num_global_tokens": 2}, x, x)
    pattern = np.asarray(masks.global_local_mask(t, 2, 2, causal=causal))
    _check_against_dense(layer, ref, x, pattern, causal, full=full)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_full_mask", [False, True])
def test_global_mask_matches_dense(causal, with_full_mask):
    rng = np.random.default_rng(3)
    t = 13
    x = rng.normal(size=(2, t, 8)).astype("float32")
    full = rng.random((2, t, t)) > 0.3 if with_full_mask else None
    global_mask = np.zeros((2, t), bool)
    global_mask[0, [4, 9]] = True
    global_mask[1, [6, 7, 12]] = True  # a different count per sequence
    layer, ref = _pair({"window_size": 1, "num_global_tokens": 1, "max_global_tokens": 4},
                       x, x)
    pattern = np.asarray(
        masks.global_local_mask(t, 1, global_mask | (np.arange(t) < 1), causal=causal)
    )
    _check_against_dense(layer, ref, x, pattern, causal, global_mask, full)


def test_global_mask_beyond_max_global_tokens_keeps_the_first():
    rng = np.random.default_rng(4)
    t = 10
    x = rng.normal(size=(2, t, 8)).astype("float32")
    global_mask = np.zeros((2, t), bool)
    global_mask[0, [2, 5, 8]] = True
    global_mask[1, 3] = True
    kept = global_mask.copy()
    kept[0, 8] = False  # max_global_tokens=2: the third one is local
    layer, ref = _pair({"window_size": 1, "max_global_tokens": 2}, x, x)
    pattern = np.asarray(masks.global_local_mask(t, 1, kept))
    _check_against_dense(layer, ref, x, pattern, False, global_mask)


def test_global_mask_without_bound_falls_back_to_dense():
    rng = np.random.default_rng(5)
    t = 9
    x = rng.normal(size=(2, t, 8)).astype("float32")
    global_mask = rng.random((2, t)) > 0.6
    layer, ref = _pair({"window_size": 1}, x, x)
    pattern = np.asarray(masks.global_local_mask(t, 1, global_mask))
    _check_against_dense(layer, ref, x, pattern, False, global_mask)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(7, 10), (10, 7)], ids=["T<S", "T>S"])
def test_cross_attention_matches_dense(causal, lengths):
    rng = np.random.default_rng(6)
    t, s = lengths
    x = rng.normal(size=(2, t, 8)).astype("float32")
    ctx = rng.normal(size=(2, s, 5)).astype("float32")
    layer, ref = _pair({"window_size": 1, "num_global_tokens": 2}, x, ctx)
    pattern = np.asarray(masks.sliding_window_mask(t, 1, s, causal=causal))
    pattern = pattern | (np.arange(t) < 2)[:, None] | (np.arange(s) < 2)[None]
    if causal:
        pattern = pattern & np.asarray(masks.causal_mask(t, s))
    value_mask = np.ones((2, s), bool)
    value_mask[1, 0] = False  # a padded global key
    kw = {"value_mask": value_mask, "use_causal_mask": causal}
    assert_all_close(layer(x, ctx, **kw),
                     ref(x, ctx, attention_mask=np.broadcast_to(pattern, (2, t, s)), **kw),
                     1e-5, 1e-5, "cross-attention")


def test_without_global_tokens_equals_local_attention():
    from keras_attention.layers import LocalAttention

    x = np.random.default_rng(7).normal(size=(2, 9, 8)).astype("float32")
    layer = GlobalLocalAttention(2, 4, window_size=2)
    local = LocalAttention(2, 4, window_size=2)
    layer(x, x)
    local(x, x)
    local.set_weights(layer.get_weights())
    for causal in (False, True):
        assert_all_close(layer(x, x, use_causal_mask=causal),
                         local(x, x, use_causal_mask=causal), 1e-5, 1e-5, str(causal))


def test_functional_model_with_unknown_length():
    rng = np.random.default_rng(8)
    layer = GlobalLocalAttention(2, 4, window_size=1, num_global_tokens=1,
                                 max_global_tokens=3, block_size=4)
    x = keras.Input((None, 8))
    global_mask = keras.Input((None,), dtype="bool")
    model = keras.Model([x, global_mask], layer(x, x, global_mask=global_mask))
    for t in (11, 6):
        data = rng.normal(size=(2, t, 8)).astype("float32")
        is_global = rng.random((2, t)) > 0.7
        assert_all_close(model([data, is_global]),
                         layer(data, data, global_mask=is_global), 1e-6, 1e-6, f"length {t}")


def test_mask_function():
    pattern = np.asarray(masks.global_local_mask(5, 0, 1))
    expected = np.eye(5, dtype=bool)
    expected[0, :] = expected[:, 0] = True
    np.testing.assert_array_equal(pattern, expected)
    batched = np.asarray(masks.global_local_mask(5, 0, np.array([[1, 0, 0, 0, 0],
                                                                 [0, 0, 0, 0, 1]], bool)))
    assert batched.shape == (2, 5, 5)
    np.testing.assert_array_equal(batched[0], expected)
    causal = np.asarray(masks.global_local_mask(5, 0, 1, causal=True))
    np.testing.assert_array_equal(causal, expected & np.tril(np.ones((5, 5), bool)))
    with pytest.raises(ValueError, match="global_tokens"):
        masks.global_local_mask(5, 1, -1)
    with pytest.raises(ValueError, match="global_tokens"):
        masks.global_local_mask(5, 1, np.ones((2, 4), bool))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"window_size": -1}, ValueError, "window_size"),
        ({"window_size": 1, "num_global_tokens": -1}, ValueError, "num_global_tokens"),
        ({"window_size": 1, "max_global_tokens": 0}, ValueError, "max_global_tokens"),
        ({"window_size": 1, "num_global_tokens": 3, "max_global_tokens": 2}, ValueError,
         "max_global_tokens"),
        ({"window_size": 1, "block_size": 0}, ValueError, "block_size"),
        ({"window_size": 1, "position_encoding": "alibi"}, ValueError, "position_encoding"),
        ({"window_size": 1, "implementation": "chunked"}, TypeError, "implementation"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    kwargs = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises(error, match=match):
        GlobalLocalAttention(**kwargs)


def test_call_errors():
    x = np.zeros((2, 4, 8), "float32")
    layer = GlobalLocalAttention(2, 4, window_size=1, max_global_tokens=2)
    layer(x, x)
    with pytest.raises(ValueError, match="global_mask"):
        layer(x, x, global_mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="global_mask"):
        layer(x, np.zeros((2, 6, 8), "float32"), global_mask=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="cache"):
        layer(x, x, cache=np.zeros((2, 2, 4, 2, 4), "float32"), cache_index=0)
