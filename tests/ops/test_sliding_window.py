import keras
import numpy as np
import pytest
from keras import ops

from keras_attention import masks
from keras_attention.ops import scaled_dot_product_attention, sliding_window_attention
from keras_attention.ops import sliding_window as sliding_window_module
from tests.ops.backend_utils import (
    BACKEND,
    jit,
    jit_output_and_grads,
    largest_intermediate,
    output_and_grads,
    quick_output_and_grads,
    to_numpy,
)


def _inputs(t, s, n=4, k=2, h=8, v=6, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, t, n, h)).astype("float32")
    key = rng.normal(size=(2, s, k, h)).astype("float32")
    value = rng.normal(size=(2, s, k, v)).astype("float32")
    cotangent = rng.normal(size=(2, t, n, v)).astype("float32")
    return q, key, value, cotangent, rng


def _reference(q, k, v, window_size, causal, key_mask=None):
    band = masks.sliding_window_mask(q.shape[1], window_size, k.shape[1], causal=causal)
    mask = band[None, None]
    if key_mask is not None:
        mask = ops.logical_and(mask, ops.reshape(key_mask, (key_mask.shape[0], 1, 1, -1)))
    return scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)[0]


@pytest.fixture(params=["loop", "one_step"])
def path(request, monkeypatch):
    """Run a test through both computations: a loop over query blocks (windows of
    `_LOOP_MIN_WINDOW` or more) and all blocks in one step (smaller windows)."""
    threshold = 0 if request.param == "loop" else 10**9
    monkeypatch.setattr(sliding_window_module, "_LOOP_MIN_WINDOW", threshold)
    return request.param


