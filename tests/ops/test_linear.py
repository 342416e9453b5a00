import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.ops import (
    favor_random_features,
    linear_attention,
    scaled_dot_product_attention,
)
from tests.ops.backend_utils import (
    BACKEND,
    jit,
    largest_intermediate,
    quick,
    quick_output_and_grads,
    to_numpy,
)


def _inputs(t, s, n=4, k=2, h=8, v=5, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, t, n, h)).astype("float32")
    key = rng.normal(size=(2, s, k, h)).astype("float32")
    value = rng.normal(size=(2, s, k, v)).astype("float32")
    return q, key, value, rng


def _numpy_linear(q, k, v, feature_map, causal, key_mask=None, eps=0.0):
    """The formula written out with an explicit (T, S) kernel matrix, in float64."""
    q, k, v = (x.astype("float64") for x in (q, k, v))
    g = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    if feature_map == "elu":
        phi_q, phi_k = (np.where(x > 0, x + 1.0, np.exp(x)) for x in (q, k))
    else:
        phi_q, phi_k = np.maximum(q, 0.0), np.maximum(k, 0.0)
    a = np.einsum("btnm,bsnm->bnts", phi_q, phi_k)
    t, s = q.shape[1], k.shape[1]
    if causal:
        a = a * (np.arange(s)[None] <= np.arange(t)[:, None] + s - t)
    if key_mask is not None:
        a = a * key_mask[:, None, None, :]
    num = np.einsum("bnts,bsnv->btnv", a, v)
    den = a.sum(-1).transpose(0, 2, 1)[..., None] + eps
    return num / np.where(den > 0, den, 1.0)


CASES = {
    "t_eq_s": dict(t=13, s=13, chunk=4),
    "t_lt_s": dict(t=9, s=13, chunk=3),
    "t_gt_s": dict(t=13, s=9, chunk=5),
    "one_chunk": dict(t=6, s=6, chunk=64),
}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("name", list(CASES))
def test_golden_against_numpy(name, feature_map, causal):
    case = CASES[name]
    q, key, value, rng = _inputs(case["t"], case["s"])
    key_mask = rng.random((2, case["s"])) > 0.3
    for mask in (None, key_mask):
        out = linear_attention(q, key, value, feature_map=feature_map, causal=causal,
                               mask=mask, chunk_size=case["chunk"])
        expected = _numpy_linear(q, key, value, feature_map, causal, mask)
        np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5, rtol=1e-5)


def test_favor_error_shrinks_with_more_features():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(2, 16, 2, 16)).astype("float32") * 0.5
    k = rng.normal(size=(2, 16, 2, 16)).astype("float32") * 0.5
    v = rng.normal(size=(2, 16, 2, 16)).astype("float32")
    for causal in (False, True):
        exact = to_numpy(scaled_dot_product_attention(q, k, v, causal=causal))
        favor = quick(lambda q, k, v, w, causal=causal: linear_attention(
            q, k, v, feature_map="favor+", causal=causal, random_features=w))
        errors = {}
        for m in (16, 256):
            approx = [to_numpy(favor(q, k, v, favor_random_features(16, m, seed)))
                      for seed in range(2)]
            errors[m] = np.mean([np.abs(a - exact).mean() for a in approx])
        assert errors[256] < 0.6 * errors[16], (causal, errors)
        assert errors[256] < 0.05, (causal, errors)


def test_favor_random_features():
    w = to_numpy(favor_random_features(8, 20, seed=1))
    assert w.shape == (8, 20)
    rows = w.T  # (M, H)
    for start in (0, 8):  # full blocks of H rows are orthogonal
        gram = rows[start:start + 8] @ rows[start:start + 8].T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)
    assert np.all(np.linalg.norm(rows, axis=1) > 0.0)
    np.testing.assert_allclose(to_numpy(favor_random_features(8, 20, seed=1)), w)
    assert not np.allclose(to_numpy(favor_random_features(8, 20, seed=2)), w)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map", ["elu", "relu", "favor+"])
