"""`keras-attention forecast`: CSV history in, forecast CSV and plot out.

    keras-attention forecast --model=forecaster_electricity \\
        --input=history.csv --time_column=ts --target=demand \\
        --output=forecast.csv --plot=forecast.png [--horizon=24]
    keras-attention forecast --model=forecaster_electricity --export=/tmp/forecaster

The input CSV needs a time column (`--time_column`, default: the first column;
or comma-separated year,month,day,hour columns) and one column per channel of
the model: `--target` names the column of the model's target channel (default:
the channel's own name), `--channels` the columns of its other channels in
order (default: their own names). The forecast starts after the last row; the
last `lookback` rows are used, and missing values in them are interpolated.

The output CSV has a `time` column (ISO, UTC) and, for every channel, the
point forecast and the P10, P50 and P90 columns, named after the input's
columns (`<column>`, `<column>_p10`, ...). The PNG shows the target's history,
the forecast and the P10-P90 band (matplotlib is needed for `--plot`).
`--export DIR` writes the forecaster's SavedModel (see
`zoo.forecaster.export`) instead of forecasting.
"""

import csv
import os
import sys

from zoo import inputs


def add_parser(subparsers):
    """Registers the `forecast` subcommand."""
    parser = subparsers.add_parser(
        "forecast",
        help="forecast a CSV time series with a zoo forecaster",
        description="Forecast the steps after a CSV history with a zoo forecaster; "
        "writes a forecast CSV and optionally a PNG plot.",
    )
    parser.add_argument("--model", default="forecaster_electricity",
                        help="zoo model name (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder (default: the zoo's folder of --model)")
    parser.add_argument("--input", default=None,
                        help="CSV file with the history (needed unless --export)")
    add_column_arguments(parser)
    parser.add_argument("--horizon", type=int, default=None,
                        help="forecast length, one the model has (default: the longest)")
    parser.add_argument("--output", default=None,
                        help="forecast CSV to write (needed unless --export)")
    parser.add_argument("--plot", default=None, help="PNG plot to write")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write the forecaster's TensorFlow SavedModel (history and "
                             "end time in, forecasts out) to DIR instead")
    parser.set_defaults(func=run)
    return parser


def add_column_arguments(parser, prefix=""):
    """The options that name the CSV columns (`forecast` and `explain`);
    `prefix` starts their help."""
    parser.add_argument("--time_column", default=None,
                        help=f"{prefix}time column, or comma-separated year,month,day,hour "
                             "columns (default: the first column)")
    parser.add_argument("--target", default=None,
                        help=f"{prefix}column of the model's target channel "
                             "(default: its name)")
    parser.add_argument("--channels", default=None,
                        help=f"{prefix}comma-separated columns of the model's other channels "
                             "(default: their names)")


def channel_columns(forecaster, target, channels):
    """CSV column of each model channel, in model order."""
    for name, value in (("--target", target), ("--channels", channels)):
        if value is not None:
            inputs.check_text(value, name)
    names = list(forecaster.channels)
    index = names.index(forecaster.target)
    others = [c for c in names if c != forecaster.target]
    if channels:
        given = [c.strip() for c in channels.split(",") if c.strip()]
        if len(given) != len(others):
            raise ValueError(
                f"{forecaster.name} has {len(others)} channel(s) besides the target "
                f"({', '.join(others) or 'none'}); --channels must name as many columns. "
                f"Received: --channels={channels}"
            )
        others = given
    columns = others[:index] + [target or forecaster.target] + others[index:]
    if len(set(columns)) != len(columns):
        raise ValueError(f"A column is used for two channels. Received: {', '.join(columns)}")
    return columns


