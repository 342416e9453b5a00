import keras
import numpy as np
import pytest

from keras_attention.layers import NystromAttention
from keras_attention.testing import run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4, "num_landmarks": 3},
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "num_landmarks": 4,
         "output_dim": 10},
    ],
    ids=["default", "gqa-uneven-segments"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(NystromAttention, kwargs, causal=False, scores=False,
                             attention_mask=False)


def _softmax(logits, valid):
    logits = np.where(valid, logits, -np.inf)
    m = np.max(logits, -1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(valid, np.exp(logits - m), 0.0)
    s = e.sum(-1, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def _landmarks(x, m, valid):
    """Segment means of x (B, L, N, D): position l in segment floor(l * m / L)."""
    b, length = x.shape[:2]
    seg = np.arange(length) * m // length
    out = np.zeros((b, m) + x.shape[2:])
    ok = np.zeros((b, m), bool)
    for i in range(b):
        for j in range(m):
            rows = (seg == j) & valid[i]
            if rows.any():
                out[i, j] = x[i, rows].mean(0)
                ok[i, j] = True
    return out, ok


def _numpy_nystrom(q, k, v, m, iterations, query_valid, key_valid):
    """Reference Nystrom attention on per-head arrays (B, L, N, D), N = K."""
    q = q / np.sqrt(q.shape[-1])
    ql, ql_ok = _landmarks(q, m, query_valid)
    kl, kl_ok = _landmarks(k, m, key_valid)
    f = _softmax(np.einsum("btnh,bmnh->bntm", q, kl), kl_ok[:, None, None])
    a = _softmax(np.einsum("blnh,bmnh->bnlm", ql, kl), kl_ok[:, None, None])
    a = a * ql_ok[:, None, :, None]
    bk = _softmax(np.einsum("blnh,bsnh->bnls", ql, k), key_valid[:, None, None])
    z = np.swapaxes(a, -1, -2) / (
        np.abs(a).sum(-2).max(-1) * np.abs(a).sum(-1).max(-1)
    )[..., None, None]
    eye = np.eye(m)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return np.einsum("bntm,bnmv->btnv", f, z @ np.einsum("bnls,bsnv->bnlv", bk, v))


def _identity_layer(num_heads, key_dim, **kwargs):
    """A layer whose projections are identities: per-head q, k, v are the inputs."""
    f = num_heads * key_dim
    layer = NystromAttention(num_heads, key_dim, **kwargs)
    layer.build((None, None, f), (None, None, f), (None, None, f))
    eye = np.eye(f, dtype="float32")
    for w in layer.weights:
        w.assign(eye.reshape(w.shape) if "kernel" in w.path else np.zeros(w.shape))
    return layer


@pytest.mark.parametrize("num_landmarks", [3, 4, 7], ids=["3", "uneven-4", "empty-7"])
def test_golden_against_numpy_with_padding(num_landmarks):
    """Includes uneven segments (4) and more landmarks than positions (7 > T)."""
    rng = np.random.default_rng(1)
    b, t, s, n, h = 2, 6, 7, 2, 4
    q = rng.normal(size=(b, t, n * h)).astype("float32")
    k = rng.normal(size=(b, s, n * h)).astype("float32")
    v = rng.normal(size=(b, s, n * h)).astype("float32")
    query_mask = np.ones((b, t), bool)
    query_mask[1, -2:] = False
    key_mask = np.ones((b, s), bool)
    key_mask[0, -3:] = False
    layer = _identity_layer(n, h, num_landmarks=num_landmarks)
    out = layer(q, v, key=k, query_mask=query_mask, value_mask=key_mask)
    ref = _numpy_nystrom(
        q.reshape(b, t, n, h), k.reshape(b, s, n, h), v.reshape(b, s, n, h),
        num_landmarks, 6, query_mask, key_mask,
    ).reshape(b, t, n * h) * query_mask[..., None]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref, atol=1e-4)


def test_error_against_exact_attention_shrinks_with_landmarks():
    """Documented error against exact attention (see the class docstring)."""
    rng = np.random.default_rng(0)
    b, t, n, h = 2, 16, 2, 8
    q, k, v = (rng.normal(size=(b, t, n * h)).astype("float32") for _ in range(3))
    qh, kh, vh = (x.reshape(b, t, n, h) for x in (q, k, v))
    valid = np.ones((b, t), bool)
    logits = np.einsum("btnh,bsnh->bnts", qh, kh) / np.sqrt(h)
    exact = np.einsum("bnts,bsnv->btnv", _softmax(logits, valid[:, None, None]), vh)
    exact = exact.reshape(b, t, n * h)
    errors = []
    for m in (2, 4, 8, 16):
        out = _predict(_identity_layer(n, h, num_landmarks=m), q, v, k)
        errors.append(float(np.abs(out - exact).mean()))
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[3] < 0.01, errors  # one landmark per position: exact up to the pinv
    more = _predict(_identity_layer(n, h, num_landmarks=16, pinv_iterations=12), q, v, k)
    assert np.abs(more - exact).mean() < 1e-4


def _predict(layer, query, value, key):
    """Run `layer` as one compiled program (much faster than eager on JAX)."""
    sym = [keras.Input(x.shape[1:]) for x in (query, value, key)]
    model = keras.Model(sym, layer(sym[0], sym[1], key=sym[2]))
    return model.predict([query, value, key], batch_size=len(query), verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_landmarks": 0}, "num_landmarks"),
        ({"num_landmarks": 4, "pinv_iterations": 0}, "pinv_iterations"),
        ({"num_landmarks": 4, "position_encoding": "t5"}, "position_encoding"),
        ({"num_landmarks": 4, "dropout": 0.1}, "dropout"),
        ({"num_landmarks": 4, "num_key_value_heads": 3}, "num_key_value_heads"),
    ],
)
def test_constructor_errors(kwargs, match):
    kwargs = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        NystromAttention(**kwargs)


def test_call_errors():
    x = np.zeros((2, 6, 8), "float32")
    layer = NystromAttention(2, 4, num_landmarks=3)
    with pytest.raises(ValueError, match="use_causal_mask"):
        layer(x, x, use_causal_mask=True)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 6, 6), bool))
    with pytest.raises(ValueError, match="return_attention_scores"):
        layer(x, x, return_attention_scores=True)
    with pytest.raises(ValueError, match="query_mask"):
        layer(x, x, query_mask=np.ones((2, 5), bool))


def test_rotary_position_encoding():
    x = np.random.default_rng(3).normal(size=(2, 6, 8)).astype("float32")
    layer = NystromAttention(2, 4, num_landmarks=3, position_encoding="rotary")
    out = keras.ops.convert_to_numpy(layer(x, x))
    assert out.shape == (2, 6, 8) and np.all(np.isfinite(out))
