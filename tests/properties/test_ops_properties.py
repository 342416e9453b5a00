"""Property tests of every function in `keras_attention.ops`.

Over random batch sizes, query/key lengths (T != S included), MHA/GQA/MQA head
layouts, head sizes, masks (key padding with fully padded sequences, full masks
with empty rows), causal flags and float32/float16/bfloat16 inputs:

- each op equals a float64 NumPy reference under its own pattern (exact ops:
  softmax attention; linear attention: the kernel formula), and the exact ops
  agree with each other (chunked == dense, sliding window == dense with
  `masks.sliding_window_mask`);
- outputs are finite, rows with no allowed key are zeros;
- keys and values at positions a row may not attend (padding, the future under
  `causal`, outside the window) have no influence on it;
- zero-size batches, queries or keys give zeros of the right shape.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_attention import masks
from keras_attention import ops as attention_ops
from tests.properties.conftest import counted, examples
from tests.properties.strategies import (
    DTYPES,
    OpCase,
    allowed_pairs,
    as_dtype,
    assert_close,
    assert_finite,
    numpy_attention,
    numpy_linear_attention,
    op_cases,
    perturbed_keys,
    rounded,
    to_numpy,
    untouched_rows,
    zero_size_shapes,
)

# ---------------------------------------------------------------------- the op table
# Each entry runs one op on a drawn case: `run(case, q, k, v, mask, extra)` returns the
# output and the boolean `(B, N, T, S)` pairs it may attend; `reference` gives the
# float64 output from the same inputs. `extra` holds the op's own drawn arguments.


def _sdpa(case, q, k, v, mask, extra):
    out = attention_ops.scaled_dot_product_attention(q, k, v, mask=mask, causal=case.causal)
    return out, allowed_pairs(*_bnts(case), mask, case.causal)


def _sdpa_weights(case, q, k, v, mask, extra):
    out, _ = attention_ops.scaled_dot_product_attention(
        q, k, v, mask=mask, causal=case.causal, return_weights=True
    )
    return out, allowed_pairs(*_bnts(case), mask, case.causal)


def _chunked(case, q, k, v, mask, extra):
    out = attention_ops.chunked_attention(
        q, k, v, mask=mask, causal=case.causal, query_chunk_size=extra["query_chunk"],
        key_chunk_size=extra["key_chunk"],
    )
    return out, allowed_pairs(*_bnts(case), mask, case.causal)


def _sliding(case, q, k, v, mask, extra):
    out = attention_ops.sliding_window_attention(
        q, k, v, window_size=extra["window"], causal=case.causal, mask=mask,
        block_size=extra["block"],
    )
    return out, allowed_pairs(*_bnts(case), mask, case.causal, window=extra["window"])


def _linear(case, q, k, v, mask, extra):
    out = attention_ops.linear_attention(
        q, k, v, feature_map=extra["feature_map"], causal=case.causal, mask=mask,
        random_features=extra["projection"], chunk_size=extra["block"],
    )
    return out, allowed_pairs(*_bnts(case), mask, case.causal)


def _softmax_reference(case, q, k, v, allowed, extra):
    return numpy_attention(q, k, v, allowed)[0]


def _linear_reference(case, q, k, v, allowed, extra):
    return numpy_linear_attention(q, k, v, allowed, extra["feature_map"], extra["projection"])


def _bnts(case):
    return case.batch, case.heads, case.query_length, case.key_length


def _no_extra(case):
    return st.just({})


@st.composite
def _chunk_extra(draw, case):
    return {"query_chunk": draw(st.integers(1, case.query_length + 1)),
            "key_chunk": draw(st.integers(1, case.key_length + 1))}


@st.composite
def _window_extra(draw, case):
    return {"window": draw(st.integers(0, 4)),
            "block": draw(st.one_of(st.none(), st.integers(1, 5)))}


@st.composite
def _linear_extra(draw, case):
    feature_map = draw(st.sampled_from(("elu", "relu", "favor+")))
    projection = None
    if feature_map == "favor+":
        rng = np.random.default_rng(case.seed + 1)
        projection = rng.normal(size=(case.head_dim, draw(st.integers(1, 6))))
        projection = projection.astype("float32")
    return {"feature_map": feature_map, "projection": projection,
            "block": draw(st.integers(1, 5))}


OPS = {
    # name: (run, reference, strategy of the op's own arguments, mask kinds)
    "scaled_dot_product_attention": (_sdpa, _softmax_reference, _no_extra,
                                     ("none", "keys", "full")),
    "scaled_dot_product_attention[weights]": (_sdpa_weights, _softmax_reference,
                                              _no_extra, ("none", "keys", "full")),
    "chunked_attention": (_chunked, _softmax_reference, _chunk_extra,
                          ("none", "keys", "full")),
    "sliding_window_attention": (_sliding, _softmax_reference, _window_extra,
                                 ("none", "keys")),
    "linear_attention": (_linear, _linear_reference, _linear_extra, ("none", "keys")),
}
# Functions of `keras_attention.ops` tested on their own rather than here: helpers that
# are not attention ops, and the band kernel with global keys that the layers call
# (tests/ops/test_band.py, test_masked_softmax.py).
HELPERS = {"favor_random_features", "mask_value", "masked_softmax", "blocked_band_attention"}


def test_every_op_is_covered():
    public = {name for name, obj in inspect.getmembers(attention_ops, inspect.isfunction)
              if not name.startswith("_")}
    covered = {name.split("[")[0] for name in OPS} | HELPERS
    assert public == covered, (
        f"ops without property tests: {sorted(public - covered)}; "
        f"stale entries: {sorted(covered - public)}"
    )


@st.composite
def _op_draw(draw, name, **kwargs):
    _, _, extra, mask_kinds = OPS[name]
    case = draw(op_cases(mask_kinds=mask_kinds, **kwargs))
    return case, draw(extra(case))


def _run(name, case, extra, q, k, v, mask):
    run = OPS[name][0]
    d = case.dtype
    return run(case, as_dtype(q, d), as_dtype(k, d), as_dtype(v, d), mask, extra)


OP_NAMES = sorted(OPS)


# ---------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", OP_NAMES)
@settings(max_examples=examples(6), deadline=None, derandomize=True)
@given(data=st.data())
@counted
def test_matches_numpy_reference(name, data):
    case, extra = data.draw(_op_draw(name))
    q, k, v, mask = case.arrays()
    out, allowed = _run(name, case, extra, q, k, v, mask)
    out = assert_finite(out, name)
    assert out.shape == (case.batch, case.query_length, case.heads, case.value_dim)
    qr, kr, vr = (rounded(a, case.dtype) for a in (q, k, v))
    expected = OPS[name][1](case, qr, kr, vr, allowed, extra)
    assert_close(out, expected, case.dtype, f"{name} vs NumPy")
    # Rows with no allowed key are exactly zero.
    empty = ~np.any(allowed, axis=-1)  # (B, N, T)
    np.testing.assert_array_equal(np.transpose(out, (0, 2, 1, 3))[empty], 0.0)


@pytest.mark.parametrize("name", OP_NAMES)
@settings(max_examples=examples(4), deadline=None, derandomize=True)
@given(data=st.data())
@counted
def test_masked_keys_have_no_influence(name, data):
    case, extra = data.draw(_op_draw(name))
    q, k, v, mask = case.arrays()
    rng = np.random.default_rng(case.seed + 2)
    positions = rng.random((case.batch, case.key_length)) < 0.4  # (B, S) to perturb
    k2, v2 = perturbed_keys(rng, k, v, positions)
    out, allowed = _run(name, case, extra, q, k, v, mask)
    out2, _ = _run(name, case, extra, q, k2, v2, mask)
    keep = untouched_rows(allowed, positions)  # (B, N, T)
    before = np.transpose(to_numpy(out), (0, 2, 1, 3))[keep]
    after = np.transpose(assert_finite(out2, name), (0, 2, 1, 3))[keep]
    assert_close(after, before, case.dtype, f"{name}: masked keys changed kept rows")


@settings(max_examples=examples(5), deadline=None, derandomize=True)
@given(case=op_cases(), data=st.data())
@counted
def test_chunked_equals_dense(case, data):
    """`chunked_attention` == `scaled_dot_product_attention`, both paths, any chunks."""
    q, k, v, mask = case.arrays()
    q, k, v = (as_dtype(a, case.dtype) for a in (q, k, v))
    chunks = {"query_chunk_size": data.draw(st.integers(1, case.query_length + 1)),
              "key_chunk_size": data.draw(st.integers(1, case.key_length + 1))}
    chunked = attention_ops.chunked_attention(q, k, v, mask=mask, causal=case.causal,
                                              **chunks)
    dense = attention_ops.scaled_dot_product_attention(q, k, v, mask=mask,
                                                       causal=case.causal)
    weighted, weights = attention_ops.scaled_dot_product_attention(
        q, k, v, mask=mask, causal=case.causal, return_weights=True
    )
    assert_close(chunked, to_numpy(dense), case.dtype, "chunked vs dense")
    assert_close(weighted, to_numpy(dense), case.dtype, "weights path vs fast path")
    # Weights: rows sum to 1 where a key is allowed, 0 elsewhere.
    allowed = allowed_pairs(case.batch, case.heads, case.query_length, case.key_length,
                            mask, case.causal)
    w = assert_finite(weights, "weights")
    np.testing.assert_array_equal(w[~allowed], 0.0)
    np.testing.assert_allclose(w.sum(-1), np.any(allowed, -1).astype("float32"), atol=1e-5)


@settings(max_examples=examples(5), deadline=None, derandomize=True)
@given(case=op_cases(mask_kinds=("none", "keys")), window=st.integers(0, 4),
       block=st.one_of(st.none(), st.integers(1, 5)))
@counted
def test_sliding_window_equals_dense_with_band_mask(case, window, block):
    q, k, v, mask = case.arrays()
    q, k, v = (as_dtype(a, case.dtype) for a in (q, k, v))
    t, s = case.query_length, case.key_length
    band = masks.sliding_window_mask(t, window, s, causal=case.causal)[None, None]
    dense_mask = band if mask is None else masks.merge_masks(band, mask)
    expected = attention_ops.scaled_dot_product_attention(q, k, v, mask=dense_mask)
    out = attention_ops.sliding_window_attention(
        q, k, v, window_size=window, causal=case.causal, mask=mask, block_size=block
    )
    assert_close(out, to_numpy(expected), case.dtype, "sliding window vs dense")


@pytest.mark.parametrize("name", OP_NAMES)
@settings(max_examples=examples(3), deadline=None, derandomize=True)
@given(shape=zero_size_shapes(), causal=st.booleans(), dtype=st.sampled_from(DTYPES))
@counted
def test_zero_sizes_give_zeros(name, shape, causal, dtype):
    b, t, s = shape
    case = OpCase(b, t, s, kv_heads=1, groups=2, head_dim=4, value_dim=3,
                  mask_kind="none", causal=causal, dtype=dtype, seed=0)
    extra = {"query_chunk": 2, "key_chunk": 2, "window": 1, "block": 2,
             "feature_map": "favor+", "projection": np.ones((4, 3), "float32")}
    q, k, v, _ = case.arrays()
    mask = np.ones((b, 1, 1, s), bool)
    out, _ = _run(name, case, extra, q, k, v, mask)
    out = to_numpy(out)
    assert out.shape == (b, t, 2, 3)
    np.testing.assert_array_equal(out, 0.0)


@settings(max_examples=examples(4), deadline=None, derandomize=True)
@given(head_dim=st.integers(1, 8), features=st.integers(1, 20), seed=st.integers(0, 1000))
@counted
def test_favor_random_features_are_block_orthogonal(head_dim, features, seed):
    w = attention_ops.favor_random_features(head_dim, features, seed=seed)
    w = assert_finite(w, "favor_random_features")
    assert w.shape == (head_dim, features)
    np.testing.assert_array_equal(
        w, to_numpy(attention_ops.favor_random_features(head_dim, features, seed=seed))
    )
    for start in range(0, features, head_dim):
        block = w[:, start:start + head_dim]  # (H, <= H) orthogonal columns
        gram = block.T @ block
        off = gram - np.diag(np.diag(gram))
        np.testing.assert_allclose(off, 0.0, atol=1e-4 * max(1.0, np.abs(gram).max()))
