import keras
import numpy as np
import pytest

from keras_attention.layers import FeedForward
from keras_attention.testing import assert_all_close, run_layer_test
from tests.layers.blocks.numpy_reference import feed_forward, set_random_weights


@pytest.mark.parametrize(
    "kwargs",
    [
        {"intermediate_dim": 16, "activation": "relu"},
        {"intermediate_dim": 12, "activation": "gelu", "output_dim": 5, "dropout": 0.1},
        {"intermediate_dim": 16, "activation": "swiglu", "use_bias": False},
    ],
    ids=["relu", "gelu-output_dim", "swiglu-nobias"],
)
def test_layer_checks(kwargs):
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    out_dim = kwargs.get("output_dim") or 8
    run_layer_test(FeedForward, kwargs, [x], expected_output_shape=(2, 5, out_dim))


@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_golden_against_numpy(activation, use_bias):
    x = np.random.default_rng(1).normal(size=(2, 4, 6)).astype("float32")
    layer = FeedForward(10, activation=activation, use_bias=use_bias, output_dim=3)
    layer.build(x.shape)
    weights = set_random_weights(layer, seed=2)
    expected_count = 3 if activation == "swiglu" else 2
    assert len(layer.weights) == expected_count * (2 if use_bias else 1)
    expected = feed_forward(x, weights, "", activation, use_bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


def test_swiglu_hand_set_weights():
    """silu(x W) * (x V) W2 with identity-like weights, checked by hand."""
    layer = FeedForward(2, activation="swiglu", use_bias=False)
    x = np.array([[[1.0, -2.0]]], "float32")
    layer.build(x.shape)
    layer._gate_dense.set_weights([np.eye(2, dtype="float32")])
    layer._intermediate_dense.set_weights([2.0 * np.eye(2, dtype="float32")])
    layer._output_dense.set_weights([np.array([[1.0, 0.0], [1.0, 1.0]], "float32")])
    silu = x / (1.0 + np.exp(-x))
    hidden = silu * (2.0 * x)  # (1, 1, 2)
    expected = np.stack([hidden[..., 0] + hidden[..., 1], hidden[..., 1]], -1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-6)


def test_keras_mask_passes_through():
    tokens = np.array([[3, 1, 0], [2, 0, 0]])
    inp = keras.Input((3,), dtype="int32")
    h = keras.layers.Embedding(5, 4, mask_zero=True)(inp)
    out = FeedForward(8)(h)
    assert out._keras_mask is not None
    mask = keras.ops.convert_to_numpy(keras.Model(inp, out._keras_mask)(tokens))
    np.testing.assert_array_equal(mask, tokens != 0)


def test_dropout_only_in_training():
    x = np.random.default_rng(3).normal(size=(2, 4, 6)).astype("float32")
    layer = FeedForward(32, dropout=0.5, seed=1)
    inference = layer(x)
    assert_all_close(layer(x, training=False), inference, 1e-6, 1e-6, "inference")
    trained = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(inference))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"intermediate_dim": 0}, ValueError, "intermediate_dim"),
        ({"intermediate_dim": 2.5}, TypeError, "intermediate_dim"),
        ({"intermediate_dim": 4, "activation": "tanh"}, ValueError, "activation"),
        ({"intermediate_dim": 4, "dropout": 1.0}, ValueError, "dropout"),
        ({"intermediate_dim": 4, "output_dim": 0}, ValueError, "output_dim"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        FeedForward(**kwargs)


def test_build_errors():
    with pytest.raises(ValueError, match="inputs"):
        FeedForward(4)(np.zeros((3,), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        FeedForward(4).build((2, 5, None))
