"""The baselines a practitioner reaches for first: statsforecast models and LightGBM.

They need the `forecast-baselines` extra (`pip install statsforecast lightgbm`);
importing this module does not import either package, and each entry point
raises one `ImportError` line with that command when its package is missing.

- `STATISTICAL_METHODS` and `statistical_forecast(histories, horizon, method)`:
  AutoETS and AutoTheta with a daily season (24 steps) and MSTL with daily and
  weekly seasons (24 and 168 steps, trend by AutoETS without season), from
  `statsforecast`. Each is fitted afresh on each window's look-back alone (the
  same 336 steps the other models read) and forecasts from its end: the
  per-series use these models are made for, with no parameter learnt from the
  training part.
- `LagGBM`: a gradient-boosted tree model (LightGBM) on lag and calendar
  features, fitted once on every step of the training part (one row per step:
  the value and its lags), stopped early on the one-step error of the
  validation part, and run recursively (each forecast step becomes a lag of
  the next), as `mlforecast`-style pipelines do. One booster per loss (L2 and
  L1); per horizon, the one with the lower multi-step MAE on the validation
  windows is used.

Shapes: N windows, L look-back steps, H horizon steps. All inputs are one
channel (the target); the tree model works on the normalised scale, the
statistical models on whatever scale they are given (original units in the
evaluation, so that AutoETS may pick multiplicative components where the
series is positive).
"""

import importlib
import importlib.util
import warnings

import numpy as np

INSTALL = "pip install statsforecast lightgbm  (or: pip install keras-attention[forecast-baselines])"
DAY, WEEK = 24, 168
#: Lags of the tree model, in steps: the last day hour by hour, the same hour
#: on each of the last six days, one week (and an hour either side) and two weeks.
LAGS = tuple(range(1, 25)) + (48, 72, 96, 120, 144, 167, 168, 169, 336)
STATISTICAL_METHODS = ("auto_ets", "auto_theta", "mstl")


def require(package):
    """Imports `package` or raises an `ImportError` naming the install command."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ImportError(f"This baseline needs {package}, which is not installed: {INSTALL}") from e


def installed(package):
    """Whether `package` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def _statistical_model(method, daily=DAY, weekly=WEEK):
    if method not in STATISTICAL_METHODS:
        raise ValueError(
            f"`method` must be one of {STATISTICAL_METHODS}. Received: method={method!r}")
    require("statsforecast")
    from statsforecast.models import MSTL, AutoETS, AutoTheta

    if method == "auto_ets":
        return AutoETS(season_length=daily)
    if method == "auto_theta":
        return AutoTheta(season_length=daily)
    return MSTL(season_length=[daily, weekly], trend_forecaster=AutoETS(model="ZZN"))


def statistical_forecast(histories, horizon, method, daily=DAY, weekly=WEEK):
    """Fits `method` on each look-back alone and forecasts `horizon` steps.

    Args:
        histories: `(N, L)` or `(L,)` complete look-backs (oldest first).
        horizon: H.
        method: one of `STATISTICAL_METHODS`.
        daily, weekly: season lengths in steps (MSTL uses both, the others
            `daily`).

    Returns:
        `(N, H)` (or `(H,)`) point forecasts (the mean of each model).
    """
    histories = np.asarray(histories, dtype=np.float64)
    single = histories.ndim == 1
    histories = np.atleast_2d(histories)
    _statistical_model(method, daily, weekly)  # checks `method` and the package once
    out = np.empty((len(histories), int(horizon)))
    for i, history in enumerate(histories):
        if not np.all(np.isfinite(history)):
            raise ValueError(f"`histories` must be complete (fill missing values first). "
                             f"Received: {int(np.sum(~np.isfinite(history)))} non-finite values "
                             f"in window {i}")
        model = _statistical_model(method, daily, weekly)
        with warnings.catch_warnings():
            # The optimisers of AutoETS and AutoTheta try parameter values that
            # overflow on some windows; those candidates are discarded, not used.
            warnings.simplefilter("ignore", RuntimeWarning)
            out[i] = model.forecast(y=history, h=int(horizon))["mean"]
    return out[0] if single else out


