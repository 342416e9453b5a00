import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.sinusoidal_position_encoding import (
    SinusoidalPositionEncoding,
)
from keras_attention.testing import run_layer_test


def numpy_sinusoid(positions, depth, base=10000.0):
    """Reference table: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(...)."""
    table = np.zeros((len(positions), depth))
    for j in range(depth):
        i = j // 2
        angle = np.asarray(positions, "float64") / base ** (2 * i / depth)
        table[:, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


def test_layer_checks():
    x = np.random.default_rng(0).normal(size=(2, 5, 7)).astype("float32")
    run_layer_test(SinusoidalPositionEncoding, {"base": 100}, [x], {"start_index": 3},
                   expected_output_shape=(1, 5, 7))


def test_golden_against_numpy():
    for features, start, base in [(8, 0, 10000), (7, 4, 10000), (6, 2, 50)]:
        x = np.zeros((2, 5, features), "float32")
        out = SinusoidalPositionEncoding(base=base)(x, start_index=start)
        expected = numpy_sinusoid(np.arange(start, start + 5), features, base)[None]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-5,
                                   err_msg=f"features={features}, start={start}, base={base}")


def test_hand_values():
    out = keras.ops.convert_to_numpy(SinusoidalPositionEncoding()(np.zeros((1, 2, 4))))
    # p = 0: sin 0, cos 0, ...; p = 1: sin(1), cos(1), sin(1/100), cos(1/100).
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(out[0, 1], [np.sin(1), np.cos(1), np.sin(0.01), np.cos(0.01)],
                               atol=1e-6)


def test_tensor_start_index_matches_int():
    x = np.zeros((2, 3, 6), "float32")
    layer = SinusoidalPositionEncoding()
    a = layer(x, start_index=7)
    b = layer(x, start_index=keras.ops.convert_to_tensor(7))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_large_positions_keep_precision_under_mixed_float16():
    x = np.zeros((1, 4, 8), "float32")
    out = SinusoidalPositionEncoding(dtype="mixed_float16")(x, start_index=5000)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    expected = numpy_sinusoid(np.arange(5000, 5004), 8)[None]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out).astype("float32"), expected,
                               atol=2e-3)


def test_dynamic_length_in_compiled_model():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, SinusoidalPositionEncoding()(inputs))
    model.compile(jit_compile=True)
    for length in (3, 5):
        x = np.random.default_rng(length).normal(size=(2, length) + (4,)).astype("float32")
        np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="base"):
        SinusoidalPositionEncoding(base=0)
    with pytest.raises(TypeError, match="base"):
        SinusoidalPositionEncoding(base="10000")
    layer = SinusoidalPositionEncoding()
    with pytest.raises(ValueError, match=r"inputs.*rank 3.*Received: shape=\(2, 8\)"):
        layer(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        SinusoidalPositionEncoding().build((2, 5, None))
    x = np.zeros((2, 5, 4), "float32")
    with pytest.raises(ValueError, match="start_index=-1"):
        layer(x, start_index=-1)
    with pytest.raises(TypeError, match="start_index"):
        layer(x, start_index=1.5)
    with pytest.raises(ValueError, match="start_index"):
        layer(x, start_index=keras.ops.convert_to_tensor([1, 2]))
    with pytest.raises(TypeError, match="start_index"):
        layer(x, start_index=keras.ops.convert_to_tensor(1.0))