CASES = {
    "bidirectional": dict(t=13, s=13, window=3, causal=False, block=4),
    "causal": dict(t=13, s=13, window=3, causal=True, block=4),
    "causal_default_block": dict(t=16, s=16, window=5, causal=True, block=None),
    "block_smaller_than_window": dict(t=13, s=13, window=5, causal=False, block=2),
    "window_zero": dict(t=7, s=7, window=0, causal=False, block=3),
    "window_beyond_length": dict(t=9, s=9, window=20, causal=True, block=4),
    "t_lt_s_key_padding": dict(t=9, s=13, window=3, causal=False, block=4, mask=(2, 13)),
    "t_gt_s_causal_mask4d": dict(t=13, s=9, window=2, causal=True, block=5, mask=(2, 1, 1, 9)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_output_and_gradients_equal_masked_full_attention(name, path):
    case = CASES[name]
    q, key, value, cotangent, rng = _inputs(case["t"], case["s"])
    key_mask = rng.random(case["mask"]) > 0.3 if "mask" in case else None
    kwargs = dict(window_size=case["window"], causal=case["causal"])

    def band(q, k, v):
        return sliding_window_attention(q, k, v, mask=key_mask, block_size=case["block"],
                                        **kwargs)

    def full(q, k, v):
        flat = None if key_mask is None else np.reshape(key_mask, (2, -1))
        return _reference(q, k, v, key_mask=flat, **kwargs)

    out, grads = quick_output_and_grads(band, (q, key, value), cotangent)
    ref_out, ref_grads = quick_output_and_grads(full, (q, key, value), cotangent)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for got, want, what in zip(grads, ref_grads, ("query", "key", "value")):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=what)



@pytest.mark.parametrize("causal", [False, True])
def test_gradients_under_xla_equal_masked_full_attention(causal, path):
    # Grouped-query heads, T != S, a key padding mask and query rows with no allowed
    # key (all keys of sequence 0 near its start are padding), forward and backward
    # compiled with XLA.
    q, key, value, cotangent, rng = _inputs(11, 14, n=4, k=2)
    key_mask = rng.random((2, 14)) > 0.25
    key_mask[0, :9] = False  # window 2: queries 0-3 of sequence 0 see no key
    kwargs = dict(window_size=2, causal=causal)

    def band(q, k, v):
        return sliding_window_attention(q, k, v, mask=key_mask, block_size=4, **kwargs)

    def full(q, k, v):
        return _reference(q, k, v, key_mask=key_mask, **kwargs)

    out, grads = jit_output_and_grads(band, (q, key, value), cotangent)
    ref_out, ref_grads = jit_output_and_grads(full, (q, key, value), cotangent)
    assert np.all(out[0, :4] == 0.0)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for got, want, what in zip(grads, ref_grads, ("query", "key", "value")):
        assert np.all(np.isfinite(got)), what
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=what)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("t,s", [(12, 12), (9, 14), (14, 9)], ids=["t=s", "t<s", "t>s"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_custom_gradient_equals_dense_autodiff(causal, t, s, compiled, path):
    # The hand-written gradient against autodiff of dense attention with the band
    # mask: grouped-query heads (4 query heads on 2 key heads), a key padding mask,
    # rows with no allowed key, a window wider than the block (each window spans
    # several blocks) and a last block of padding rows.
    q, key, value, cotangent, rng = _inputs(t, s, n=4, k=2)
    key_mask = rng.random((2, s)) > 0.25
    key_mask[0, : s - t + 6] = False  # window 3: sequence 0's first queries see no key

    def band(q, k, v):
        return sliding_window_attention(q, k, v, window_size=3, causal=causal,
                                        mask=key_mask, block_size=5)

    def dense(q, k, v):
        return _reference(q, k, v, 3, causal, key_mask=key_mask)

    run = jit_output_and_grads if compiled else quick_output_and_grads
    out, grads = run(band, (q, key, value), cotangent)
    ref_out, ref_grads = run(dense, (q, key, value), cotangent)
    assert np.all(out[0, :2] == 0.0)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for got, want, what in zip(grads, ref_grads, ("query", "key", "value")):
        assert np.all(np.isfinite(got)), what
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=what)


@pytest.mark.parametrize("window", [64, 20], ids=["loop", "one_step"])
def test_default_block_size(window):
    # The defaults of each computation: window 64 (>= _LOOP_MIN_WINDOW) loops over
    # blocks of 32 (each window covers five blocks, the last block is padded),
    # window 20 computes blocks of 20 in one step.
    q, key, value, cotangent, rng = _inputs(150, 150, n=2, k=1)
    key_mask = rng.random((2, 150)) > 0.1
    assert (window >= sliding_window_module._LOOP_MIN_WINDOW) == (window == 64)

    def band(q, k, v):
        return sliding_window_attention(q, k, v, window_size=window, mask=key_mask)

    def dense(q, k, v):
        return _reference(q, k, v, window, False, key_mask=key_mask)

    out, grads = quick_output_and_grads(band, (q, key, value), cotangent)
    ref_out, ref_grads = quick_output_and_grads(dense, (q, key, value), cotangent)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for got, want, what in zip(grads, ref_grads, ("query", "key", "value")):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=what)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="unknown lengths need tf.function")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_unknown_lengths_with_gradients(jit_compile, path):
    import tensorflow as tf

    spec = [tf.TensorSpec((None, None, 4, 8)), tf.TensorSpec((None, None, 2, 8)),
            tf.TensorSpec((None, None, 2, 6)), tf.TensorSpec((None, None), tf.bool)]

    @tf.function(input_signature=spec, jit_compile=jit_compile)
    def both(q, k, v, key_mask):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = sliding_window_attention(q, k, v, window_size=2, causal=True,
                                           mask=key_mask, block_size=4)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, [q, k, v])

    for t, s in [(13, 18), (11, 7), (3, 3)]:  # T < S, T > S, a single block
        q, key, value, _, rng = _inputs(t, s)
        key_mask = rng.random((2, s)) > 0.2
        out, grads = both(q, key, value, key_mask)
        ref_out, ref_grads = output_and_grads(
            lambda q, k, v: _reference(q, k, v, 2, True, key_mask=key_mask),
            (q, key, value), 2 * to_numpy(out))
        np.testing.assert_allclose(to_numpy(out), ref_out, atol=1e-5)
        for got, want in zip(grads, ref_grads):
            np.testing.assert_allclose(to_numpy(got), want, atol=1e-5, rtol=1e-5)


