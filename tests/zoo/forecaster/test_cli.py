import csv

import numpy as np
import pytest

from tests.zoo.forecaster.conftest import series_csv, write_csv
from zoo import cli
from zoo.forecaster.forecaster import load_forecaster


def _run(capsys, *args):
    code = cli.main(["forecast", *args])
    return code, capsys.readouterr()


def test_forecast_command_writes_csv_and_plot(tiny_checkpoint, tmp_path, capsys):
    source = series_csv(tmp_path / "in.csv", 100, ("demand", "temp"))
    out, png = tmp_path / "out.csv", tmp_path / "out.png"
    # No --time_column: the first column (ts) is the time.
    code, streams = _run(capsys, f"--checkpoint={tiny_checkpoint}", f"--input={source}",
                         "--target=demand", f"--output={out}", f"--plot={png}", "--horizon=6")
    assert code == 0, streams.err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    # The columns are named after the input's columns, not the model's channels.
    assert list(rows[0]) == ["time", "demand", "demand_p10", "demand_p50", "demand_p90",
                             "temp", "temp_p10", "temp_p50", "temp_p90"]
    assert rows[0]["time"] == "2014-05-17 21:00:00"  # one step after the last row
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Same numbers as the Python API.
    forecaster = load_forecaster(tiny_checkpoint)
    from zoo.forecaster import data

    series = data.read_csv(source, "ts", "demand", "temp")
    expected = forecaster.forecast(series.values, end_time=int(series.timestamps[-1]), horizon=6)
    np.testing.assert_allclose([float(r["demand"]) for r in rows], expected.point[:, 0],
                               rtol=1e-4)


def test_forecast_command_errors(tiny_checkpoint, tmp_path, capsys):
    source = series_csv(tmp_path / "in.csv", 100, ("load", "temp"))
    base = [f"--checkpoint={tiny_checkpoint}", "--time_column=ts", f"--output={tmp_path}/o.csv"]
    code, streams = _run(capsys, *base, f"--input={source}", "--target=power")
    assert code == 2 and "'power' not found. The header has: ts, load, temp" in streams.err
    code, streams = _run(capsys, *base, f"--input={source}", "--horizon=7")
    assert code == 2 and "horizons [6, 12]. Received: --horizon=7" in streams.err
    short = series_csv(tmp_path / "short.csv", 30, ("load", "temp"))
    code, streams = _run(capsys, *base, f"--input={short}")
    assert code == 2 and "30 rows" in streams.err and "at least 48" in streams.err


@pytest.mark.large
def test_forecast_command_more_errors(tiny_checkpoint, tmp_path, capsys):
    source = series_csv(tmp_path / "in.csv", 100, ("load", "temp"))
    base = [f"--checkpoint={tiny_checkpoint}", "--time_column=ts", f"--output={tmp_path}/o.csv"]
    code, streams = _run(capsys, *base, f"--input={source}", "--channels=a,b")
    assert code == 2 and "--channels must name as many columns" in streams.err
    daily = write_csv(tmp_path / "daily.csv", ["ts", "load", "temp"],
                      [[f"2014-01-{d:02d}", "1", "2"] for d in range(1, 31)])
    code, streams = _run(capsys, *base, f"--input={daily}")
    assert code == 2 and "86400 s apart" in streams.err
    code, streams = _run(capsys, *base, f"--input={tmp_path}/none.csv")
    assert code == 2 and "must be an existing CSV file" in streams.err


def test_forecast_command_export(tiny_checkpoint, tmp_path, capsys):
    # --export alone: no --input or --output needed.
    code, streams = _run(capsys, f"--checkpoint={tiny_checkpoint}",
                         f"--export={tmp_path / 'saved'}")
    assert code == 0, streams.err
    assert streams.out == f"SavedModel written to {tmp_path / 'saved'}\n"
    assert (tmp_path / "saved" / "saved_model.pb").is_file()  # served in test_export.py


def test_forecast_help_lists_the_command(capsys):
    assert cli.main(["forecast", "--help"]) == 0
    assert "--time_column" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["forecast"], ["forecast", "--input=x.csv"]])
def test_forecast_missing_arguments(argv, capsys):
    assert cli.main(argv) == 2
    assert "required" in capsys.readouterr().err
