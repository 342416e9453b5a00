import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.ops import (
    favor_random_features,
    linear_attention,
    scaled_dot_product_attention,
)
from keras_attention.ops import linear as linear_module
from tests.ops.backend_utils import (
    BACKEND,
    jit,
    jit_output_and_grads,
    largest_intermediate,
    output_and_grads,
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


# ---------------------------------------------------------------- non-causal blocks
# The non-causal path runs in blocks of `_BLOCK_ROWS` keys, then queries, for
# sequences longer than `_ONE_BLOCK_MAX`, with a custom gradient. Small blocks
# here exercise several blocks, a shorter tail block, a block whose keys are all
# masked and blocks with different shifts.


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(linear_module, "_BLOCK_ROWS", 4)
    monkeypatch.setattr(linear_module, "_ONE_BLOCK_MAX", 4)


def _one_pass(q, k, v, feature_map, mask=None, eps=0.0, w=None):
    """Non-causal reference: all key features at once, differentiated by autodiff."""
    b, t, n, h = q.shape
    kv_heads, v_dim = k.shape[2], v.shape[3]
    q5 = ops.reshape(q, (b, t, kv_heads, n // kv_heads, h))  # (B, T, K, G, H)
    key_mask = None if mask is None else ops.convert_to_tensor(mask)
    phi_q = linear_module._features(q5, feature_map, w, is_query=True, rescale=eps == 0)
    phi_k = linear_module._features(k, feature_map, w, is_query=False, key_mask=key_mask,
                                    rescale=eps == 0)  # (B, S, K, M)
    if key_mask is not None:
        phi_k = phi_k * ops.cast(key_mask, "float32")[:, :, None, None]
    kv = ops.einsum("bskm,bskv->bkmv", phi_k, v)
    num = ops.einsum("btkgm,bkmv->btkgv", phi_q, kv)
    den = ops.einsum("btkgm,bkm->btkg", phi_q, ops.sum(phi_k, axis=1))[..., None] + eps
    out = num / ops.where(den > 0.0, den, 1.0)
    return ops.reshape(out, (b, t, n, v_dim))


def _block_inputs(t, s, feature_map, seed=0):
    q, key, value, rng = _inputs(t, s, seed=seed)
    key[:, :4] -= 3.0  # the first block has its own (smaller) shift
    if feature_map == "elu":  # all negative: elu's shift is then < 0 and differs
        key[:, 4:8] = -np.abs(key[:, 4:8]) - 4.0
    mask = rng.random((2, s)) > 0.3
    mask[1, 4:8] = False  # a fully masked block
    mask[0, :] = True
    return q, key, value, mask, rng


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("feature_map", ["elu", "relu", "favor+"])
@pytest.mark.parametrize("t,s", [(13, 18), (10, 7), (4, 9), (9, 4)],
                         ids=["t<s", "t>s", "one_query_block", "one_key_block"])
def test_noncausal_blocks_match_one_pass_with_gradients(small_blocks, t, s, feature_map,
                                                         eps, compiled):
    q, key, value, mask, rng = _block_inputs(t, s, feature_map)
    cotangent = rng.normal(size=(2, t, 4, 5)).astype("float32")
    args = (q, key, value)
    if feature_map == "favor+":  # the projection gets a gradient too
        args += (to_numpy(favor_random_features(8, 12, seed=0)),)

    def blocked(q, k, v, w=None):
        return linear_attention(q, k, v, feature_map=feature_map, mask=mask, eps=eps,
                                random_features=w)

    def reference(q, k, v, w=None):
        return _one_pass(q, k, v, feature_map, mask, eps, w)

    run = jit_output_and_grads if compiled else quick_output_and_grads
    out, grads = run(blocked, args, cotangent)
    ref_out, ref_grads = run(reference, args, cotangent)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-4)
    for name, g, ref in zip(["query", "key", "value", "projection"], grads, ref_grads):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, ref, atol=1e-4, rtol=1e-4, err_msg=name)
    assert np.all(np.isfinite(out))  # also where a block of keys is fully masked


def test_noncausal_gradients_against_numpy(small_blocks):
    """The custom gradient for elu + 1 against float64 NumPy finite differences."""
    q, key, value, rng = _inputs(9, 11)
    mask = rng.random((2, 11)) > 0.3
    cotangent = rng.normal(size=(2, 9, 4, 5)).astype("float32")

    def loss(q, k, v):
        return float(np.sum(_numpy_linear(q, k, v, "elu", False, mask) * cotangent))

    _, grads = quick_output_and_grads(
        lambda q, k, v: linear_attention(q, k, v, mask=mask), (q, key, value), cotangent)
    for arg, grad in enumerate(grads):
        args = [x.astype("float64") for x in (q, key, value)]
        numeric = np.zeros_like(args[arg])
        for idx in np.ndindex(*args[arg].shape):
            step = [a.copy() for a in args]
            step[arg][idx] += 1e-6
            up = loss(*step)
            step[arg][idx] -= 2e-6
            numeric[idx] = (up - loss(*step)) / 2e-6
        np.testing.assert_allclose(grad, numeric, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="unknown lengths need tf.function")
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("key_length", [18, None], ids=["blocks", "unknown"])
def test_noncausal_unknown_lengths(small_blocks, key_length, jit_compile):
    """Unknown query lengths; blocks of keys when their length is known."""
    import tensorflow as tf

    spec = [tf.TensorSpec((None, None, 4, 8)), tf.TensorSpec((None, key_length, 2, 8)),
            tf.TensorSpec((None, key_length, 2, 5)), tf.TensorSpec((None, key_length), tf.bool)]

    @tf.function(input_signature=spec, jit_compile=jit_compile)
    def both(q, k, v, mask):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = linear_attention(q, k, v, mask=mask)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, [q, k, v])

    for t in (13, 3, 0):
        q, key, value, mask, _ = _block_inputs(t, 18, "elu")
        out, grads = both(q, key, value, mask)
        assert tuple(out.shape) == (2, t, 4, 5)
        if t == 0:
            assert all(np.all(to_numpy(g) == 0.0) for g in grads)
            continue
        ref_out, ref_grads = output_and_grads(
            lambda q, k, v: _one_pass(q, k, v, "elu", mask), (q, key, value), 2 * out)
        np.testing.assert_allclose(to_numpy(out), ref_out, atol=1e-5)
        for g, ref in zip(grads, ref_grads):
            np.testing.assert_allclose(to_numpy(g), ref, atol=1e-4, rtol=1e-4)


