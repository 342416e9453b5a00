import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.alibi import ALiBi
from keras_attention.testing import run_layer_test


def numpy_alibi(num_heads, query_length, key_length, query_start):
    slopes = 2.0 ** (-8.0 * np.arange(1, num_heads + 1) / num_heads)
    q = query_start + np.arange(query_length)
    distance = np.abs(np.arange(key_length)[None, :] - q[:, None])
    return (-slopes[:, None, None] * distance[None])[None]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_layer_checks():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    run_layer_test(ALiBi, {"num_heads": 4}, [x], expected_output_shape=(1, 4, 5, 5))
    assert not ALiBi(4).weights


def test_hand_checked_slopes():
    np.testing.assert_array_equal(ALiBi(8).slopes, [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32,
                                                    1 / 64, 1 / 128, 1 / 256])
    np.testing.assert_array_equal(ALiBi(4).slopes, [1 / 4, 1 / 16, 1 / 64, 1 / 256])
    np.testing.assert_allclose(ALiBi(3).slopes, 2.0 ** (-8.0 * np.arange(1, 4) / 3), rtol=1e-7)
    assert ALiBi(8).slopes.dtype == np.float32


def test_hand_checked_bias():
    # Two heads (slopes 1/16, 1/256), queries at 1, 2 (bottom-right), keys at 0, 1, 2.
    bias = _np(ALiBi(2).compute_bias(2, 3))
    distance = np.array([[1, 0, 1], [2, 1, 0]], "float32")
    np.testing.assert_allclose(bias, [[-distance / 16, -distance / 256]], atol=1e-7)


def test_golden_against_numpy():
    layer = ALiBi(num_heads=6)
    for t, s, query_start in [(3, 7, None), (3, 7, 0), (4, 2, None)]:
        case = f"t={t}, s={s}, query_start={query_start}"
        bias = layer.compute_bias(t, s, query_start)
        assert keras.backend.standardize_dtype(bias.dtype) == "float32"
        start = s - t if query_start is None else query_start
        np.testing.assert_allclose(_np(bias), numpy_alibi(6, t, s, start), atol=1e-6,
                                   err_msg=case)
        q = np.zeros((2, t, 6, 4), "float32")
        np.testing.assert_allclose(_np(layer.attention_bias(q, s, start, 0.5)),
                                   numpy_alibi(6, t, s, start), atol=1e-6, err_msg=case)


def test_dynamic_length_in_compiled_model():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, ALiBi(num_heads=2)(inputs))
    model.compile(jit_compile=True)
    for length in (3, 5):
        x = np.random.default_rng(length).normal(size=(2, length) + (4,)).astype("float32")
        np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="num_heads=0"):
        ALiBi(num_heads=0)
    with pytest.raises(TypeError, match="num_heads"):
        ALiBi(num_heads="8")
    layer = ALiBi(num_heads=4)
    with pytest.raises(ValueError, match="num_heads=2"):
        layer.check_attention_shapes(2, 8, 8)
    with pytest.raises(ValueError, match=r"inputs.*rank 3.*Received: shape=\(2, 8\)"):
        layer(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="num_heads=4"):
        ALiBi(num_heads=4).build((None, None, 2, 8))
    with pytest.raises(ValueError, match="key_length=0"):
        layer.compute_bias(3, 0)
    with pytest.raises(TypeError, match="query_length"):
        layer.compute_bias(None, 3)
    with pytest.raises(TypeError, match="query_start"):
        layer.compute_bias(3, 3, query_start=0.5)