def test_golden_against_numpy():
    q, key, value, _, _ = _inputs(10, 10, n=2, k=2)
    out = to_numpy(sliding_window_attention(q, key, value, window_size=2, block_size=3))
    logits = np.einsum("btnh,bsnh->bnts", q, key) / np.sqrt(8.0)
    i, j = np.arange(10)[:, None], np.arange(10)[None, :]
    logits = np.where(np.abs(i - j) <= 2, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bnts,bsnv->btnv", w, value), atol=1e-5)


def test_fully_masked_rows_give_zeros(path):
    q, key, value, cotangent, _ = _inputs(8, 8)
    key_mask = np.ones((2, 8), bool)
    key_mask[0] = False  # nothing to attend in the first sequence
    key_mask[1, :3] = False  # causal window 1: queries 0-2 of sequence 1 see nothing

    def fn(q, k, v):
        return sliding_window_attention(q, k, v, window_size=1, causal=True, mask=key_mask,
                                        block_size=3)

    out, grads = quick_output_and_grads(fn, (q, key, value), cotangent)
    assert np.all(out[0] == 0.0) and np.all(out[1, :3] == 0.0)
    assert np.all(np.isfinite(out[1, 3:])) and np.any(out[1, 3:] != 0.0)
    for g in grads:
        assert np.all(np.isfinite(g))


def test_matches_under_xla(path):
    q, key, value, _, rng = _inputs(11, 11)
    key_mask = rng.random((2, 11)) > 0.2

    def fn(q, k, v):
        return sliding_window_attention(q, k, v, window_size=2, causal=True, mask=key_mask,
                                        block_size=4)

    np.testing.assert_allclose(to_numpy(jit(fn)(q, key, value)), to_numpy(fn(q, key, value)),
                               atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="inspects the traced jaxpr")
def test_memory_is_linear_in_length(path):
    # Every intermediate, forward and backward, is O(T * (block + 2 * window)).
    q, key, value, cotangent, _ = _inputs(128, 128, n=2, k=1, h=4, v=4)

    def fn(q, k, v):
        return sliding_window_attention(q, k, v, window_size=4, block_size=8)

    band = 2 * 2 * 128 * (8 + 2 * 4)  # (B, N, T, block + 2 * window)
    assert largest_intermediate(fn, (q, key, value), cotangent) <= band
    assert band < 2 * 2 * 128 * 128  # well below (B, N, T, S)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_output_dtype_and_values(dtype, path):
    q, key, value, _, _ = _inputs(9, 9)
    out = sliding_window_attention(ops.cast(q, dtype), ops.cast(key, dtype),
                                   ops.cast(value, dtype), window_size=2, block_size=4)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    expected = to_numpy(_reference(q, key, value, 2, False))
    np.testing.assert_allclose(to_numpy(out), expected, atol=3e-2)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_gradients(dtype, path):
    q, key, value, cotangent, rng = _inputs(11, 11)
    key_mask = rng.random((2, 11)) > 0.2
    args = [ops.cast(x, dtype) for x in (q, key, value)]

    def band(q, k, v):
        return sliding_window_attention(q, k, v, window_size=2, mask=key_mask, block_size=4)

    def dense(q, k, v):
        return _reference(q, k, v, 2, False, key_mask=key_mask)

    out, grads = quick_output_and_grads(band, args, cotangent.astype(dtype))
    ref_out, ref_grads = quick_output_and_grads(dense, (q, key, value), cotangent)
    np.testing.assert_allclose(out, ref_out, atol=5e-2, rtol=5e-2)
    for got, want, what in zip(grads, ref_grads, ("query", "key", "value")):
        np.testing.assert_allclose(got, want, atol=1e-1, rtol=5e-2, err_msg=what)


def test_errors():
    q, key, value, _, _ = _inputs(6, 6)
    with pytest.raises(ValueError, match="window_size=-1"):
        sliding_window_attention(q, key, value, window_size=-1)
    with pytest.raises(TypeError, match="window_size"):
        sliding_window_attention(q, key, value, window_size=1.5)
    with pytest.raises(ValueError, match="block_size=0"):
        sliding_window_attention(q, key, value, window_size=2, block_size=0)
    with pytest.raises(ValueError, match="mask"):
        sliding_window_attention(q, key, value, window_size=2, mask=np.ones((2, 6, 6), bool))
    with pytest.raises(ValueError, match="mask"):
        sliding_window_attention(q, key, value, window_size=2, mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="query"):
        sliding_window_attention(q[0], key, value, window_size=2)
    with pytest.raises(ValueError, match="key/value"):
        sliding_window_attention(q[:, :, :3], key, value, window_size=2)
