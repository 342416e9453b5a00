import keras
import numpy as np
import pytest

from keras_attention.layers import Time2Vec
from keras_attention.testing import run_layer_test
from zoo.forecaster.forecast_head import ForecastHead
from zoo.forecaster.instance_normalization import InstanceNormalization
from zoo.forecaster.patch_embedding import PatchEmbedding, patch_layout


def test_instance_normalization_layer_checks():
    x = np.random.default_rng(0).normal(3.0, 2.0, (2, 12, 3)).astype("float32")
    run_layer_test(InstanceNormalization, {"epsilon": 1e-5}, [x],
                   expected_output_shape=(2, 12, 3), run_training=False)


@pytest.mark.parametrize("scale", [True, False])
def test_instance_normalization_golden(scale):
    x = np.random.default_rng(1).normal(5.0, 3.0, (2, 20, 2)).astype("float32")
    x[1, :, 1] = 4.0  # a constant channel gives zeros, not NaN
    z, loc, spread = (np.asarray(t) for t in InstanceNormalization(scale=scale)(x))
    mean = x.mean(axis=1, keepdims=True)
    std = np.sqrt(x.var(axis=1, keepdims=True) + 1e-5) if scale else np.ones_like(mean)
    np.testing.assert_allclose(loc, mean, rtol=1e-5)
    np.testing.assert_allclose(spread, std, rtol=1e-5)
    np.testing.assert_allclose(z, (x - mean) / std, atol=1e-4)
    assert np.all(np.isfinite(z)) and np.all(z[1, :, 1] == 0)


def test_instance_normalization_errors():
    with pytest.raises(ValueError, match="epsilon"):
        InstanceNormalization(epsilon=0)
    with pytest.raises(ValueError, match=r"rank 3 .* Received: shape=\(2, 5\)"):
        InstanceNormalization()(np.zeros((2, 5), "float32"))


def test_patch_layout():
    num, starts = patch_layout(336, 16, 8)
    assert num == 42 and starts[-1] == 328  # the last patch covers the 8 padded steps
    assert patch_layout(48, 8, 8)[0] == 7


def _embedding_inputs(batch=2, lookback=48, channels=3):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(batch, lookback, channels)).astype("float32"),
            np.array([1_400_000_400, 1_500_000_400][:batch], "int64"),
            np.ones((batch,), "float32")]


def test_patch_embedding_shapes_config_and_patches():
    layer = PatchEmbedding(48, 8, 8, 16, time2vec_dim=4)
    inputs = _embedding_inputs()
    tokens = np.asarray(layer(inputs))
    assert tokens.shape == (6, 7, 16)
    revived = PatchEmbedding.from_config(layer.get_config())
    assert revived.get_config() == layer.get_config()
    # Token of (batch 1, channel 2, patch 0) = projection of that patch + time token.
    kernel, bias = (np.asarray(w) for w in layer.value_projection.weights)
    patch = inputs[0][1, 0:8, 2]
    calendar = np.asarray(Time2Vec.calendar_features(layer.patch_end_times(inputs[1])))[1, 0]
    position = np.asarray(layer.time2vec(np.array([[[-40 / 24]]], "float32")))[0, 0]
    t_kernel, t_bias = (np.asarray(w) for w in layer.time_projection.weights)
    expected = patch @ kernel + bias + np.concatenate([calendar, position]) @ t_kernel + t_bias
    np.testing.assert_allclose(tokens[1 * 3 + 2, 0], expected, atol=1e-4)


def test_patch_embedding_end_times_and_unknown_time():
    layer = PatchEmbedding(48, 8, 8, 4)
    ends = np.asarray(layer.patch_end_times(np.array([1_000_000], "int64")))
    assert ends[0].tolist() == [1_000_000 - 3600 * k for k in (40, 32, 24, 16, 8, 0, 0)]
    series, end, _ = _embedding_inputs(1, 48, 1)
    a = np.asarray(layer([series, end, np.zeros((1,), "float32")]))
    b = np.asarray(layer([series, end + 86400 * 3, np.zeros((1,), "float32")]))
    np.testing.assert_allclose(a, b)  # without known times the calendar is ignored


def test_patch_embedding_errors():
    with pytest.raises(ValueError, match="patch_len"):
        PatchEmbedding(8, 16, 8, 4)
    with pytest.raises(ValueError, match="stride"):
        PatchEmbedding(48, 8, 12, 4)
    with pytest.raises(ValueError, match="lookback"):
        PatchEmbedding(0, 8, 8, 4)
    with pytest.raises(ValueError, match=r"shape \(batch, 48, channels\)"):
        PatchEmbedding(48, 8, 8, 4)(_embedding_inputs(lookback=40))


def test_forecast_head_quantiles_ordered_and_denormalised():
    head = ForecastHead(horizon=5, quantile_rank=4)
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(6, 7, 8)).astype("float32")
    head.build([tokens.shape, (2, 1, 3), (2, 1, 3)])
    head.quantile_projection.kernel.assign(rng.normal(size=(4, 15)).astype("float32"))
    zeros, ones = np.zeros((2, 1, 3), "float32"), np.ones((2, 1, 3), "float32")
    point, q = (np.asarray(t) for t in head([tokens, zeros, ones]))
    assert point.shape == (2, 5, 3) and q.shape == (2, 5, 3, 3)
    assert np.all(np.diff(q, axis=-1) >= 0)
    loc = np.full((2, 1, 3), 7.0, "float32")
    point2, q2 = (np.asarray(t) for t in head([tokens, loc, 2 * ones]))
    np.testing.assert_allclose(point2, 2 * point + 7, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q2, 2 * q + 7, rtol=1e-5, atol=1e-5)
    # Row b * C + c of the tokens is channel c of batch row b.
    flat = tokens.reshape(6, -1)
    kernel, bias = (np.asarray(w) for w in head.point_projection.weights)
    np.testing.assert_allclose(point[1, :, 2], flat[5] @ kernel + bias, atol=1e-4)
    assert ForecastHead.from_config(head.get_config()).get_config() == head.get_config()


def test_forecast_head_errors():
    with pytest.raises(ValueError, match="num_quantiles"):
        ForecastHead(4, num_quantiles=2)
    with pytest.raises(ValueError, match="horizon"):
        ForecastHead(0)
    with pytest.raises(ValueError, match="tokens"):
        ForecastHead(4)([keras.ops.zeros((2, 8)), keras.ops.zeros((2, 1, 1)),
                         keras.ops.ones((2, 1, 1))])
