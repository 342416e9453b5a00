import calendar
import datetime

import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.time2vec import Time2Vec
from keras_attention.testing import run_layer_test


def numpy_time2vec(tau, kernel, bias):
    z = tau[..., None] * kernel + bias
    return np.concatenate([z[..., :1], np.sin(z[..., 1:])], axis=-1)


def python_calendar_features(timestamps):
    """Reference from the standard library's calendar arithmetic."""
    rows = []
    for t in np.ravel(timestamps):
        d = datetime.datetime.fromtimestamp(int(t), tz=datetime.timezone.utc)
        day = (d.hour * 3600 + d.minute * 60 + d.second) / 86400
        week = (d.weekday() + day) / 7
        year = (d.timetuple().tm_yday - 1 + day) / (366 if calendar.isleap(d.year) else 365)
        rows.append([f(2 * np.pi * x) for x in (day, week, year) for f in (np.sin, np.cos)])
    return np.array(rows).reshape(np.shape(timestamps) + (6,))


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_layer_checks():
    tau = np.random.default_rng(0).uniform(0, 3, size=(2, 6, 1)).astype("float32")
    run_layer_test(Time2Vec, {"kernel_size": 4}, [tau], expected_output_shape=(2, 6, 4))


def test_golden_against_numpy():
    rng = np.random.default_rng(1)
    tau = rng.uniform(-5, 5, size=(2, 5)).astype("float32")
    layer = Time2Vec(kernel_size=5)
    layer(tau)
    kernel, bias = rng.normal(size=(2, 5)).astype("float32")
    layer.set_weights([kernel, bias])
    expected = numpy_time2vec(tau.astype("float64"), kernel, bias)
    np.testing.assert_allclose(_np(layer(tau)), expected, atol=1e-5)
    np.testing.assert_allclose(_np(layer(tau[..., None])), expected, atol=1e-5)


def test_hand_values():
    layer = Time2Vec(kernel_size=3)
    layer.build((None, None, 1))
    layer.set_weights([np.array([2.0, 1.0, 0.5]), np.array([1.0, 0.0, np.pi / 2])])
    out = _np(layer(np.array([[[0.0], [np.pi]]], "float32")))
    # tau = 0: [1, sin 0, sin(pi/2)]; tau = pi: [2 pi + 1, sin pi, sin pi].
    np.testing.assert_allclose(out[0], [[1, 0, 1], [2 * np.pi + 1, 0, 0]], atol=1e-6)


def test_time_keeps_precision_under_mixed_float16():
    """1000.25 is not a float16 number; the layer does not cast its input."""
    tau = np.full((1, 1, 1), 1000.25, "float32")
    layer = Time2Vec(kernel_size=2, dtype="mixed_float16")
    layer(tau)
    layer.set_weights([np.array([0.001, 1.0]), np.zeros(2)])
    out = layer(tau)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(_np(out).astype("float32")[0, 0],
                               [1.00025, np.sin(1000.25)], atol=2e-3)


def test_calendar_features_golden():
    special = [0, -1, 6 * 3600, 951782400, 951868800, 978220800, 978307200, 1700000000,
               -2000000000, 2147483647, -2147483648, 68169600]  # leap days, year ends
    rng = np.random.default_rng(2)
    ts = np.array(special + list(rng.integers(-2**31, 2**31 - 1, size=200)), "int32")
    out = Time2Vec.calendar_features(ts)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(_np(out), python_calendar_features(ts), atol=1e-4)
    # By hand: 1970-01-01 06:00 UTC, a Thursday, is a quarter day into weekday 3.
    week, year = (3 + 0.25) / 7, 0.25 / 365
    np.testing.assert_allclose(
        _np(out)[2], [1, 0, np.sin(2 * np.pi * week), np.cos(2 * np.pi * week),
                      np.sin(2 * np.pi * year), np.cos(2 * np.pi * year)], atol=1e-5)


def test_calendar_features_of_float_seconds():
    ts = np.array([[1700000000.0, 951782400.0, -86400.5]])
    expected = python_calendar_features(np.floor(ts))
    np.testing.assert_allclose(_np(Time2Vec.calendar_features(ts)), expected, atol=2e-2)


def test_dynamic_length_in_compiled_model():
    inputs = keras.Input((None, 1))
    model = keras.Model(inputs, Time2Vec(kernel_size=3)(inputs))
    model.compile(jit_compile=True)
    for length in (3, 5):
        x = np.random.default_rng(length).normal(size=(2, length) + (1,)).astype("float32")
        np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="kernel_size=0"):
        Time2Vec(kernel_size=0)
    with pytest.raises(TypeError, match="kernel_size"):
        Time2Vec(kernel_size=4.0)
    with pytest.raises(ValueError, match=r"inputs.*Received: shape=\(2, 5, 3\)"):
        Time2Vec(4)(np.zeros((2, 5, 3), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*Received: shape=\(2, 5, 1, 1\)"):
        Time2Vec(4)(np.zeros((2, 5, 1, 1), "float32"))
    built = Time2Vec(4)
    built(np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*Received: shape=\(2, 5, 2\)"):
        built(np.zeros((2, 5, 2), "float32"))
    with pytest.raises(TypeError, match="timestamps"):
        Time2Vec.calendar_features(np.array([True, False]))
