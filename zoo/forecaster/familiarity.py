"""How far a history lies from the series a forecaster was trained on.

A forecaster trained on one hourly series extrapolates when it is given a history
whose level, spread or seasonality it never saw. `familiarity_profile` summarises
the look-back windows of the training part (in the checkpoint's normalised units)
by four features of the target channel, and `unfamiliar_features` names the
features of a new history that fall outside the training range:

- `level`: the window mean;
- `spread`: the log of the window's standard deviation;
- `daily_autocorrelation`, `weekly_autocorrelation`: the correlation of the window
  with itself one day and one week later (only where the window spans two
  periods of whole steps).

The allowed range of a feature is the 0.5th to 99.5th percentile of the training
windows, widened by half its width on either side. The profile records the share
of validation windows that the rule flags, so that the false-alarm rate of the
rule is known.
"""

import numpy as np

QUANTILES = (0.005, 0.995)
MARGIN = 0.5
_DAY = 86400


def _autocorrelation(windows, lag):
    a, b = windows[:, :-lag], windows[:, lag:]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    safe = np.where(denominator > 1e-12, denominator, 1.0)
    return np.where(denominator > 1e-12, (a * b).sum(axis=1) / safe, 0.0)


def window_features(windows, step_seconds):
    """`{feature: (N,) values}` of normalised target windows `(N, L)`."""
    windows = np.asarray(windows, dtype=np.float64)
    features = {
        "level": windows.mean(axis=1),
        "spread": np.log(windows.std(axis=1) + 1e-3),
    }
    length = windows.shape[1]
    for name, period in (("daily", _DAY), ("weekly", 7 * _DAY)):
        lag, rest = divmod(period, int(step_seconds))
        if rest == 0 and lag >= 2 and 2 * lag <= length:
            features[f"{name}_autocorrelation"] = _autocorrelation(windows, lag)
    return features


def _windows(values, lookback, start, end, stride):
    starts = range(start, end - lookback + 1, stride)
    return np.stack([values[s:s + lookback] for s in starts]) if len(starts) else None


def familiarity_profile(target, lookback, step_seconds, train_end, valid_end, stride=24):
    """The profile of the training part of a normalised target series.

    Args:
        target: `(T,)` normalised values of the target channel, missing values filled.
        lookback: the forecaster's history length.
        step_seconds: seconds between steps.
        train_end, valid_end: the ends of the training and validation parts.
        stride: steps between the windows the ranges are taken from.

    Returns:
        A JSON-ready dict: `ranges` (`{feature: [low, high]}`, the allowed range),
        `rule`, and `valid_flagged_share` (or None without validation windows).
    """
    train = _windows(target, lookback, 0, train_end, stride)
    if train is None:
        raise ValueError(f"The training part ({train_end} steps) is shorter than the "
                         f"look-back. Received: lookback={lookback}")
    ranges = {}
    for name, values in window_features(train, step_seconds).items():
        low, high = np.quantile(values, QUANTILES)
        width = high - low
        ranges[name] = [float(low - MARGIN * width), float(high + MARGIN * width)]
    profile = {
        "ranges": ranges,
        "rule": (f"a feature outside the {QUANTILES[0]:.1%}-{QUANTILES[1]:.1%} range of "
                 f"the training windows (every {stride} steps), widened by {MARGIN:g} of "
                 "its width on each side"),
        "valid_flagged_share": None,
    }
    valid = _windows(target, lookback, max(train_end - lookback, 0), valid_end, stride)
    if valid is not None:
        flagged = [bool(unfamiliar_features(profile, w, step_seconds)) for w in valid]
        profile["valid_flagged_share"] = round(float(np.mean(flagged)), 4)
    return profile


def unfamiliar_features(profile, window, step_seconds):
    """Sentences naming each feature of one normalised target window `(L,)` that lies
    outside the profile's ranges; empty when the window looks like training data."""
    features = window_features(np.asarray(window)[None], step_seconds)
    notes = []
    for name, (low, high) in profile["ranges"].items():
        if name not in features:
            continue
        value = float(features[name][0])
        if not low <= value <= high:
            notes.append(f"{name.replace('_', ' ')} {value:.3g} is outside the training "
                         f"range [{low:.3g}, {high:.3g}]")
    return notes
