import numpy as np
import pytest

from zoo.forecaster import baselines


def test_seasonal_naive_repeats_the_last_period():
    history = np.arange(10, dtype=float)  # ..., 6, 7, 8, 9
    np.testing.assert_array_equal(baselines.seasonal_naive(history, 5, 3), [7, 8, 9, 7, 8])
    np.testing.assert_array_equal(baselines.seasonal_naive(history, 2, 10), [0, 1])
    batch = np.stack([history, history + 100])[..., None]  # (2, 10, 1)
    out = baselines.seasonal_naive(batch, 4, 4)
    assert out.shape == (2, 4, 1)
    np.testing.assert_array_equal(out[1, :, 0], [106, 107, 108, 109])
    with pytest.raises(ValueError, match="period"):
        baselines.seasonal_naive(history, 3, 11)


def test_moving_average_matches_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 30, 3))
    k = 5
    padded = np.concatenate([np.repeat(x[:, :1], 2, 1), x, np.repeat(x[:, -1:], 2, 1)], 1)
    expected = np.stack([padded[:, i:i + k].mean(1) for i in range(30)], 1)
    np.testing.assert_allclose(baselines.moving_average(x, k), expected, atol=1e-12)


def test_dlinear_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    lookback, horizon = 24, 6
    weights = rng.normal(size=(lookback, horizon)) / lookback
    x = rng.normal(size=(400, lookback, 2))
    y = np.einsum("nlc,lh->nhc", x, weights) + 0.5
    model = baselines.DLinear(lookback, horizon, kernel_size=5,
                              ridge_penalties=(1e-9, 1e-3)).fit(x[:300], y[:300], x[300:], y[300:])
    assert model.ridge_penalty == 1e-9
    np.testing.assert_allclose(model.predict(x[300:]), y[300:], atol=1e-4)


def test_dlinear_errors():
    model = baselines.DLinear(8, 2)
    with pytest.raises(ValueError, match="fit"):
        model.predict(np.zeros((1, 8, 1)))
    with pytest.raises(ValueError, match=r"shape \(batch, 8, channels\)"):
        model.fit(np.zeros((4, 7, 1)), np.zeros((4, 2, 1)))
