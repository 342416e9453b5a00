import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.ops import chunked_attention, scaled_dot_product_attention
from tests.ops.backend_utils import (
    BACKEND,
    jit,
    jit_output_and_grads,
    largest_intermediate,
    output_and_grads,
    quick_output_and_grads,
    to_numpy,
)


def _inputs(t, s, n, k, h=8, v=6, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, t, n, h)).astype("float32")
    key = rng.normal(size=(2, s, k, h)).astype("float32")
    value = rng.normal(size=(2, s, k, v)).astype("float32")
    cotangent = rng.normal(size=(2, t, n, v)).astype("float32")
    return q, key, value, cotangent, rng


def _reference(q, k, v, bias=None, **kwargs):
    # The explicit einsum path of scaled_dot_product_attention (any value head dim).
    return scaled_dot_product_attention(q, k, v, bias=bias, return_weights=True, **kwargs)[0]


def _numpy_attention(q, k, v, mask, causal):
    """Plain NumPy softmax attention (float64), zeros on rows with no allowed key."""
    g = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    t, s = q.shape[1], k.shape[1]
    allowed = np.broadcast_to(mask, logits.shape) if mask is not None else np.ones(
        logits.shape, bool)
    if causal:
        allowed = allowed & (np.arange(s)[None] <= np.arange(t)[:, None] + s - t)
    logits = np.where(allowed, logits, -np.inf)
    peak = np.max(np.where(allowed, logits, -1e300), axis=-1, keepdims=True)
    w = np.where(allowed, np.exp(logits - peak), 0.0)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bnts,bsnv->btnv", w, v)


# Chunk sizes vary per case: exact multiples, ragged last chunks, a single block.
CASES = {
    "mha": dict(t=7, s=7, n=2, k=2, causal=False, chunks=(3, 4)),
    "causal_gqa": dict(t=8, s=8, n=4, k=2, causal=True, chunks=(4, 2)),
    "causal_mqa_t_lt_s": dict(t=5, s=11, n=4, k=1, causal=True, chunks=(2, 5)),
    "causal_t_gt_s": dict(t=11, s=5, n=2, k=1, causal=True, chunks=(3, 2)),
    "key_padding": dict(t=9, s=13, n=2, k=2, causal=False, mask="keys", chunks=(4, 3)),
    "full_mask_and_bias": dict(t=9, s=13, n=4, k=2, causal=True, mask="full", bias="full",
                               chunks=(3, 4)),
    "key_bias_one_block": dict(t=9, s=13, n=4, k=2, causal=False, bias="keys",
                               chunks=(512, 512)),
    "head_bias_rank3": dict(t=9, s=13, n=4, k=2, causal=True, bias="heads", chunks=(4, 5)),
    "masked_rows": dict(t=9, s=13, n=4, k=2, causal=False, mask="rows", chunks=(2, 3)),
}


def _mask_and_bias(case, t, s, n, rng):
    mask = bias = None
    if case.get("mask") == "keys":
        mask = rng.random((2, 1, 1, s)) > 0.3
    elif case.get("mask") == "full":
        mask = rng.random((2, 1, t, s)) > 0.3
    elif case.get("mask") == "rows":
        mask = rng.random((2, n, t, s)) > 0.3
        mask[:, :, 2] = False  # fully masked query rows
    if case.get("bias") == "full":
        bias = rng.normal(size=(1, n, t, s)).astype("float32")
    elif case.get("bias") == "keys":
        bias = rng.normal(size=(2, 1, 1, s)).astype("float32")
    elif case.get("bias") == "heads":
        bias = rng.normal(size=(n, 1, 1)).astype("float32")
    return mask, bias


@pytest.mark.parametrize("name", list(CASES))
def test_output_and_gradients_equal_full_attention(name):
    case = CASES[name]
    chunks = case["chunks"]
    t, s, n, k = case["t"], case["s"], case["n"], case["k"]
    q, key, value, cotangent, rng = _inputs(t, s, n, k)
    mask, bias = _mask_and_bias(case, t, s, n, rng)
    args = (q, key, value) + ((bias,) if bias is not None else ())

    def chunked(*a):
        return chunked_attention(a[0], a[1], a[2], bias=a[3] if len(a) > 3 else None,
                                 mask=mask, causal=case["causal"],
                                 query_chunk_size=chunks[0], key_chunk_size=chunks[1])

    def full(*a):
        return _reference(a[0], a[1], a[2], bias=a[3] if len(a) > 3 else None,
                          mask=mask, causal=case["causal"])

    out, grads = quick_output_and_grads(chunked, args, cotangent)
    ref_out, ref_grads = quick_output_and_grads(full, args, cotangent)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for got, want, what in zip(grads, ref_grads, ("query", "key", "value", "bias")):
        assert got.shape == want.shape, what
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=what)


