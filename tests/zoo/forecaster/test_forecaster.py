import datetime

import numpy as np
import pytest

import zoo
from tests.zoo.forecaster.conftest import daily_series, write_tiny_checkpoint
from zoo import checkpoint
from zoo.forecaster.forecaster import (
    attention_rollout,
    load_forecaster,
    to_unix_seconds,
)


@pytest.fixture(scope="module")
def forecaster(tiny_checkpoint):
    return load_forecaster(tiny_checkpoint)


def test_forecast_shapes_times_and_quantile_order(forecaster):
    times, values = daily_series(60)
    assert forecaster.horizons == (6, 12) and forecaster.lookback == 48
    result = forecaster.forecast(values, end_time=int(times[-1]))
    assert result.point.shape == (12, 2) and result.quantiles.shape == (12, 2, 3)
    assert np.asarray(result).shape == (12, 2)
    assert result.quantile_levels == (0.1, 0.5, 0.9) and result.channels == ("load", "temp")
    assert result.timestamps.tolist() == [int(times[-1]) + 3600 * k for k in range(1, 13)]
    assert np.all(result.p10 <= result.p50) and np.all(result.p50 <= result.p90)
    short = forecaster.forecast(values, end_time=int(times[-1]), horizon=6)
    assert short.point.shape == (6, 2)


def test_forecast_uses_last_lookback_steps_and_batches(forecaster):
    times, values = daily_series(80)
    end = int(times[-1])
    a = forecaster.forecast(values, end_time=end).point
    b = forecaster.forecast(values[-48:], end_time=end).point
    np.testing.assert_allclose(a, b, rtol=1e-5)
    batch = forecaster.forecast(np.stack([values, values + 1]), end_time=[end, end])
    assert batch.point.shape == (2, 12, 2) and batch.timestamps.shape == (2, 12)
    np.testing.assert_allclose(batch.point[0], a, rtol=1e-5, atol=1e-5)
    as_text = forecaster.forecast(values, end_time="2014-05-16 08:00:00").point
    as_datetime = forecaster.forecast(
        values, end_time=datetime.datetime(2014, 5, 16, 8)).point
    np.testing.assert_allclose(as_text, as_datetime)


def test_forecast_fills_missing_values(forecaster):
    times, values = daily_series(48)
    holes = values.copy()
    holes[10, 0] = np.nan
    holes[20:22, 1] = np.nan
    result = forecaster.forecast(holes, end_time=int(times[-1]))
    assert result.filled == 3 and np.all(np.isfinite(result.point))
    # Without an end time the model forecasts without calendar features.
    assert forecaster.forecast(values).timestamps is None


def test_forecast_errors(forecaster):
    _, values = daily_series(48)
    with pytest.raises(ValueError, match="at least 48 time steps .* Received: 40 steps"):
        forecaster.forecast(values[:40])
    with pytest.raises(ValueError, match=r"2 channel\(s\) \(load, temp\)"):
        forecaster.forecast(values[:, :1])
    with pytest.raises(ValueError, match="horizons \\[6, 12\\]. Received: horizon=24"):
        forecaster.forecast(values, horizon=24)
    with pytest.raises(ValueError, match="end_time"):
        forecaster.forecast(values, end_time="soon")
    with pytest.raises(ValueError, match="one time per history"):
        forecaster.forecast(values, end_time=[1, 2])
    empty = values.copy()
    empty[:, 1] = np.nan
    with pytest.raises(ValueError, match="no value in the last 48 steps of channel 'temp'"):
        forecaster.forecast(empty)
    with pytest.raises(ValueError, match="history"):
        forecaster.forecast(np.zeros((1, 1, 48, 2)))


def test_attention_maps(forecaster):
    times, values = daily_series(48)
    maps = forecaster.attention_maps(values, end_time=int(times[-1]), horizon=6)
    assert maps.weights.shape == (2, 2, 2, 7, 7)  # (C, layers, heads, N, N)
    assert maps.rollout.shape == (2, 7, 7) and maps.importance.shape == (2, 7)
    np.testing.assert_allclose(maps.importance.sum(-1), 1.0, atol=1e-5)
    assert maps.patch_end_offsets.tolist() == [40, 32, 24, 16, 8, 0, 0]
    assert maps.patch_end_times[0] == int(times[-1]) - 40 * 3600
    with pytest.raises(ValueError, match="one history"):
        forecaster.attention_maps(values[None])


def test_attention_rollout_golden():
    # One layer, one head: rollout = rows of 0.5 * A + 0.5 * I.
    a = np.array([[[[0.0, 1.0], [1.0, 0.0]]]])
    np.testing.assert_allclose(attention_rollout(a), [[0.5, 0.5], [0.5, 0.5]])
    two = np.concatenate([a, np.array([[[[1.0, 0.0], [0.0, 1.0]]]])], axis=0)
    np.testing.assert_allclose(attention_rollout(two), [[0.5, 0.5], [0.5, 0.5]])


def test_to_unix_seconds():
    assert to_unix_seconds("1970-01-02") == 86400
    assert to_unix_seconds(np.datetime64("1970-01-01T01:00")) == 3600
    with pytest.raises(TypeError):
        to_unix_seconds(True)


def test_zoo_load_and_corrupt_checkpoint(tmp_path):
    directory = write_tiny_checkpoint(tmp_path / "forecaster_electricity", horizons=(6,))
    model = zoo.load("forecaster_electricity", directory=directory)
    assert model.horizons == (6,) and model.target == "load"
    with open(directory / "h6.weights.h5", "ab") as f:
        f.write(b"x")
    with pytest.raises(checkpoint.CheckpointError,
                       match="python -m recipes.train_forecaster --dataset=electricity"):
        zoo.load("forecaster_electricity", directory=directory)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        zoo.load("forecaster_traffic", directory=tmp_path / "nothing")


def test_manifest_without_forecaster_block(tmp_path):
    directory = checkpoint.write_checkpoint(tmp_path / "bad", {}, {"name": "bad", "config": {}})
    with pytest.raises(checkpoint.CheckpointError, match="cannot build the forecaster"):
        load_forecaster(directory)
