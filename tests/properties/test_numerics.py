"""Numerical robustness in low precision: large logits, long softmax rows, gradients.

- Every op with float16 and bfloat16 inputs whose logits are scaled by 100
  (queries times 100): outputs finite, every output row inside the range of the
  values it may attend (a convex combination, as any normalised attention must
  give), and finite gradients with respect to query, key and value.
- Softmax statistics in float32: 70000 keys of equal logit in float16 (a float16
  sum of the weights would overflow at 65504) give the mean of the values.
- Unscaled logits beyond the float16 range (the scaled ones are not) stay finite.
- Every attention layer under the `mixed_float16` and `mixed_bfloat16` policies,
  queries times 100: finite outputs and finite gradients with respect to its
  weights and inputs.
"""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_attention import ops as attention_ops
from tests.ops.backend_utils import output_and_grads
from tests.properties.conftest import counted, examples
from tests.properties.layer_specs import ALL_SPECS, CONTEXT_FEATURES, QUERY_FEATURES, spec_ids
from tests.properties.strategies import (
    allowed_pairs,
    as_dtype,
    assert_finite,
    op_cases,
    rounded,
    to_numpy,
)

BACKEND = keras.backend.backend()
LOW_PRECISION = ("float16", "bfloat16")
LOGIT_SCALE = 100.0


def _ops(case, data):
    """The op calls of one case: name -> (fn(q, k, v), pairs it may attend)."""
    mask, causal = data["mask"], case.causal
    full = allowed_pairs(case.batch, case.heads, case.query_length, case.key_length,
                         mask, causal)
    keys = None if mask is None or mask.shape[2] != 1 else mask  # key padding only
    keys_allowed = allowed_pairs(case.batch, case.heads, case.query_length,
                                 case.key_length, keys, causal)
    window = data["window"]
    band = allowed_pairs(case.batch, case.heads, case.query_length, case.key_length,
                         keys, causal, window=window)
    projection = np.random.default_rng(case.seed).normal(size=(case.head_dim, 4))
    projection = projection.astype("float32")
    return {
        "scaled_dot_product_attention": (
            lambda q, k, v: attention_ops.scaled_dot_product_attention(
                q, k, v, mask=mask, causal=causal), full),
        "scaled_dot_product_attention[weights]": (
            lambda q, k, v: attention_ops.scaled_dot_product_attention(
                q, k, v, mask=mask, causal=causal, return_weights=True)[0], full),
        "chunked_attention": (
            lambda q, k, v: attention_ops.chunked_attention(
                q, k, v, mask=mask, causal=causal, query_chunk_size=3, key_chunk_size=2),
            full),
        "sliding_window_attention": (
            lambda q, k, v: attention_ops.sliding_window_attention(
                q, k, v, window_size=window, causal=causal, mask=keys), band),
        "linear_attention[elu]": (
            lambda q, k, v: attention_ops.linear_attention(
                q, k, v, causal=causal, mask=keys, chunk_size=2), keys_allowed),
        "linear_attention[favor+]": (
            lambda q, k, v: attention_ops.linear_attention(
                q, k, v, feature_map="favor+", random_features=projection, causal=causal,
                mask=keys, chunk_size=2), keys_allowed),
    }


OP_NAMES = ["scaled_dot_product_attention", "scaled_dot_product_attention[weights]",
            "chunked_attention", "sliding_window_attention", "linear_attention[elu]",
            "linear_attention[favor+]"]


def _assert_convex(out, v, allowed, dtype):
    """Each row `(b, t, n)` lies within [min, max] of the values it may attend."""
    groups = out.shape[2] // v.shape[2]
    v = np.repeat(v, groups, axis=2)  # (B, S, N, V)
    slack = 2e-2 if dtype == "float16" else 8e-2
    for b, n, t in zip(*np.nonzero(np.any(allowed, axis=-1))):
        keys = v[b, allowed[b, n, t], n]  # (allowed keys, V)
        low, high = keys.min(0), keys.max(0)
        scale = slack * (1.0 + np.abs(keys).max(0))
        row = out[b, t, n]
        assert np.all(row >= low - scale) and np.all(row <= high + scale), (
            f"row {(b, t, n)} = {row} outside the range of its values [{low}, {high}]"
        )


@pytest.mark.parametrize("name", OP_NAMES)
@settings(max_examples=examples(3), deadline=None, derandomize=True)
@given(case=op_cases(dtypes=LOW_PRECISION, max_length=7), window=st.integers(0, 3))
@counted
def test_op_large_logits_low_precision(name, case, window):
    q, k, v, mask = case.arrays(scale=LOGIT_SCALE)
    fn, allowed = _ops(case, {"mask": mask, "window": window})[name]
    args = [as_dtype(a, case.dtype) for a in (q, k, v)]
    cotangent = np.random.default_rng(case.seed).normal(
        size=(case.batch, case.query_length, case.heads, case.value_dim))
    out, grads = output_and_grads(fn, args, cotangent.astype("float32"))
    assert np.all(np.isfinite(out)), f"{name}: non-finite output"
    for arg, grad in zip(("query", "key", "value"), grads):
        assert np.all(np.isfinite(grad)), f"{name}: non-finite gradient of {arg}"
    _assert_convex(out, rounded(v, case.dtype), allowed, case.dtype)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name", ["scaled_dot_product_attention",
                                  "scaled_dot_product_attention[weights]",
                                  "chunked_attention", "linear_attention"])
