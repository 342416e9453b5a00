import keras
import numpy as np
import pytest

from keras_attention.layers import LSHAttention
from keras_attention.testing import run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs, causal",
    [
        # 2 chunks: every chunk sees the whole sequence, so it is strictly causal.
        ({"num_heads": 2, "key_dim": 4, "bucket_size": 4, "seed": 1}, True),
        ({"num_heads": 2, "key_dim": 4, "bucket_size": 2, "num_hashes": 3, "value_dim": 3,
          "output_dim": 10, "dropout": 0.1, "seed": 2}, False),
    ],
    ids=["two-chunks", "three-chunks-three-rounds"],
)
def test_layer_checks(kwargs, causal):
    run_attention_layer_test(LSHAttention, kwargs, cross=False, causal=causal,
                             scores=False)


def _set_weights(layer, query_kernel, value_kernel, output_kernel):
    for w in layer.weights:
        name = w.path.split("/", 1)[1]
        kernels = {"query/kernel": query_kernel, "value/kernel": value_kernel,
                   "attention_output/kernel": output_kernel}
        if name in kernels:
            w.assign(kernels[name].reshape(w.shape))
        elif name.endswith("bias"):
            w.assign(np.zeros(w.shape))


def _predict(layer, query, value, **kwargs):
    """Run `layer` as one compiled program (much faster than eager on JAX)."""
    arrays = {"query": query, "value": value}
    arrays.update({k: v for k, v in kwargs.items() if isinstance(v, np.ndarray)})
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    sym = {k: keras.Input(v.shape[1:], dtype=str(v.dtype), name=k) for k, v in arrays.items()}
    masks = {k: sym[k] for k in arrays if k.endswith("_mask")}
    model = keras.Model(sym, layer(sym["query"], sym["value"], **masks, **static))
    return model.predict(arrays, batch_size=len(query), verbose=0)


def _weights_layer(t, query_dim=4, **kwargs):
    """One head whose output row i is its attention weights over the positions.

    Inputs are `[random (4), one-hot position (T)]`: queries read the random part,
    values the one-hot part, and the output projection is the identity.
    """
    f = query_dim + t
    layer = LSHAttention(1, query_dim, value_dim=t, output_dim=t, **kwargs)
    layer.build((None, t, f), (None, t, f))
    q_kernel = np.zeros((f, query_dim), "float32")
    q_kernel[:query_dim] = np.eye(query_dim)
    v_kernel = np.zeros((f, t), "float32")
    v_kernel[query_dim:] = np.eye(t)
    _set_weights(layer, q_kernel, v_kernel, np.eye(t, dtype="float32"))
    return layer


def _position_inputs(rng, b, t):
    x = rng.normal(size=(b, t, 4)).astype("float32")
    return np.concatenate([x, np.broadcast_to(np.eye(t, dtype="float32"), (b, t, t))], -1)


@pytest.mark.parametrize("causal", [False, True])
def test_weights_respect_masks_and_self_rule(causal):
    rng = np.random.default_rng(0)
    b, t = 2, 12
    x = _position_inputs(rng, b, t)
    pad = np.ones((b, t), bool)
    pad[1, -3:] = False
    layer = _weights_layer(t, bucket_size=3, num_hashes=2, seed=3)
    w = _predict(layer, x, x, query_mask=pad, value_mask=pad, use_causal_mask=causal)
    # (B, T, T): row i = weights of query i
    np.testing.assert_allclose(w.sum(-1), pad.astype("float32"), atol=1e-5)
    assert np.all(w >= -1e-7)
    np.testing.assert_array_equal(np.where(pad[:, None, :], 0.0, w), 0.0)  # padded keys
    diagonal = np.diagonal(w, axis1=1, axis2=2)  # (B, T)
    if causal:
        np.testing.assert_array_equal(np.triu(w, k=1), 0.0)  # no later position
        np.testing.assert_allclose(diagonal[:, 0], 1.0, atol=1e-6)  # nothing else
        # Otherwise self only when nothing else in the chunks: weight 0 or 1.
        assert np.all((np.abs(diagonal) < 1e-6) | (np.abs(diagonal - 1) < 1e-6))
    else:
        # Every chunk holds 3 valid positions, so a query never attends itself.
        np.testing.assert_allclose(diagonal, 0.0, atol=1e-6)