@pytest.mark.parametrize("causal", [False, True])
def test_golden_against_numpy(causal):
    q, key, value, _, rng = _inputs(6, 10, 4, 2)
    mask = rng.random((2, 1, 1, 10)) > 0.3
    out = chunked_attention(q, key, value, mask=mask, causal=causal, query_chunk_size=4,
                            key_chunk_size=3)
    expected = _numpy_attention(q.astype("float64"), key.astype("float64"),
                                value.astype("float64"), mask, causal)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    q, key, value, cotangent, _ = _inputs(6, 8, 2, 2)
    mask = np.ones((2, 1, 6, 8), bool)
    mask[0, :, 1] = False  # one query row sees nothing
    mask[1] = False  # a whole sequence sees nothing

    def fn(q, k, v):
        return chunked_attention(q, k, v, mask=mask, query_chunk_size=4, key_chunk_size=3)

    out, grads = quick_output_and_grads(fn, (q, key, value), cotangent)
    assert np.all(out[0, 1] == 0.0) and np.all(out[1] == 0.0)
    for g in grads:
        assert np.all(np.isfinite(g))
    assert np.all(grads[0][1] == 0.0)  # no gradient into fully masked queries
    # A causal query before every key (T > S) is also a row of zeros.
    out = chunked_attention(q[:, :6], key[:, :3], value[:, :3], causal=True,
                            query_chunk_size=2, key_chunk_size=2)
    assert np.all(to_numpy(out)[:, :3] == 0.0)


def test_causal_blocks_above_the_diagonal_are_skipped():
    # NaN in the last key's value: a block that is computed and then masked would
    # spread it (0 * NaN); skipped blocks cannot. Query chunks 0-2 of 4 end before
    # the last key chunk, so their rows must be exact and finite.
    q, key, value, _, _ = _inputs(16, 16, 2, 2)
    poisoned = value.copy()
    poisoned[:, -1] = np.nan
    out = to_numpy(chunked_attention(q, key, poisoned, causal=True, query_chunk_size=4,
                                     key_chunk_size=4))
    expected = to_numpy(_reference(q, key, value, causal=True))
    np.testing.assert_allclose(out[:, :12], expected[:, :12], atol=1e-5)


def test_matches_under_xla():
    q, key, value, cotangent, rng = _inputs(9, 13, 4, 2)
    mask = rng.random((2, 1, 1, 13)) > 0.3
    bias = rng.normal(size=(1, 4, 9, 13)).astype("float32")

    def fn(q, k, v, b):
        return chunked_attention(q, k, v, mask=mask, bias=b, causal=True,
                                 query_chunk_size=4, key_chunk_size=3)

    eager_out, eager_grads = output_and_grads(fn, (q, key, value, bias), cotangent)
    out, grads = jit_output_and_grads(fn, (q, key, value, bias), cotangent)
    np.testing.assert_allclose(out, eager_out, atol=1e-5)
    for got, want in zip(grads, eager_grads):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(jit(fn)(q, key, value, bias)), eager_out, atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="inspects the traced jaxpr")
def test_no_quadratic_intermediate_in_forward_or_backward():
    q, key, value, cotangent, rng = _inputs(64, 64, 2, 1, h=4, v=4)
    mask = rng.random((2, 1, 1, 64)) > 0.2

    def fn(q, k, v):
        return chunked_attention(q, k, v, mask=mask, causal=True, query_chunk_size=8,
                                 key_chunk_size=8)

    quadratic = 2 * 2 * 64 * 64  # (B, N, T, S)
    assert largest_intermediate(fn, (q, key, value), cotangent) <= q.size < quadratic


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_output_dtype_and_values(dtype):
    q, key, value, _, _ = _inputs(9, 9, 2, 1)
    out = chunked_attention(ops.cast(q, dtype), ops.cast(key, dtype), ops.cast(value, dtype),
                            causal=True, query_chunk_size=4, key_chunk_size=4)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    expected = to_numpy(_reference(q, key, value, causal=True))
    np.testing.assert_allclose(to_numpy(out), expected, atol=3e-2)


def test_errors():
    q, key, value, _, _ = _inputs(4, 4, 2, 2)
    with pytest.raises(ValueError, match="query"):
        chunked_attention(q[0], key, value)
    with pytest.raises(ValueError, match="multiple of the number of key/value"):
        chunked_attention(np.concatenate([q, q[:, :, :1]], axis=2), key, value)
    with pytest.raises(ValueError, match="value"):
        chunked_attention(q, key, value[:, :3])
    with pytest.raises(TypeError, match="query"):
        chunked_attention(q.astype("int32"), key, value)
    with pytest.raises(ValueError, match="query_chunk_size=0"):
        chunked_attention(q, key, value, query_chunk_size=0)
    with pytest.raises(TypeError, match="key_chunk_size"):
        chunked_attention(q, key, value, key_chunk_size=2.5)
    with pytest.raises(ValueError, match="mask"):
        chunked_attention(q, key, value, mask=np.ones((2, 1, 4, 3), bool))
    with pytest.raises(ValueError, match="bias"):
        chunked_attention(q, key, value, bias=np.ones((3, 1, 1, 4), "float32"))
