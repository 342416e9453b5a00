"""Forecast metrics and the pinball (quantile) loss.

Metrics take forecasts and targets on the normalised scale (`(x - mean) / std`
with the training-part statistics) and a boolean `observed` mask of the same
shape: missing target values are left out of every mean.

- `mse`, `mae`: on the normalised scale.
- `mae_original`: MAE in original units (`mae * std`).
- `coverage`: share of observed targets inside `[lower, upper]` (for the
  P10-P90 band the ideal is 0.8).
"""

import numpy as np
from keras import ops

QUANTILES = (0.1, 0.5, 0.9)


def _masked(values, observed):
    values = np.asarray(values, dtype=np.float64)
    if observed is None:
        return values.ravel()
    observed = np.broadcast_to(np.asarray(observed, dtype=bool), values.shape)
    return values[observed]


def _mean(values, observed):
    selected = _masked(values, observed)
    if selected.size == 0:
        raise ValueError("No observed target value to evaluate (all are missing).")
    return float(selected.mean())


def mse(forecast, target, observed=None):
    """Mean squared error over the observed targets."""
    return _mean((np.asarray(forecast) - np.asarray(target)) ** 2, observed)


def mae(forecast, target, observed=None):
    """Mean absolute error over the observed targets."""
    return _mean(np.abs(np.asarray(forecast) - np.asarray(target)), observed)


def coverage(lower, upper, target, observed=None):
    """Share of observed targets with `lower <= target <= upper`."""
    target = np.asarray(target)
    inside = (np.asarray(lower) <= target) & (target <= np.asarray(upper))
    return _mean(inside.astype(np.float64), observed)


def point_metrics(forecast, target, observed=None, std=1.0):
    """`{"mse", "mae", "mae_original"}` of normalised forecasts; `std` rescales MAE."""
    value = mae(forecast, target, observed)
    return {
        "mse": mse(forecast, target, observed),
        "mae": value,
        "mae_original": value * float(std),
    }


def pinball_loss(y_true, y_pred):
    """Mean pinball loss of quantile forecasts at the levels `QUANTILES`.

    Args:
        y_true: `(..., )` targets.
        y_pred: `(..., Q)` forecasts of the quantiles `QUANTILES`.

    Returns:
        The loss per sample, averaged over all but the first axis (a Keras
        loss function).
    """
    levels = ops.convert_to_tensor(QUANTILES, dtype=y_pred.dtype)
    error = ops.expand_dims(ops.cast(y_true, y_pred.dtype), -1) - y_pred  # (..., Q)
    loss = ops.maximum(levels * error, (levels - 1.0) * error)
    axes = tuple(range(1, len(loss.shape)))
    return ops.mean(loss, axis=axes)


def pinball_numpy(quantiles, target, observed=None, levels=QUANTILES):
    """Mean pinball loss in NumPy (`quantiles (..., Q)`, `target (...)`)."""
    error = np.asarray(target, dtype=np.float64)[..., None] - np.asarray(quantiles)
    levels = np.asarray(levels, dtype=np.float64)
    loss = np.maximum(levels * error, (levels - 1.0) * error).mean(axis=-1)
    return _mean(loss, observed)
