import numpy as np
import pytest

from zoo.forecaster import metrics


def test_point_metrics_skip_missing_targets():
    forecast = np.array([[1.0, 2.0, 3.0]])
    target = np.array([[2.0, 2.0, 100.0]])
    observed = np.array([[True, True, False]])
    result = metrics.point_metrics(forecast, target, observed, std=10.0)
    assert result == pytest.approx({"mse": 0.5, "mae": 0.5, "mae_original": 5.0})
    assert metrics.mae(forecast, target) == pytest.approx(98 / 3)
    with pytest.raises(ValueError, match="all are missing"):
        metrics.mse(forecast, target, np.zeros_like(observed))


def test_coverage():
    target = np.array([0.0, 1.0, 2.0, 3.0])
    assert metrics.coverage(np.full(4, 0.5), np.full(4, 2.0), target) == 0.5
    observed = np.array([False, True, True, True])
    assert metrics.coverage(np.full(4, 0.5), np.full(4, 2.0), target, observed) == pytest.approx(2 / 3)


def test_pinball_golden_values():
    # target 1; quantiles 0, 1, 3 at levels 0.1, 0.5, 0.9:
    # 0.1 * (1 - 0) = 0.1; 0; (0.9 - 1) * (1 - 3) = 0.2  -> mean 0.1
    q = np.array([[[0.0, 1.0, 3.0]]])
    y = np.array([[1.0]])
    assert metrics.pinball_numpy(q, y) == pytest.approx(0.1)
    loss = np.asarray(metrics.pinball_loss(y.astype("float32"), q.astype("float32")))
    np.testing.assert_allclose(loss, [0.1], rtol=1e-6)


def test_pinball_loss_matches_numpy():
    rng = np.random.default_rng(0)
    q = np.sort(rng.normal(size=(4, 6, 2, 3)), axis=-1).astype("float32")
    y = rng.normal(size=(4, 6, 2)).astype("float32")
    per_sample = np.asarray(metrics.pinball_loss(y, q))
    expected = [metrics.pinball_numpy(q[i], y[i]) for i in range(4)]
    np.testing.assert_allclose(per_sample, expected, rtol=1e-5)
