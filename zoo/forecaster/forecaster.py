"""The forecaster task: raw history in, point and quantile forecasts out.

`Forecaster` holds one network per horizon (see `backbone.build_backbone`),
the channel names and the training normalisation statistics. It takes a
history in original units, fills its missing values, standardises it, runs
the network and maps the forecasts back to original units.

Example:

```python
import zoo

forecaster = zoo.load("forecaster_electricity")
result = forecaster.forecast(history, end_time="2014-12-24 23:00:00")
result.point          # (24, 1) point forecast in kW
result.quantiles      # (24, 1, 3): P10, P50, P90
maps = forecaster.attention_maps(history, end_time="2014-12-24 23:00:00")
maps.importance       # (channels, patches): attention each past patch receives
```
"""

import dataclasses
import datetime
import os
import pathlib

import numpy as np

from zoo.forecaster import data as data_lib
from zoo.forecaster.familiarity import unfamiliar_features
from zoo.forecaster.metrics import QUANTILES

RECIPE = "python -m recipes.train_forecaster"


@dataclasses.dataclass
class ForecastResult:
    """What `Forecaster.forecast` returns.

    `np.asarray(result)` is the point forecast.

    Attributes:
        point: `(H, C)` point forecasts in original units (`(B, H, C)` for a
            batch of histories).
        quantiles: `(H, C, 3)` (or `(B, H, C, 3)`) forecasts of the quantiles
            `quantile_levels` (P10, P50, P90).
        quantile_levels: `(0.1, 0.5, 0.9)`.
        timestamps: `(H,)` (or `(B, H)`) int64 Unix seconds of the forecast
            steps, or None when the history's end time was not given.
        channels: the channel names (the last axis of `point`).
        filled: number of missing history values that were interpolated.
        unfamiliar: why the history is unlike the training data, as sentences
            (`zoo.forecaster.familiarity`): empty when it is like it, or when
            the checkpoint has no familiarity profile. A tuple of them per
            history for a batch.
    """

    point: np.ndarray
    quantiles: np.ndarray
    quantile_levels: tuple
    timestamps: np.ndarray
    channels: tuple
    filled: int
    unfamiliar: tuple = ()

    @property
    def p10(self):
        return self.quantiles[..., 0]

    @property
    def p50(self):
        return self.quantiles[..., 1]

    @property
    def p90(self):
        return self.quantiles[..., 2]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.point, dtype=dtype)


@dataclasses.dataclass
class AttentionMaps:
    """What `Forecaster.attention_maps` returns, for one history.

    Attributes:
        weights: `(C, layers, heads, N, N)` attention weights of each encoder
            block: row i says how much patch i attends each patch j.
        rollout: `(C, N, N)` attention rollout over the blocks (heads
            averaged, half identity added for the residual path, rows
            renormalised, multiplied from the first block up; Abnar & Zuidema
            2020).
        importance: `(C, N)` mean of the rollout over its rows: the share of
            attention each past patch receives; the forecast head reads all
            patch tokens, so this is what the forecast draws on.
        patch_end_offsets: `(N,)` steps between each patch's last step and the
            last history step (0 for the most recent patch).
        patch_end_times: `(N,)` Unix seconds of each patch's last step, or
            None when the end time was not given.
        channels: the channel names.
    """

    weights: np.ndarray
    rollout: np.ndarray
    importance: np.ndarray
    patch_end_offsets: np.ndarray
    patch_end_times: np.ndarray
    channels: tuple


def attention_rollout(weights):
    """`(..., layers, heads, N, N)` -> `(..., N, N)` rollout (heads averaged)."""
    weights = np.asarray(weights, dtype=np.float64).mean(axis=-3)  # (..., layers, N, N)
    size = weights.shape[-1]
    result = np.broadcast_to(np.eye(size), weights.shape[:-3] + (size, size)).copy()
    for layer in range(weights.shape[-3]):
        a = 0.5 * weights[..., layer, :, :] + 0.5 * np.eye(size)
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result


