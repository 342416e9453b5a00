import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.rotary_embedding import RotaryEmbedding
from keras_attention.testing import run_layer_test


def numpy_rotary(x, start=0, base=10000.0):
    """RoFormer eq. (34): pairs (x[2i], x[2i+1]) rotated by p * base^(-2i/H)."""
    b, t, n, h = x.shape
    out = np.empty_like(x, dtype="float64")
    for p in range(t):
        for i in range(h // 2):
            theta = (start + p) * base ** (-2 * i / h)
            c, s = np.cos(theta), np.sin(theta)
            x0, x1 = x[:, p, :, 2 * i], x[:, p, :, 2 * i + 1]
            out[:, p, :, 2 * i] = x0 * c - x1 * s
            out[:, p, :, 2 * i + 1] = x0 * s + x1 * c
    return out


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_layer_checks():
    run_layer_test(RotaryEmbedding, {"base": 500}, [_normal((2, 6, 3, 8))], {"start_index": 3},
                   expected_output_shape=(2, 6, 3, 8))


def test_golden_against_numpy():
    x = _normal((2, 5, 3, 6))
    for start, base in [(0, 10000), (7, 10000), (2, 100)]:
        out = RotaryEmbedding(base=base)(x, start_index=start)
        np.testing.assert_allclose(_np(out), numpy_rotary(x, start, base), atol=1e-5,
                                   err_msg=f"start={start}, base={base}")


def test_hand_values():
    # One head of size 2 is a single pair, rotated by p radians.
    x = np.zeros((1, 3, 1, 2), "float32")
    x[..., 0] = 1.0
    out = _np(RotaryEmbedding()(x))[0, :, 0]
    np.testing.assert_allclose(out, [[1, 0], [np.cos(1), np.sin(1)], [np.cos(2), np.sin(2)]],
                               atol=1e-6)


def test_rotation_preserves_the_norm():
    x = _normal((2, 7, 2, 8))
    out = _np(RotaryEmbedding()(x, start_index=11))
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)


def test_dot_products_depend_only_on_the_offset():
    q, k = _normal((1, 6, 2, 8), 1), _normal((1, 6, 2, 8), 2)
    rope = RotaryEmbedding()
    dots = []
    for start in (0, 5):
        rq, rk = rope.transform_query_key(q, k, start, start)
        dots.append(np.einsum("btnh,bsnh->bnts", _np(rq), _np(rk)))
    np.testing.assert_allclose(dots[0], dots[1], atol=1e-4)
    # ... and they do depend on positions: unrotated dot products differ.
    assert not np.allclose(dots[0], np.einsum("btnh,bsnh->bnts", q, k), atol=1e-2)


def test_transform_query_key_uses_both_starts():
    q, k = _normal((2, 2, 2, 4), 3), _normal((2, 5, 1, 4), 4)
    rq, rk = RotaryEmbedding().transform_query_key(q, k, 3, 0)
    np.testing.assert_allclose(_np(rq), numpy_rotary(q, 3), atol=1e-5)
    np.testing.assert_allclose(_np(rk), numpy_rotary(k, 0), atol=1e-5)


def test_tensor_start_index_matches_int():
    x = _normal((2, 3, 2, 4))
    rope = RotaryEmbedding()
    np.testing.assert_allclose(_np(rope(x, start_index=keras.ops.convert_to_tensor(9))),
                               _np(rope(x, start_index=9)), atol=1e-6)


def test_large_positions_keep_precision_under_mixed_bfloat16():
    x = np.ones((1, 4, 1, 8), "float32")
    out = RotaryEmbedding(dtype="mixed_bfloat16")(x, start_index=3000)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(_np(keras.ops.cast(out, "float32")), numpy_rotary(x, 3000),
                               atol=2e-2)


def test_dynamic_length_in_compiled_model():
    inputs = keras.Input((None, 2, 4))
    model = keras.Model(inputs, RotaryEmbedding()(inputs))
    model.compile(jit_compile=True)
    for length in (3, 5):
        x = np.random.default_rng(length).normal(size=(2, length) + (2, 4)).astype("float32")
        np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="base=-1"):
        RotaryEmbedding(base=-1)
    with pytest.raises(TypeError, match="base"):
        RotaryEmbedding(base=None)
    with pytest.raises(ValueError, match=r"inputs.*rank 4.*Received: shape=\(2, 5, 8\)"):
        RotaryEmbedding()(np.zeros((2, 5, 8), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*even head_dim.*Received: shape=\(2, 5, 2, 3\)"):
        RotaryEmbedding()(np.zeros((2, 5, 2, 3), "float32"))
    x = np.zeros((2, 5, 2, 4), "float32")
    with pytest.raises(TypeError, match="start_index"):
        RotaryEmbedding()(x, start_index=1.5)
    with pytest.raises(ValueError, match="start_index"):
        RotaryEmbedding()(x, start_index=np.array([1, 2], "int32"))