def test_noncausal_zero_length():
    q, key, value, _ = _inputs(5, 7)
    assert tuple(linear_attention(q[:, :0], key, value).shape) == (2, 0, 4, 5)
    out = to_numpy(linear_attention(q, key[:, :0], value[:, :0]))
    assert out.shape == (2, 5, 4, 5) and np.all(out == 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_noncausal_mixed_precision_gradients(small_blocks, dtype):
    q, key, value, mask, rng = _block_inputs(9, 10, "elu")
    cotangent = rng.normal(size=(2, 9, 4, 5)).astype(dtype)
    args = [ops.cast(x, dtype) for x in (q, key, value)]
    out, grads = quick_output_and_grads(
        lambda q, k, v: linear_attention(q, k, v, mask=mask), args, cotangent)
    ref_out, ref_grads = quick_output_and_grads(
        lambda q, k, v: _one_pass(q, k, v, "elu", mask), (q, key, value),
        cotangent.astype("float32"))
    np.testing.assert_allclose(out, ref_out, atol=5e-2, rtol=5e-2)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, atol=1e-1, rtol=5e-2)


def test_noncausal_default_blocks():
    """Past `_ONE_BLOCK_MAX` keys: the real block size, with a tail block."""
    length = linear_module._ONE_BLOCK_MAX + 9
    q, key, value, rng = _inputs(length, length, n=2, k=1, h=4, v=3)
    mask = rng.random((2, length)) > 0.2
    cotangent = rng.normal(size=(2, length, 2, 3)).astype("float32")
    out, grads = quick_output_and_grads(
        lambda q, k, v: linear_attention(q, k, v, mask=mask), (q, key, value), cotangent)
    ref_out, ref_grads = quick_output_and_grads(
        lambda q, k, v: _one_pass(q, k, v, "elu", mask), (q, key, value), cotangent)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-4)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=1e-3)
