"""Reference forecasters computed in the same evaluation run as the model.

- `seasonal_naive(history, horizon, period)`: each future step repeats the
  value one (or more) periods earlier, `y[t + h] = y[t + h - k * period]` with
  the smallest `k >= 1` that reaches into the history.
- `DLinear`: the decomposition-linear model of Zeng et al. 2023 ("Are
  Transformers Effective for Time Series Forecasting?"): a moving average
  splits the look-back into trend and remainder, and one linear map from the
  look-back to the horizon per part (shared by all channels) gives the
  forecast. It is fitted in closed form (least squares with a small ridge
  penalty chosen on the validation windows), the exact minimiser of the MSE
  objective the paper trains with gradient descent.
"""

import numpy as np


def seasonal_naive(history, horizon, period):
    """Seasonal naive forecast.

    Args:
        history: `(..., L, C)` or `(L,)` array, the look-back (oldest first).
        horizon: number of future steps H.
        period: the season length P (`period <= L`).

    Returns:
        `(..., H, C)` (or `(H,)`) forecasts.
    """
    history = np.asarray(history)
    length = history.shape[-2] if history.ndim > 1 else history.shape[0]
    if not 1 <= period <= length:
        raise ValueError(
            f"`period` must be between 1 and the look-back length {length}. "
            f"Received: period={period}"
        )
    steps = np.arange(horizon)
    # Index into the history of y[t + h - k P], k = h // P + 1.
    index = length + steps - (steps // period + 1) * period
    if history.ndim == 1:
        return history[index]
    return np.take(history, index, axis=-2)


def moving_average(x, kernel_size):
    """Moving average over axis -2 of `(..., L, C)`, ends padded by repetition.

    The window of step i is centred (`kernel_size` odd) as in DLinear.
    """
    x = np.asarray(x, dtype=np.float64)
    half = (kernel_size - 1) // 2
    front = np.repeat(x[..., :1, :], half, axis=-2)
    back = np.repeat(x[..., -1:, :], kernel_size - 1 - half, axis=-2)
    padded = np.concatenate([front, x, back], axis=-2)
    cumsum = np.cumsum(padded, axis=-2)
    zero = np.zeros_like(cumsum[..., :1, :])
    cumsum = np.concatenate([zero, cumsum], axis=-2)
    return (cumsum[..., kernel_size:, :] - cumsum[..., :-kernel_size, :]) / kernel_size


class DLinear:
    """DLinear (Zeng et al. 2023) fitted by ridge least squares.

    Args:
        lookback: look-back length L.
        horizon: forecast length H.
        kernel_size: moving-average window of the trend (25 in the paper).
        ridge_penalties: candidate penalties (relative to the mean diagonal of
            the Gram matrix); the one with the lowest validation MSE is kept.

    Example:

    >>> model = DLinear(336, 24).fit(x_train, y_train, x_valid, y_valid)
    >>> model.predict(x_test).shape     # x: (N, 336, C) -> (N, 24, C)
    """

    def __init__(self, lookback, horizon, kernel_size=25,
                 ridge_penalties=(1e-6, 1e-4, 1e-3, 1e-2, 1e-1)):
        self.lookback = int(lookback)
        self.horizon = int(horizon)
        self.kernel_size = int(kernel_size)
        self.ridge_penalties = tuple(ridge_penalties)
        self.weights = None  # (2L + 1, H)
        self.ridge_penalty = None

    def _features(self, x):
        """`(N, L, C)` -> `(N * C, 2L + 1)`: remainder, trend, 1 per channel."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[1] != self.lookback:
            raise ValueError(
                f"DLinear input must have shape (batch, {self.lookback}, channels). "
                f"Received: shape={x.shape}"
            )
        trend = moving_average(x, self.kernel_size)
        seasonal = x - trend
        n, length, channels = x.shape
        def flat(a):
            return np.transpose(a, (0, 2, 1)).reshape(n * channels, length)

        ones = np.ones((n * channels, 1))
        return np.concatenate([flat(seasonal), flat(trend), ones], axis=1)

    def _targets(self, y):
        y = np.asarray(y, dtype=np.float64)
        n, horizon, channels = y.shape
        return np.transpose(y, (0, 2, 1)).reshape(n * channels, horizon)

    def fit(self, x_train, y_train, x_valid=None, y_valid=None):
        """Fits the maps on `(N, L, C)` look-backs and `(N, H, C)` targets."""
        features = self._features(x_train)
        targets = self._targets(y_train)
        gram = features.T @ features
        moment = features.T @ targets
        scale = float(np.trace(gram)) / gram.shape[0]
        penalty_mask = np.ones(gram.shape[0])
        penalty_mask[-1] = 0.0  # the bias is not penalised
        candidates = []
        for penalty in self.ridge_penalties:
            regularised = gram + np.diag(penalty * scale * penalty_mask)
            weights = np.linalg.solve(regularised, moment)
            if x_valid is None:
                candidates.append((0.0, penalty, weights))
                break
            error = self._features(x_valid) @ weights - self._targets(y_valid)
            candidates.append((float(np.mean(error ** 2)), penalty, weights))
        _, self.ridge_penalty, self.weights = min(candidates, key=lambda c: c[0])
        return self

    def predict(self, x):
        """`(N, L, C)` look-backs -> `(N, H, C)` forecasts."""
        if self.weights is None:
            raise ValueError("DLinear.predict needs fit() first.")
        n, _, channels = np.shape(x)
        out = self._features(x) @ self.weights  # (N * C, H)
        return np.transpose(out.reshape(n, channels, self.horizon), (0, 2, 1))