@counted
def test_softmax_sum_over_many_keys_is_float32(name, dtype):
    """70000 equal logits: a float16 sum of the weights would overflow to inf."""
    s = 70000
    v = np.random.default_rng(0).normal(size=(1, s, 1, 2)).astype("float32")
    q, k = np.ones((1, 1, 1, 2), "float32"), np.ones((1, s, 1, 2), "float32")
    q, k, vd = (as_dtype(a, dtype) for a in (q, k, v))
    if name == "chunked_attention":
        out = attention_ops.chunked_attention(q, k, vd, key_chunk_size=16384)
    elif name == "linear_attention":
        out = attention_ops.linear_attention(q, k, vd)
    else:
        out = attention_ops.scaled_dot_product_attention(
            q, k, vd, return_weights=name.endswith("[weights]"))
        out = out[0] if isinstance(out, tuple) else out
    expected = rounded(v, dtype).mean(axis=1)  # (1, 1, 2)
    np.testing.assert_allclose(assert_finite(out, name)[:, 0], expected,
                               atol=1e-2 if dtype == "float16" else 4e-2)


@pytest.mark.parametrize("return_weights", [False, True])
@counted
def test_float16_unscaled_logits_beyond_float16_range(return_weights):
    """q . k = 78400 > 65504 (float16 max), but q . k / sqrt(16) = 19600 is finite:
    the queries are scaled before the product, on both paths."""
    rng = np.random.default_rng(0)
    q = np.full((1, 2, 1, 16), 70.0, "float32")
    k = np.full((1, 3, 1, 16), 70.0, "float32")
    v = rng.normal(size=(1, 3, 1, 16)).astype("float32")
    out = attention_ops.scaled_dot_product_attention(
        *(as_dtype(a, "float16") for a in (q, k, v)), return_weights=return_weights)
    out = out[0] if return_weights else out
    expected = rounded(v, "float16").mean(axis=1, keepdims=True)  # equal logits
    np.testing.assert_allclose(assert_finite(out, "float16 sdpa"),
                               np.broadcast_to(expected, (1, 2, 1, 16)), atol=1e-2)


# ---------------------------------------------------------------------- layers
def _layer_grads(layer, call, inputs):
    """Output of `call(*inputs)` and the gradients of `sum(output * c)` w.r.t. the
    layer's trainable weights and the inputs (None for unused weights)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        inputs = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = call(*inputs)
            c = tf.cast(tf.random.stateless_normal(tf.shape(out), seed=(1, 2)), out.dtype)
            loss = tf.reduce_sum(tf.cast(out * c, "float32"))
        grads = tape.gradient(loss, [w.value for w in layer.trainable_weights] + inputs)
        return to_numpy(out), [None if g is None else to_numpy(g) for g in grads]
    if BACKEND == "jax":
        import jax

        trainable = [w.value for w in layer.trainable_weights]
        others = [w.value for w in layer.non_trainable_weights]

        def loss_fn(weights, xs):
            out = _stateless(layer, weights, others, call, xs)
            c = jax.random.normal(jax.random.PRNGKey(0), out.shape).astype(out.dtype)
            return (out * c).astype("float32").sum(), out

        (_, out), (gw, gx) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            trainable, list(inputs))
        return to_numpy(out), [to_numpy(g) for g in list(gw) + list(gx)]
    pytest.skip(f"gradients are checked on TensorFlow and JAX, not {BACKEND}")


def _stateless(layer, trainable, others, call, xs):
    """`call(*xs)` with the layer's weights replaced by the traced `trainable`."""
    mapping = list(zip(layer.trainable_weights, trainable)) + list(
        zip(layer.non_trainable_weights, others))
    with keras.StatelessScope(state_mapping=mapping):
        return call(*xs)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_ids(ALL_SPECS))
@settings(max_examples=examples(1), deadline=None, derandomize=True)
@given(policy=st.sampled_from(("mixed_float16", "mixed_bfloat16")),
       batch=st.integers(1, 2), length=st.integers(2, 7), seed=st.integers(0, 2**16))
@counted
def test_layer_mixed_precision_large_logits(spec, policy, batch, length, seed):
    rng = np.random.default_rng(seed)
    layer = spec.make(dtype=policy)
    if spec.kind == "hierarchical":
        x = rng.normal(size=(batch, 2, length, QUERY_FEATURES)).astype("float32")
        inputs = [x * LOGIT_SCALE]

        def call(x):
            return layer(x, training=True)
    elif spec.kind == "pooling":
        inputs = [rng.normal(size=(batch, length, QUERY_FEATURES)).astype("float32")
                  * LOGIT_SCALE]

        def call(x):
            return layer(x, training=True)
    else:
        width = CONTEXT_FEATURES if spec.cross else QUERY_FEATURES
        x = rng.normal(size=(batch, length, QUERY_FEATURES)).astype("float32")
        context = x if not spec.cross else rng.normal(
            size=(batch, length + 1, width)).astype("float32")
        # Queries times 100 (the context is not scaled): logits times 100.
        inputs = [x * LOGIT_SCALE, context]
        causal = spec.causal is not None

        def call(x, context):
            return layer(x, context, use_causal_mask=causal, training=True)
    call(*inputs)  # builds
    out, grads = _layer_grads(layer, call, inputs)
    assert keras.backend.standardize_dtype(layer.compute_dtype) == policy[len("mixed_"):]
    assert np.all(np.isfinite(out)), f"{spec.id} {policy}: non-finite output"
    names = [w.path for w in layer.trainable_weights] + ["query", "value"][: len(inputs)]
    for name, grad in zip(names, grads):
        assert grad is None or np.all(np.isfinite(grad)), (
            f"{spec.id} {policy}: non-finite gradient of {name}"
        )