def test_padded_keys_have_no_influence(feature_map, causal):
    q, key, value, rng = _inputs(8, 8)
    key_mask = np.ones((2, 8), bool)
    key_mask[0, 2] = key_mask[1, -3:] = False
    kwargs = dict(feature_map=feature_map, causal=causal, chunk_size=3)
    if feature_map == "favor+":
        kwargs["random_features"] = favor_random_features(8, 32, seed=0)
    base = to_numpy(linear_attention(q, key, value, mask=key_mask[:, None, None, :],
                                      **kwargs))
    key2, value2 = key.copy(), value.copy()
    key2[~key_mask] = 50.0
    value2[~key_mask] = -7.0
    run = quick(lambda q, k, v: linear_attention(q, k, v, mask=key_mask, **kwargs))
    changed = to_numpy(run(q, key2, value2))
    np.testing.assert_allclose(changed, base, atol=1e-5)
    assert np.all(np.isfinite(base))


@pytest.mark.parametrize("feature_map", ["elu", "favor+"])
def test_fully_masked_keys_give_zeros_and_finite_gradients(feature_map):
    q, key, value, rng = _inputs(6, 6)
    key_mask = np.ones((2, 6), bool)
    key_mask[0] = False
    cotangent = rng.normal(size=(2, 6, 4, 5)).astype("float32")
    features = favor_random_features(8, 16, seed=0) if feature_map == "favor+" else None

    def fn(q, k, v):
        return linear_attention(q, k, v, feature_map=feature_map, causal=True,
                                mask=key_mask, random_features=features, chunk_size=4)

    out, grads = quick_output_and_grads(fn, (q, key, value), cotangent)
    assert np.all(out[0] == 0.0) and np.all(np.isfinite(out))
    for g in grads:
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("feature_map", ["elu", "favor+"])
def test_matches_under_xla(feature_map):
    q, key, value, _ = _inputs(11, 11)
    features = favor_random_features(8, 16, seed=0) if feature_map == "favor+" else None

    def fn(q, k, v):
        return linear_attention(q, k, v, feature_map=feature_map, causal=True,
                                random_features=features, chunk_size=4)

    np.testing.assert_allclose(to_numpy(jit(fn)(q, key, value)), to_numpy(fn(q, key, value)),
                               atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="inspects the traced jaxpr")
def test_causal_memory_is_linear_in_length():
    q, key, value, rng = _inputs(128, 128, n=2, k=1, h=4, v=4)
    cotangent = rng.normal(size=q.shape[:3] + (4,)).astype("float32")

    def fn(q, k, v):
        return linear_attention(q, k, v, causal=True, chunk_size=8)

    largest = largest_intermediate(fn, (q, key, value), cotangent)
    assert largest <= 2 * 2 * 128 * 8  # (B, N, T, chunk), far below (B, N, T, S)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_output_dtype(dtype):
    q, key, value, _ = _inputs(9, 9)
    out = linear_attention(ops.cast(q, dtype), ops.cast(key, dtype), ops.cast(value, dtype),
                           causal=True, chunk_size=4)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    expected = _numpy_linear(q, key, value, "elu", True)
    np.testing.assert_allclose(to_numpy(out), expected, atol=5e-2)


def test_errors():
    q, key, value, _ = _inputs(6, 6)
    with pytest.raises(ValueError, match="feature_map='softmax'"):
        linear_attention(q, key, value, feature_map="softmax")
    with pytest.raises(ValueError, match="feature_map='elu'"):
        linear_attention(q, key, value, num_random_features=8)
    with pytest.raises(ValueError, match="random_features"):
        linear_attention(q, key, value, feature_map="favor+", random_features=np.ones((4, 8)))
    with pytest.raises(ValueError, match="num_random_features=16"):
        linear_attention(q, key, value, feature_map="favor+", num_random_features=16,
                         random_features=np.ones((8, 8)))
    with pytest.raises(ValueError, match="chunk_size=0"):
        linear_attention(q, key, value, chunk_size=0)
    with pytest.raises(ValueError, match="eps=-1"):
        linear_attention(q, key, value, eps=-1.0)
    with pytest.raises(ValueError, match="mask"):
        linear_attention(q, key, value, mask=np.ones((2, 6, 6), bool))
    with pytest.raises(ValueError, match="query"):
        linear_attention(q[0], key, value)
    with pytest.raises(ValueError, match="num_random_features=0"):
        favor_random_features(8, 0)
    with pytest.raises(TypeError, match="seed"):
        favor_random_features(8, 4, seed="abc")