def run(args):
    if args.export is not None:
        inputs.check_output_path(args.export, "--export")
    else:
        if args.input is None or args.output is None:
            raise ValueError("--input and --output are required to forecast (or --export DIR "
                             f"to export). Received: --input={args.input}, --output={args.output}")
        inputs.check_file(args.input, "--input", "CSV file")
        inputs.check_output_path(args.output, "--output")
        if args.plot is not None:
            inputs.check_output_path(args.plot, "--plot")

    import numpy as np

    import zoo
    from zoo.forecaster import data
    from zoo.forecaster.forecaster import load_forecaster

    if args.checkpoint:
        forecaster = load_forecaster(args.checkpoint)
    else:
        forecaster = zoo.load(args.model)
    if args.export is not None:
        print(f"SavedModel written to {forecaster.export(args.export)}")
        return 0
    if args.horizon is not None and args.horizon not in forecaster.horizons:
        raise ValueError(
            f"{forecaster.name} forecasts the horizons {list(forecaster.horizons)}. "
            f"Received: --horizon={args.horizon}"
        )
    series, history, columns = read_history(forecaster, args.input, args.time_column,
                                            args.target, args.channels)
    end_time = int(series.timestamps[-1])
    result = forecaster.forecast(history, end_time=end_time, horizon=args.horizon)

    _write_csv(args.output, result, columns)
    print(
        f"Forecast of {len(result.timestamps)} steps after {data.format_time(end_time)} "
        f"written to {args.output}"
        + (f" ({result.filled} missing history values interpolated)" if result.filled else "")
    )
    for note in result.unfamiliar:
        print(f"warning: the history is unlike {forecaster.name}'s training data "
              f"({forecaster.manifest.get('data', {}).get('source', 'unknown source')}): "
              f"{note}; the forecast may be poor", file=sys.stderr)
    if args.plot:
        target = list(forecaster.channels).index(forecaster.target)
        lookback = forecaster.lookback
        write_plot(
            args.plot,
            series.timestamps[-lookback:],
            history[-lookback:, target],
            result.timestamps,
            result.point[:, target],
            result.p10[:, target],
            result.p90[:, target],
            title=f"{forecaster.name}: {series.target}",
        )
        print(f"Plot written to {args.plot}")
    return 0 if np.all(np.isfinite(result.point)) else 1


def read_history(forecaster, path, time_column, target, channels, name="--input"):
    """`(series, history, columns)` of a user's CSV: the parsed `data.Series`, its
    values `(T, C)` in the forecaster's channel order, checked against the
    forecaster's step and look-back, and the CSV column of each channel.

    `time_column` None is the first column; `name` is the option or argument that
    gave `path`, for the errors."""
    from zoo.forecaster import data

    path = inputs.check_file(path, name, "CSV file")
    columns = channel_columns(forecaster, target, channels)
    target_column = columns[list(forecaster.channels).index(forecaster.target)]
    try:
        if time_column is not None:
            inputs.check_text(time_column, "--time_column")
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), None)
            if not header:
                raise ValueError(f"`{name}` must be a CSV file with a header row; it is empty. "
                                 f"Received: {name}={path!r}")
            time_column = header[0]
        series = data.read_csv(path, time_column, target_column,
                               [c for c in columns if c != target_column])
    except UnicodeDecodeError as e:
        raise ValueError(f"`{name}` must be a UTF-8 CSV file; byte {e.start} is not UTF-8. "
                         f"Received: {name}={path!r}") from None
    except csv.Error as e:
        raise ValueError(f"`{name}` must be a CSV file ({e}). Received: {name}={path!r}") from None
    if series.step_seconds != forecaster.step_seconds:
        raise ValueError(
            f"{path}: the rows are {series.step_seconds} s apart but "
            f"{forecaster.name} forecasts steps of {forecaster.step_seconds} s."
        )
    if len(series) < forecaster.lookback:
        raise ValueError(
            f"{path}: {len(series)} rows (after filling time gaps); "
            f"{forecaster.name} needs at least {forecaster.lookback} (its look-back)."
        )
    order = [series.channels.index(c) for c in columns]
    return series, series.values[:, order], columns


def _write_csv(path, result, columns):
    header = ["time"]
    for name in columns:
        header += [name, f"{name}_p10", f"{name}_p50", f"{name}_p90"]
    from zoo.forecaster.data import format_time

    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for step, seconds in enumerate(result.timestamps):
            row = [format_time(seconds)]
            for c in range(len(columns)):
                row += [
                    f"{result.point[step, c]:.6g}",
                    f"{result.p10[step, c]:.6g}",
                    f"{result.p50[step, c]:.6g}",
                    f"{result.p90[step, c]:.6g}",
                ]
            writer.writerow(row)
    os.replace(tmp, path)


def write_plot(path, history_times, history, times, point, lower, upper, title=""):
    """Writes a PNG: the history, the forecast and its P10-P90 band."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def as_dates(seconds):
        return np.asarray(seconds, dtype="datetime64[s]")

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(as_dates(history_times), history, color="0.3", linewidth=1, label="history")
    ax.fill_between(as_dates(times), lower, upper, color="tab:blue", alpha=0.25,
                    label="P10-P90")
    ax.plot(as_dates(times), point, color="tab:blue", linewidth=1.5, label="forecast")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