def _identity_layer(num_heads, key_dim, t, **kwargs):
    f = num_heads * key_dim
    layer = LSHAttention(num_heads, key_dim, **kwargs)
    layer.build((None, t, f), (None, t, f))
    eye = np.eye(f, dtype="float32")
    _set_weights(layer, eye, eye, eye)
    return layer


def _numpy_shared_qk_attention(x, v, num_heads, causal=False):
    """Exact shared-QK attention: keys are unit queries; self only if nothing else."""
    b, t, f = x.shape
    h = f // num_heads
    q = x.reshape(b, t, num_heads, h)
    k = q / np.linalg.norm(q, axis=-1, keepdims=True)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(h)
    allowed = np.tril(np.ones((t, t), bool)) if causal else np.ones((t, t), bool)
    others = allowed & ~np.eye(t, dtype=bool)
    use = np.where(others.any(-1, keepdims=True), others, np.eye(t, dtype=bool))
    logits = np.where(use, logits, -np.inf)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnv->btnv", a, v.reshape(b, t, num_heads, h))
    return out.reshape(b, t, f)


@pytest.mark.parametrize("causal", [False, True])
def test_error_against_exact_attention_shrinks_with_rounds(causal):
    """Documented error against exact attention (see the class docstring)."""
    rng = np.random.default_rng(0)
    b, t, n, h = 2, 16, 2, 8
    x = rng.normal(size=(b, t, n * h)).astype("float32")
    v = rng.normal(size=(b, t, n * h)).astype("float32")
    exact = _numpy_shared_qk_attention(x, v, n, causal)
    errors = []
    for rounds in (1, 2, 4, 8):  # one rotation seed here; the docstring averages 3
        layer = _identity_layer(n, h, t, bucket_size=4, num_hashes=rounds, seed=0)
        out = _predict(layer, x, v, use_causal_mask=causal)
        errors.append(float(np.abs(out - exact).mean()))
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[3] < 0.1 * errors[0], errors
    # Two chunks (bucket_size = T / 2): every query sees every key, exact.
    layer = _identity_layer(n, h, t, bucket_size=8, num_hashes=2, seed=0)
    np.testing.assert_allclose(_predict(layer, x, v, use_causal_mask=causal), exact,
                               atol=1e-5)


def test_rotations_are_seeded_non_trainable_weights():
    a = LSHAttention(2, 4, bucket_size=2, num_hashes=3, seed=5)
    b = LSHAttention(2, 4, bucket_size=2, num_hashes=3, seed=5)
    a.build((None, 8, 8), (None, 8, 8))
    b.build((None, 8, 8), (None, 8, 8))
    assert [w.name for w in a.non_trainable_weights] == ["random_rotations"]
    assert tuple(a.random_rotations.shape) == (4, 3, 4)  # (H, R, U / 2), U = 2 * 8 / 2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.random_rotations),
                                  keras.ops.convert_to_numpy(b.random_rotations))


def test_rotary_and_dynamic_length():
    """With `num_buckets` given, one model serves any length (padded to chunks)."""
    x = np.random.default_rng(2).normal(size=(2, 10, 8)).astype("float32")
    inputs = keras.Input((None, 8))
    layer = LSHAttention(2, 4, bucket_size=4, num_buckets=4, position_encoding="rotary")
    model = keras.Model(inputs, layer(inputs, inputs, use_causal_mask=True))
    for length in (10, 3):
        out = keras.ops.convert_to_numpy(model(x[:, :length]))
        assert out.shape == (2, length, 8) and np.all(np.isfinite(out))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_hashes": 0}, "num_hashes"),
        ({"bucket_size": 0}, "bucket_size"),
        ({"num_buckets": 3}, "num_buckets"),
        ({"position_encoding": "alibi"}, "position_encoding"),
        ({"num_key_value_heads": 1}, "num_key_value_heads"),
        ({"implementation": "chunked"}, "implementation"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LSHAttention(2, 4, **kwargs)


def test_call_errors():
    x = np.zeros((2, 6, 8), "float32")
    layer = LSHAttention(2, 4, bucket_size=2)
    with pytest.raises(ValueError, match="key"):
        layer(x, x, key=x)
    with pytest.raises(ValueError, match="value"):
        layer(x, np.zeros((2, 5, 8), "float32"))  # cross-attention
    with pytest.raises(ValueError, match="return_attention_scores"):
        layer(x, x, return_attention_scores=True)
    with pytest.raises(ValueError, match="num_buckets"):
        inputs = keras.Input((None, 8))
        LSHAttention(2, 4)(inputs, inputs)
