"""TensorFlow SavedModel export of a `Forecaster`.

The SavedModel runs with `tensorflow` alone. Its signatures take the raw
history and the time of its last step and return the forecasts in original
units:

- inputs: `history` float32 `(batch, lookback, channels)` (complete: no NaN),
  `end_time` int64 `(batch,)` Unix seconds of the last history step.
- outputs: `forecast (batch, H, channels)`, `p10`, `p50`, `p90` (same shape).

`serving_default` forecasts the longest horizon; `horizon_<H>` each horizon.
The standardisation with the training statistics and its inverse are part of
the graph (TensorFlow core ops only).

Example:

```python
forecaster = zoo.load("forecaster_electricity")
export_saved_model(forecaster, "/tmp/forecaster_electricity")

import tensorflow as tf
served = tf.saved_model.load("/tmp/forecaster_electricity")
out = served.signatures["serving_default"](
    history=tf.constant(history[None, -336:, None], tf.float32),
    end_time=tf.constant([1419465600], tf.int64),
)
out["forecast"], out["p10"], out["p90"]
```
"""

import os

import keras


def _serving_function(tf, model, lookback, mean, std, channels):
    spec = [
        tf.TensorSpec((None, lookback, channels), tf.float32, name="history"),
        tf.TensorSpec((None,), tf.int64, name="end_time"),
    ]

    @tf.function(input_signature=spec)
    def serve(history, end_time):
        x = (history - mean) / std  # (B, L, C)
        known = tf.ones_like(end_time, dtype=tf.float32)
        outputs = model({"history": x, "end_time": end_time, "time_known": known},
                        training=False)
        point = tf.cast(outputs["point"], tf.float32) * std + mean  # (B, H, C)
        quantiles = tf.cast(outputs["quantiles"], tf.float32)
        quantiles = quantiles * std[:, None] + mean[:, None]  # (B, H, C, 3)
        return {
            "forecast": point,
            "p10": quantiles[..., 0],
            "p50": quantiles[..., 1],
            "p90": quantiles[..., 2],
        }

    return serve


def export_saved_model(forecaster, path):
    """Writes `forecaster` as a SavedModel folder at `path` and returns `path`.

    Requires the TensorFlow backend.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow). "
            f"Received: backend={keras.backend.backend()}"
        )
    import tensorflow as tf

    mean = tf.constant(forecaster.mean, tf.float32)
    std = tf.constant(forecaster.std, tf.float32)
    archive = keras.export.ExportArchive()
    for model in forecaster.models.values():
        archive.track(model)
    channels = len(forecaster.channels)
    longest = forecaster.horizons[-1]
    archive.add_endpoint(
        "serving_default",
        _serving_function(tf, forecaster.models[longest], forecaster.lookback, mean, std,
                          channels),
    )
    for horizon in forecaster.horizons:
        archive.add_endpoint(
            f"horizon_{horizon}",
            _serving_function(tf, forecaster.models[horizon], forecaster.lookback, mean,
                              std, channels),
        )
    path = os.fspath(path)
    archive.write_out(path, verbose=False)
    return path
