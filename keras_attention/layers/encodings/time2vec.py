"""Time2Vec learned time embedding (Kazemi et al. 2019) and calendar features.

Shape legend: B batch, T sequence length, K kernel_size.
"""

import math

import keras
from keras import ops

from keras_attention.utils.validation import check_positive_int

SECONDS_PER_DAY = 86400


def _is_leap(year):
    """Gregorian leap-year test on an integer tensor."""
    return ops.logical_or(
        ops.logical_and(ops.equal(ops.mod(year, 4), 0), ops.not_equal(ops.mod(year, 100), 0)),
        ops.equal(ops.mod(year, 400), 0),
    )


@keras.saving.register_keras_serializable(package="keras_attention")
class Time2Vec(keras.layers.Layer):
    """Learned embedding of a scalar time, "Time2Vec: Learning a Vector
    Representation of Time" (Kazemi et al. 2019).

    For a time `tau` the layer returns `kernel_size` features: element 0 is the
    linear term `w_0 * tau + b_0` and element `i >= 1` the periodic term
    `sin(w_i * tau + b_i)`, with trainable frequencies `w` and phases `b`. The
    result is a feature embedding of time for the caller to concatenate to (or
    add to) other features. Inputs are not cast to the compute dtype (under
    `mixed_float16` a time value would lose precision); the layer computes in
    float32 and casts the result to the compute dtype.

    For timestamps, `Time2Vec.calendar_features(seconds)` gives fixed sin/cos
    encodings of the hour of day, day of week and day of year; both can be
    concatenated.

    Args:
        kernel_size: the number of output features (1 linear + `kernel_size - 1`
            periodic), a positive int.
        kernel_initializer: initializer of the frequencies `w`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the phases `b`. Defaults to `"zeros"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: times, `(batch, seq, 1)` or `(batch, seq)`.

    Returns:
        `(batch, seq, kernel_size)` in the compute dtype.

    Example:

    >>> t = keras.ops.reshape(keras.ops.arange(16, dtype="float32"), (2, 8, 1))
    >>> tuple(Time2Vec(kernel_size=6)(t).shape)
    (2, 8, 6)
    """

    def __init__(self, kernel_size, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**{"autocast": False, **kwargs})
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    @staticmethod
    def _check_shape(shape):
        rank = None if shape is None else len(shape)
        if rank not in (2, 3) or (rank == 3 and shape[-1] != 1):
            got = None if shape is None else tuple(shape)
            raise ValueError(
                "`inputs` must have shape (batch, seq, 1) or (batch, seq). "
                f"Received: shape={got}"
            )

    def build(self, input_shape):
        self._check_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size,), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.kernel_size,), initializer=self.bias_initializer
        )

    def call(self, inputs):
        self._check_shape(inputs.shape)
        tau = ops.cast(inputs, "float32")
        if len(tau.shape) == 2:
            tau = tau[..., None]  # (B, T, 1)
        z = tau * ops.cast(self.kernel, "float32") + ops.cast(self.bias, "float32")  # (B, T, K)
        out = ops.concatenate([z[..., :1], ops.sin(z[..., 1:])], axis=-1)  # (B, T, K)
        return ops.cast(out, self.compute_dtype)

    @staticmethod
    def calendar_features(timestamps):
        """Fixed sin/cos calendar features of Unix timestamps (UTC).

        The phases are the time of day (`seconds_of_day / 86400`), the day of week
        (`(weekday + day_fraction) / 7`, Monday 00:00 = 0) and the day of year
        (`(day_of_year + day_fraction) / days_in_year`, January 1 00:00 = 0,
        leap years counted); each phase `x` gives `sin(2 pi x), cos(2 pi x)`.

        Args:
            timestamps: seconds since 1970-01-01 00:00 UTC, any shape. Integer
                timestamps are exact; float32 timestamps near today's values are
                only resolved to about two minutes. On JAX without 64-bit mode,
                integers are 32-bit (until 2038).

        Returns:
            float32 tensor of shape `timestamps.shape + (6,)`: `[sin_day, cos_day,
            sin_week, cos_week, sin_year, cos_year]`.

        Example:

        >>> f = Time2Vec.calendar_features([0, 6 * 3600])  # Thursday 1970-01-01
        >>> tuple(f.shape)
        (2, 6)
        """
        ts = ops.convert_to_tensor(timestamps)
        dtype = keras.backend.standardize_dtype(ts.dtype)
        if "int" in dtype:
            days = ops.floor_divide(ts, SECONDS_PER_DAY)
            seconds = ops.cast(ops.mod(ts, SECONDS_PER_DAY), "float32")  # [0, 86400)
        elif "float" in dtype:
            days = ops.floor(ts / SECONDS_PER_DAY)
            seconds = ops.cast(ts - days * SECONDS_PER_DAY, "float32")
        else:
            raise TypeError(
                "`timestamps` must be integer or floating-point seconds. "
                f"Received: dtype={dtype}"
            )
        days = ops.cast(days, "int32")
        day_fraction = seconds / SECONDS_PER_DAY  # [0, 1)
        weekday = ops.mod(days + 3, 7)  # 1970-01-01 was a Thursday; Monday = 0
        # Civil calendar from the day count, with years starting on March 1 so
        # that the leap day is the last day of the year (H. Hinnant's algorithm).
        z = days + 719468  # days since 0000-03-01
        era = ops.floor_divide(z, 146097)  # 400-year cycles
        doe = z - era * 146097  # day of era, [0, 146096]
        yoe = ops.floor_divide(
            doe - ops.floor_divide(doe, 1460) + ops.floor_divide(doe, 36524)
            - ops.floor_divide(doe, 146096), 365)  # year of era, [0, 399]
        day_from_march = doe - (365 * yoe + ops.floor_divide(yoe, 4)
                                - ops.floor_divide(yoe, 100))  # [0, 365]
        jan_feb = day_from_march >= 306  # January and February close the March year
        leap = ops.where(jan_feb, _is_leap(yoe + 1), _is_leap(yoe))
        day_of_year = ops.where(jan_feb, day_from_march - 306,
                                day_from_march + 59 + ops.cast(leap, "int32"))
        year_length = 365.0 + ops.cast(leap, "float32")
        phases = ops.stack([
            day_fraction,
            (ops.cast(weekday, "float32") + day_fraction) / 7.0,
            (ops.cast(day_of_year, "float32") + day_fraction) / year_length,
        ], axis=-1)  # (..., 3)
        angles = 2.0 * math.pi * phases
        features = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # (..., 3, 2)
        return ops.reshape(features, tuple(ops.shape(ts)) + (6,))

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_size": self.kernel_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config