def to_unix_seconds(value, name="end_time"):
    """Unix seconds from an int, a float, an ISO string or a `datetime` (naive = UTC)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a time. Received: {name}={value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return int(value)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[s]").astype(np.int64))
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp())
    if isinstance(value, str):
        try:
            return data_lib.parse_time(value)
        except ValueError:
            pass
    raise ValueError(
        f"`{name}` must be Unix seconds, an ISO date/time string or a datetime. "
        f"Received: {name}={value!r}"
    )


class Forecaster:
    """Forecasts a series with the patch Transformer, at one or more horizons.

    Args:
        models: `{horizon: keras.Model}` built by `backbone.build_backbone`.
        channels: the channel names the models were trained with.
        target: the main channel (the one the metrics are reported on).
        mean, std: `(C,)` normalisation statistics of the training part.
        step_seconds: the time step of the series.
        lookback: history length the models read.
        name: a label (the zoo name).
        manifest: the checkpoint manifest, when loaded from one.
    """

    def __init__(self, models, channels, target, mean, std, step_seconds, lookback,
                 name="forecaster", manifest=None):
        if not models:
            raise ValueError("`models` must map at least one horizon to a model. Received: {}")
        self.models = {int(h): m for h, m in models.items()}
        self.channels = tuple(channels)
        self.target = target
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if not (len(self.channels) == len(self.mean) == len(self.std)):
            raise ValueError(
                "`channels`, `mean` and `std` must have the same length. Received: "
                f"{len(self.channels)}, {len(self.mean)}, {len(self.std)}"
            )
        self.step_seconds = int(step_seconds)
        self.lookback = int(lookback)
        self.name = name
        self.manifest = manifest or {}
        self._attention_models = {}

    @property
    def horizons(self):
        return tuple(sorted(self.models))

    def _horizon(self, horizon):
        if horizon is None:
            return self.horizons[-1]
        if horizon not in self.models:
            raise ValueError(
                f"{self.name} has models for the horizons {list(self.horizons)}. "
                f"Received: horizon={horizon!r}"
            )
        return int(horizon)

    def _prepare(self, history, end_time):
        """Normalised `(B, L, C)` windows, end times, time_known, filled count."""
        if isinstance(history, (str, bytes)):
            raise TypeError(f"`history` must be an array of numbers. Received: history={history!r}")
        try:
            array = np.asarray(history, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`history` must be an array of numbers ({e}). "
                            f"Received: history of type {type(history).__name__}") from None
        single = array.ndim < 3
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(
                "`history` must be (time,), (time, channels) or (batch, time, channels). "
                f"Received: shape={np.shape(history)}"
            )
        if array.shape[2] != len(self.channels):
            raise ValueError(
                f"{self.name} forecasts {len(self.channels)} channel(s) "
                f"({', '.join(self.channels)}); `history` must have that many columns. "
                f"Received: shape={np.shape(history)}"
            )
        if array.shape[1] < self.lookback:
            raise ValueError(
                f"`history` must have at least {self.lookback} time steps (the look-back). "
                f"Received: {array.shape[1]} steps, shape={np.shape(history)}"
            )
        array = array[:, -self.lookback:]
        missing = ~np.isfinite(array)
        empty = missing.all(axis=1)  # (B, C)
        if empty.any():
            b, c = np.argwhere(empty)[0]
            raise ValueError(
                f"`history` has no value in the last {self.lookback} steps of channel "
                f"{self.channels[c]!r} (batch row {b})."
            )
        array = np.where(missing, np.nan, array)
        filled = np.stack([data_lib.fill_missing(window) for window in array])
        normalised = ((filled - self.mean) / self.std).astype(np.float32)

        batch = normalised.shape[0]
        if end_time is None:
            ends = np.zeros((batch,), dtype=np.int64)
            known = np.zeros((batch,), dtype=np.float32)
        else:
            values = end_time if isinstance(end_time, (list, tuple, np.ndarray)) else [end_time]
            ends = np.asarray([to_unix_seconds(v) for v in values], dtype=np.int64)
            if ends.shape != (batch,):
                raise ValueError(
                    f"`end_time` must be one time per history ({batch}). "
                    f"Received: {len(ends)} time(s)"
                )
            known = np.ones((batch,), dtype=np.float32)
        return normalised, ends, known, int(missing.sum()), single

    def forecast(self, history, end_time=None, horizon=None):
        """Forecasts the steps after `history`.

        Args:
            history: array in original units, `(T,)` for a one-channel model,
                `(T, C)`, or `(B, T, C)` for a batch; `T >= lookback`, only the
                last `lookback` steps are used. NaN values are interpolated.
            end_time: the time of the last history step (Unix seconds, ISO
                string or datetime; a list for a batch). It sets the calendar
                features; without it the model forecasts without them.
            horizon: one of `self.horizons`; defaults to the longest.

        Returns:
            A `ForecastResult` (point forecasts and P10/P50/P90).
        """
        horizon = self._horizon(horizon)
        x, ends, known, filled, single = self._prepare(history, end_time)
        outputs = self.models[horizon].predict(
            {"history": x, "end_time": ends, "time_known": known}, verbose=0,
            batch_size=256,
        )
        point = outputs["point"] * self.std + self.mean  # (B, H, C)
        quantiles = outputs["quantiles"] * self.std[:, None] + self.mean[:, None]
        timestamps = None
        if end_time is not None:
            steps = np.arange(1, horizon + 1, dtype=np.int64) * self.step_seconds
            timestamps = ends[:, None] + steps[None, :]
        unfamiliar = tuple(self._unfamiliar(window) for window in x)
        if single:
            point, quantiles = point[0], quantiles[0]
            timestamps = None if timestamps is None else timestamps[0]
            unfamiliar = unfamiliar[0]
        return ForecastResult(
            point=point.astype(np.float32),
            quantiles=quantiles.astype(np.float32),
            quantile_levels=QUANTILES,
            timestamps=timestamps,
            channels=self.channels,
            filled=filled,
            unfamiliar=unfamiliar,
        )

    def _unfamiliar(self, window):
        """Sentences on how a normalised window `(L, C)` differs from the training data."""
        profile = self.manifest.get("forecaster", {}).get("familiarity")
        if not profile:
            return ()
        target = window[:, self.channels.index(self.target)]
        return tuple(unfamiliar_features(profile, target, self.step_seconds))

    def attention_maps(self, history, end_time=None, horizon=None):
        """Which past patches the forecast of one history attends to.

        Args:
            history: one history, `(T,)` or `(T, C)` (see `forecast`).
            end_time: time of the last history step, as in `forecast`.
            horizon: which horizon's model; defaults to the longest.

        Returns:
            An `AttentionMaps` for this history.

        Raises:
            ValueError: for a batch of histories, or a model with linear
                attention (it forms no weights).
        """
        from zoo.forecaster.backbone import attention_model

        horizon = self._horizon(horizon)
        if np.ndim(history) > 2:
            raise ValueError(
                "`attention_maps` takes one history, (time,) or (time, channels). "
                f"Received: shape={np.shape(history)}"
            )
        x, ends, known, _, _ = self._prepare(history, end_time)
        if horizon not in self._attention_models:
            self._attention_models[horizon] = attention_model(self.models[horizon])
        maps_model = self._attention_models[horizon]
        weights = maps_model.predict(
            {"history": x, "end_time": ends, "time_known": known}, verbose=0
        )  # (C, layers, heads, N, N)
        weights = np.asarray(weights, dtype=np.float32)
        rollout = attention_rollout(weights)
        embedding = self.models[horizon].get_layer("patch_embedding")
        offsets = embedding._steps_before_end.copy()
        times = None if end_time is None else ends[0] - offsets * self.step_seconds
        return AttentionMaps(
            weights=weights,
            rollout=rollout.astype(np.float32),
            importance=rollout.mean(axis=-2).astype(np.float32),
            patch_end_offsets=offsets,
            patch_end_times=times,
            channels=self.channels,
        )

    def export(self, path):
        """Writes a TensorFlow SavedModel (see `zoo.forecaster.export`)."""
        from zoo.forecaster.export import export_saved_model

        return export_saved_model(self, path)


def forecaster_metadata(channels, target, mean, std, step_seconds, lookback, weights, units="",
                        familiarity=None):
    """The `forecaster` block of a checkpoint manifest (`familiarity`: the profile of
    `zoo.forecaster.familiarity.familiarity_profile`, when known)."""
    meta = {
        "channels": list(channels),
        "target": target,
        "mean": [float(v) for v in np.ravel(mean)],
        "std": [float(v) for v in np.ravel(std)],
        "step_seconds": int(step_seconds),
        "lookback": int(lookback),
        "weights": {str(h): name for h, name in sorted(weights.items())},
        "units": units,
    }
    if familiarity is not None:
        meta["familiarity"] = familiarity
    return meta


def load_forecaster(directory, manifest=None):
    """Loads a `Forecaster` from a checkpoint folder written by the recipe.

    Args:
        directory: the checkpoint folder.
        manifest: its manifest, already verified (as `zoo.load` passes it);
            when None the folder is verified here.

    Returns:
        A `Forecaster`.
    """
    from zoo import checkpoint
    from zoo.forecaster.backbone import build_backbone, model_kwargs

    directory = pathlib.Path(directory)
    if manifest is None:
        manifest = checkpoint.verify_checkpoint(directory, RECIPE)
    recipe = manifest.get("recipe", RECIPE)
    try:
        meta = manifest["forecaster"]
        config = manifest["config"]
        models = {}
        for horizon, filename in meta["weights"].items():
            model = build_backbone(**model_kwargs(config, int(horizon), meta["step_seconds"]))
            model.load_weights(os.fspath(directory / filename))
            models[int(horizon)] = model
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(
            f"Checkpoint {directory}: cannot build the forecaster from its manifest "
            f"({type(e).__name__}: {e}). Re-create it with: {recipe}"
        ) from e
    return Forecaster(
        models,
        channels=meta["channels"],
        target=meta["target"],
        mean=meta["mean"],
        std=meta["std"],
        step_seconds=meta["step_seconds"],
        lookback=meta["lookback"],
        name=manifest.get("name", directory.name),
        manifest=manifest,
    )