def calendar_features(timestamps):
    """`(..., 2)` hour of day and day of week (Monday 0) of Unix-second timestamps."""
    timestamps = np.asarray(timestamps, dtype=np.int64)
    hour = (timestamps // 3600) % 24
    weekday = (timestamps // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    return np.stack([hour, weekday], axis=-1).astype(np.float64)


class LagGBM:
    """LightGBM on lags and calendar features, run recursively.

    Features of the value at step t: `y[t - lag]` for each lag in `lags`, the
    mean of the last 24 and last 168 values, and the hour of day and day of
    week of t.

    Args:
        step_seconds: seconds between steps (for the calendar features).
        lags: lags in steps; the longest must not exceed the look-back.
        objectives: LightGBM losses, one booster each (`choose_objective`
            picks one by multi-step validation MAE).
        num_leaves, learning_rate, max_rounds, early_stopping: LightGBM settings
            (rounds stop when the one-step validation loss stops improving).
        seed: LightGBM's seed (the fit is deterministic on one thread).

    Example:

    >>> model = LagGBM(3600).fit(values, timestamps, train_end, valid_end)
    >>> model.choose_objective(values, timestamps, valid_origins, 24)
    >>> model.predict(histories, end_times, 24).shape     # (N, 24)
    """

    def __init__(self, step_seconds, lags=LAGS, objectives=("l2", "l1"), num_leaves=63,
                 learning_rate=0.05, max_rounds=2000, early_stopping=50, seed=0):
        self.step_seconds = int(step_seconds)
        self.lags = tuple(int(lag) for lag in lags)
        if not self.lags or min(self.lags) < 1:
            raise ValueError(f"`lags` must be positive step counts. Received: lags={lags}")
        self.objectives = tuple(objectives)
        self.num_leaves = int(num_leaves)
        self.learning_rate = float(learning_rate)
        self.max_rounds = int(max_rounds)
        self.early_stopping = int(early_stopping)
        self.seed = int(seed)
        self.boosters = {}
        self.objective = None
        self.validation_mae = {}

    @property
    def context(self):
        """Past steps each feature row reads (the longest lag, at least a week)."""
        return max(max(self.lags), WEEK)

    def _features(self, past, times):
        """`past (N, >= context)` values before each target, `times (N,)` -> `(N, F)`."""
        lagged = past[:, [-lag for lag in self.lags]]
        means = [past[:, -DAY:].mean(axis=1), past[:, -WEEK:].mean(axis=1)]
        return np.concatenate([lagged, np.stack(means, axis=1), calendar_features(times)], axis=1)

    def _rows(self, values, timestamps, targets):
        """Feature rows and labels of the steps `targets` of a `(T,)` series."""
        targets = np.asarray(targets, dtype=np.int64)
        past = values[targets[:, None] + np.arange(-self.context, 0)[None, :]]
        return self._features(past, timestamps[targets]), values[targets]

    def fit(self, values, timestamps, train_end, valid_end, observed=None):
        """Fits one booster per loss on the steps before `train_end`.

        Args:
            values: `(T,)` complete series (normalised; missing values filled).
            timestamps: `(T,)` Unix seconds.
            train_end, valid_end: split bounds: training labels are the steps
                before `train_end`; the one-step rows of `[train_end, valid_end)`
                stop the boosting early.
            observed: optional `(T,)` bool, False where a value was missing:
                such steps are no label (they still serve, filled, as lags).

        The first loss is used until `choose_objective` picks one.
        """
        lightgbm = require("lightgbm")
        values = np.asarray(values, dtype=np.float64)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        observed = np.ones(len(values), bool) if observed is None else np.asarray(observed, bool)
        if not self.context < train_end < valid_end <= len(values):
            raise ValueError(f"Needs {self.context} < train_end < valid_end <= {len(values)}. "
                             f"Received: train_end={train_end}, valid_end={valid_end}")
        def rows(begin, end):
            steps = np.arange(max(begin, self.context), end)
            return self._rows(values, timestamps, steps[observed[steps]])

        train, valid = rows(0, train_end), rows(train_end, valid_end)
        self.boosters = {}
        for objective in self.objectives:
            params = {
                "objective": objective, "num_leaves": self.num_leaves,
                "learning_rate": self.learning_rate, "min_data_in_leaf": 20,
                "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1,
                "seed": self.seed, "deterministic": True, "num_threads": 1, "verbose": -1,
            }
            self.boosters[objective] = lightgbm.train(
                params, lightgbm.Dataset(*train), num_boost_round=self.max_rounds,
                valid_sets=[lightgbm.Dataset(*valid)],
                callbacks=[lightgbm.early_stopping(self.early_stopping, verbose=False)],
            )
        self.objective = self.objectives[0]
        return self

    def choose_objective(self, values, timestamps, origins, horizon, observed=None):
        """Keeps the loss whose `horizon`-step forecasts at `origins` have the lowest MAE.

        `origins` are validation window origins of the `(T,)` series `values`
        (`observed` as in `fit`); returns the chosen loss and records every
        loss's MAE in `validation_mae[horizon]`.
        """
        values = np.asarray(values, dtype=np.float64)
        origins = np.asarray(origins, dtype=np.int64)
        if len(origins) == 0:
            raise ValueError("choose_objective needs at least one window. Received: 0 origins")
        observed = np.ones(len(values), bool) if observed is None else np.asarray(observed, bool)
        histories = values[origins[:, None] + np.arange(-self.context, 0)[None, :]]
        targets = origins[:, None] + np.arange(horizon)[None, :]
        errors = {}
        for objective in self.boosters:
            forecast = self.predict(histories, np.asarray(timestamps)[origins - 1], horizon,
                                    objective)
            errors[objective] = float(np.abs(forecast - values[targets])[observed[targets]].mean())
        self.validation_mae[int(horizon)] = errors
        self.objective = min(errors, key=errors.get)
        return self.objective

    def predict(self, histories, end_times, horizon, objective=None):
        """Recursive forecasts.

        Args:
            histories: `(N, L)` complete look-backs with `L >= context`.
            end_times: `(N,)` Unix seconds of each look-back's last step.
            horizon: H.
            objective: the booster of this loss (default: `objective`).

        Returns:
            `(N, H)` forecasts.
        """
        if not self.boosters:
            raise ValueError("LagGBM.predict needs fit() first.")
        booster = self.boosters[objective or self.objective]
        histories = np.asarray(histories, dtype=np.float64)
        if histories.ndim != 2 or histories.shape[1] < self.context:
            raise ValueError(f"`histories` must have shape (N, L) with L >= {self.context}. "
                             f"Received: shape={histories.shape}")
        end_times = np.asarray(end_times, dtype=np.int64)
        buffer = np.concatenate([histories[:, -self.context:],
                                 np.zeros((len(histories), int(horizon)))], axis=1)
        for step in range(int(horizon)):
            past = buffer[:, step:step + self.context]
            times = end_times + (step + 1) * self.step_seconds
            buffer[:, self.context + step] = booster.predict(self._features(past, times))
        return buffer[:, self.context:]
