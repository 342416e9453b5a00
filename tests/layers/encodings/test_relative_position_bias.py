import math

import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.relative_position_bias import RelativePositionBias
from keras_attention.testing import run_layer_test


def numpy_t5_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """The T5 bucket of each relative position (key minus query), as in the T5 code."""
    rel = np.asarray(relative_position, "int64")
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype("int64") * num_buckets
        n = np.abs(rel)
    else:
        n = np.maximum(-rel, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore", invalid="ignore"):  # n = 0 is small
        large = max_exact + (
            np.log(n.astype("float32") / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        ).astype("int64")
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, n, large)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_layer_checks():
    x = np.random.default_rng(0).normal(size=(2, 6, 4)).astype("float32")
    run_layer_test(RelativePositionBias, {"num_heads": 2, "num_buckets": 8, "max_distance": 16},
                   [x], expected_output_shape=(1, 2, 6, 6))


def test_hand_checked_buckets():
    bidir = RelativePositionBias(num_heads=1)  # 32 buckets, max_distance 128
    rel = np.array([0, -1, 1, -7, -8, 8, -16, -64, -127, -128, -1000, 1000, 16])
    expected = [0, 1, 17, 7, 8, 24, 10, 14, 15, 15, 15, 31, 26]
    np.testing.assert_array_equal(_np(bidir.relative_position_bucket(rel)), expected)
    causal = RelativePositionBias(num_heads=1, bidirectional=False)
    rel = np.array([5, 0, -1, -15, -16, -32, -1000])
    np.testing.assert_array_equal(_np(causal.relative_position_bucket(rel)),
                                  [0, 0, 1, 15, 16, 21, 31])


def test_buckets_golden_against_numpy():
    rel = np.arange(-1500, 1500)
    for bidirectional, num_buckets, max_distance in [(True, 32, 128), (False, 32, 128),
                                                     (True, 8, 20), (False, 6, 10)]:
        layer = RelativePositionBias(1, num_buckets, max_distance, bidirectional)
        expected = numpy_t5_bucket(rel, bidirectional, num_buckets, max_distance)
        np.testing.assert_array_equal(
            _np(layer.relative_position_bucket(rel)), expected,
            err_msg=f"bidirectional={bidirectional}, num_buckets={num_buckets}, "
                    f"max_distance={max_distance}")


def test_compute_bias_golden():
    layer = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16)
    layer.build((None, 5, 6))
    table = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    layer.set_weights([table])
    t, s = 3, 7
    for query_start in (None, 4):
        start = s - t if query_start is None else query_start
        rel = np.arange(s)[None, :] - (start + np.arange(t))[:, None]
        expected = table[numpy_t5_bucket(rel, True, 8, 16)].transpose(2, 0, 1)[None]
        bias = layer.compute_bias(t, s, query_start)
        assert keras.backend.standardize_dtype(bias.dtype) == "float32"
        np.testing.assert_allclose(_np(bias), expected, atol=1e-6,
                                   err_msg=f"query_start={query_start}")
        q = np.zeros((2, t, 3, 4), "float32")
        np.testing.assert_allclose(_np(layer.attention_bias(q, s, start, 0.5)), expected,
                                   atol=1e-6, err_msg=f"query_start={query_start}")


def test_compute_bias_builds_on_first_use():
    bias = RelativePositionBias(num_heads=4).compute_bias(5, 7)
    assert tuple(bias.shape) == (1, 4, 5, 7)


def test_dynamic_length_in_compiled_model():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, RelativePositionBias(num_heads=2)(inputs))
    model.compile(jit_compile=True)
    for length in (3, 5):
        x = np.random.default_rng(length).normal(size=(2, length) + (4,)).astype("float32")
        np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="num_heads=0"):
        RelativePositionBias(num_heads=0)
    with pytest.raises(TypeError, match="num_buckets"):
        RelativePositionBias(2, num_buckets=8.0)
    with pytest.raises(ValueError, match="num_buckets=3"):
        RelativePositionBias(2, num_buckets=3)
    with pytest.raises(ValueError, match="num_buckets=1"):
        RelativePositionBias(2, num_buckets=1, bidirectional=False)
    with pytest.raises(ValueError, match="max_distance=8"):
        RelativePositionBias(2, num_buckets=32, max_distance=8)
    with pytest.raises(TypeError, match="bidirectional"):
        RelativePositionBias(2, bidirectional="yes")
    layer = RelativePositionBias(num_heads=2)
    with pytest.raises(ValueError, match="num_heads=4"):
        layer.check_attention_shapes(4, 8, 8)
    with pytest.raises(ValueError, match=r"inputs.*rank 3.*Received: shape=\(2, 8\)"):
        layer(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="num_heads=2"):
        RelativePositionBias(num_heads=2).build((None, None, 3, 4))
    with pytest.raises(ValueError, match="query_length=0"):
        layer.compute_bias(0, 4)
    with pytest.raises(TypeError, match="key_length"):
        layer.compute_bias(3, 4.0)
    with pytest.raises(ValueError, match="query_start"):
        layer.compute_bias(3, 4, query_start=np.array([1, 2], "int32"))
