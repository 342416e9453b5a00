import keras
import numpy as np
import pytest

from keras_attention import masks
from keras_attention.ops import scaled_dot_product_attention as sdpa
from tests.ops.backend_utils import output_and_grads, to_numpy


def _np(x):
    return keras.ops.convert_to_numpy(x)


def numpy_attention(q, k, v, mask=None, bias=None, causal=False, scale=None):
    """Reference in float64: (B, T, N, H) x (B, S, K, H) -> (B, T, N, V), weights."""
    n, kh = q.shape[2], k.shape[2]
    k, v = np.repeat(k, n // kh, axis=2), np.repeat(v, n // kh, axis=2)
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k).astype("float64") * scale
    if bias is not None:
        logits = logits + bias
    allowed = np.ones(logits.shape, bool)
    if mask is not None:
        allowed &= np.broadcast_to(mask, logits.shape)
    t, s = q.shape[1], k.shape[1]
    if causal:
        allowed &= np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
    logits = np.where(allowed, logits, -np.inf)
    m = np.max(logits, -1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.where(allowed, np.exp(logits - m), 0.0)
    denom = w.sum(-1, keepdims=True)
    w = np.divide(w, denom, out=np.zeros_like(w), where=denom > 0)
    return np.einsum("bnts,bsnv->btnv", w, v), w


def _qkv(b=2, t=5, s=7, n=4, k=2, h=8, v=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(b, t, n, h)).astype("float32"),
            rng.normal(size=(b, s, k, h)).astype("float32"),
            rng.normal(size=(b, s, k, v)).astype("float32"))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t,s", [(5, 7), (7, 5), (6, 6)])
@pytest.mark.parametrize("value_dim", [8, 6])
def test_matches_numpy_reference(kv_heads, causal, t, s, value_dim):
    q, k, v = _qkv(t=t, s=s, k=kv_heads, v=value_dim)
    rng = np.random.default_rng(1)
    mask = rng.random((2, 1, t, s)) > 0.3
    bias = rng.normal(size=(1, 4, t, s)).astype("float32")
    ref_out, ref_w = numpy_attention(q, k, v, mask, bias, causal)
    out, w = sdpa(q, k, v, mask=mask, bias=bias, causal=causal, return_weights=True)
    np.testing.assert_allclose(_np(out), ref_out, atol=1e-5)
    np.testing.assert_allclose(_np(w), ref_w, atol=1e-6)
    fast = sdpa(q, k, v, mask=mask, bias=bias, causal=causal)
    np.testing.assert_allclose(_np(fast), ref_out, atol=1e-5)


def test_causal_is_bottom_right_aligned():
    q, k, v = _qkv(t=2, s=5)
    _, w = sdpa(q, k, v, causal=True, return_weights=True)
    allowed = _np(w)[0, 0] > 0
    np.testing.assert_array_equal(allowed, _np(masks.causal_mask(2, 5)))
    np.testing.assert_array_equal(allowed[0], [True, True, True, True, False])


def test_fully_masked_rows_are_zero_and_gradients_finite():
    q, k, v = _qkv()
    mask = np.ones((2, 1, 5, 7), bool)
    mask[0, :, 2] = False
    mask[1] = False
    for return_weights in (True, False):
        result = sdpa(q, k, v, mask=mask, return_weights=return_weights)
        out = _np(result[0] if return_weights else result)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[0, 2], 0.0)
        np.testing.assert_array_equal(out[1], 0.0)
    # Causal with more queries than keys: the first rows see no key.
    q2, k2, v2 = _qkv(t=7, s=5)
    out = _np(sdpa(q2, k2, v2, causal=True))
    np.testing.assert_array_equal(out[:, :2], 0.0)
    # Gradients through fully masked rows stay finite, on both paths.
    for return_weights in (False, True):
        def fn(q, k, v):
            result = sdpa(q, k, v, mask=mask, return_weights=return_weights)
            return result[0] if return_weights else result

        out, grads = output_and_grads(fn, (q, k, v), np.ones((2, 5, 4, 6), "float32"))
        for g in grads:
            assert np.all(np.isfinite(to_numpy(g)))
        np.testing.assert_array_equal(to_numpy(grads[0])[1], 0.0)


def test_scale_and_mixed_precision_large_logits():
    q, k, v = _qkv(k=4, v=8)
    ref, _ = numpy_attention(q, k, v, scale=0.5)
    np.testing.assert_allclose(_np(sdpa(q, k, v, scale=0.5)), ref, atol=1e-5)
    for dtype in ("float16", "bfloat16"):
        big = [keras.ops.cast(x * 30.0, dtype) for x in (q, k, v)]
        out, w = sdpa(*big, return_weights=True)
        assert keras.backend.standardize_dtype(out.dtype) == dtype
        assert keras.backend.standardize_dtype(w.dtype) == "float32"
        assert np.all(np.isfinite(_np(keras.ops.cast(out, "float32"))))
        assert np.all(np.isfinite(_np(sdpa(*big))))


def test_dropout_seeded_training_only():
    q, k, v = _qkv()
    base = _np(sdpa(q, k, v))
    np.testing.assert_allclose(_np(sdpa(q, k, v, dropout_rate=0.5, training=False)), base,
                               atol=1e-6)
    a = _np(sdpa(q, k, v, dropout_rate=0.5, training=True, seed=3))
    b = _np(sdpa(q, k, v, dropout_rate=0.5, training=True, seed=3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, base)
    _, w = sdpa(q, k, v, dropout_rate=0.5, training=True, seed=3, return_weights=True)
    kept = _np(w)
    assert np.all((kept == 0) | (kept > 0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"query": np.zeros((2, 5, 8), "float32")}, "query"),
        ({"key": np.zeros((2, 7, 2, 4), "float32")}, "key"),
        ({"value": np.zeros((2, 6, 2, 6), "float32")}, "value"),
        ({"key": np.zeros((2, 7, 3, 8), "float32"),
          "value": np.zeros((2, 7, 3, 6), "float32")}, "multiple"),
        ({"query": np.zeros((3, 5, 4, 8), "float32")}, "batch"),
        ({"mask": np.ones((2, 1, 5, 6), bool)}, "mask"),
        ({"bias": np.ones((3, 4, 5, 7), "float32")}, "bias"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"query": np.zeros((2, 5, 4, 8), "int32")}, "query"),
    ],
)
def test_errors(kwargs, match):
    q, k, v = _qkv()
    args = {"query": q, "key": k, "value": v}
    args.update({name: kwargs.pop(name) for name in list(kwargs) if name in args})
    with pytest.raises((ValueError, TypeError), match=match):
        sdpa(args["query"], args["key"], args["value"], **kwargs)
