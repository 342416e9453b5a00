import numpy as np
import pytest

from tests.zoo.forecaster.conftest import daily_series
from zoo.forecaster.forecaster import load_forecaster
from zoo.serving import run_saved_model


def test_saved_model_serves_like_python(tiny_checkpoint, tmp_path):
    forecaster = load_forecaster(tiny_checkpoint)
    path = forecaster.export(tmp_path / "saved")
    times, values = daily_series(48)
    batch = np.stack([values, values * 1.5]).astype("float32")
    ends = [int(times[-1]), int(times[-1]) + 3600]
    served = run_saved_model(path, {"history": batch, "end_time": ends})
    expected = forecaster.forecast(batch, end_time=ends)
    assert set(served) == {"forecast", "p10", "p50", "p90"}
    np.testing.assert_allclose(served["forecast"], expected.point, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served["p10"], expected.p10, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served["p90"], expected.p90, rtol=1e-4, atol=1e-4)


@pytest.mark.large
def test_saved_model_horizon_signature(tiny_checkpoint, tmp_path):
    forecaster = load_forecaster(tiny_checkpoint)
    path = forecaster.export(tmp_path / "saved")
    times, values = daily_series(48)
    inputs = {"history": values[None].astype("float32"), "end_time": [int(times[-1])]}
    short = run_saved_model(path, inputs, signature="horizon_6")
    expected = forecaster.forecast(values, end_time=int(times[-1]), horizon=6)
    np.testing.assert_allclose(short["forecast"][0], expected.point, rtol=1e-4, atol=1e-4)


def test_export_needs_tensorflow_backend(tiny_checkpoint, tmp_path, monkeypatch):
    from zoo.forecaster import export

    forecaster = load_forecaster(tiny_checkpoint)
    monkeypatch.setattr(export.keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend"):
        export.export_saved_model(forecaster, tmp_path / "x")
