"""Point and quantile forecasts from patch tokens, back on the input's scale.

Shape legend: B batch, C channels, N patches, D hidden size, H horizon,
Q quantiles.
"""

import keras
from keras import ops

from keras_attention.utils.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_attention")
class ForecastHead(keras.layers.Layer):
    """Flatten-linear forecast head of PatchTST (Nie et al. 2023) with quantiles.

    The `N` tokens of a channel are flattened and mapped linearly to the `H`
    point forecasts. The quantiles at levels `(0.1, 0.5, 0.9)` come from a
    small two-layer head on the same flattened tokens: the median is the point
    forecast plus a correction, and the lower and upper quantiles lie a
    positive (softplus) distance below and above the median, so they never
    cross. Finally the instance normalisation is undone:
    `forecast * scale + loc`.

    Args:
        horizon: forecast length H.
        quantile_rank: hidden size of the quantile head.
        num_quantiles: Q, 3 for P10/P50/P90 (the median is the middle one).
        dropout: dropout on the flattened tokens.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: list `[tokens (B * C, N, D), loc (B, 1, C), scale (B, 1, C)]`.
        training: enables dropout.

    Returns:
        `(point (B, H, C), quantiles (B, H, C, Q))`.

    Example:

    >>> head = ForecastHead(horizon=24)
    >>> tokens = keras.random.normal((6, 12, 32))
    >>> point, q = head([tokens, keras.ops.zeros((2, 1, 3)), keras.ops.ones((2, 1, 3))])
    >>> tuple(point.shape), tuple(q.shape)
    ((2, 24, 3), (2, 24, 3, 3))
    """

    def __init__(self, horizon, quantile_rank=32, num_quantiles=3, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.horizon = check_positive_int("horizon", horizon)
        self.quantile_rank = check_positive_int("quantile_rank", quantile_rank)
        self.num_quantiles = check_positive_int("num_quantiles", num_quantiles)
        if self.num_quantiles % 2 != 1:
            raise ValueError(
                "`num_quantiles` must be odd (the middle one is the median). "
                f"Received: num_quantiles={num_quantiles}"
            )
        self.dropout = check_rate("dropout", dropout)

    def build(self, input_shape):
        tokens_shape = tuple(input_shape[0])
        if len(tokens_shape) != 3 or tokens_shape[1] is None or tokens_shape[2] is None:
            raise ValueError(
                "`tokens` must have shape (batch * channels, patches, features) with "
                f"known patches and features. Received: shape={tokens_shape}"
            )
        flat = tokens_shape[1] * tokens_shape[2]
        self.flat_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.point_projection = keras.layers.Dense(
            self.horizon, dtype=self.dtype_policy, name="point_projection"
        )
        self.point_projection.build((None, flat))
        self.quantile_hidden = keras.layers.Dense(
            self.quantile_rank, activation="gelu", dtype=self.dtype_policy,
            name="quantile_hidden",
        )
        self.quantile_hidden.build((None, flat))
        self.quantile_projection = keras.layers.Dense(
            self.horizon * self.num_quantiles, kernel_initializer="zeros",
            dtype=self.dtype_policy, name="quantile_projection",
        )
        self.quantile_projection.build((None, self.quantile_rank))
        self.built = True

    def call(self, inputs, training=None):
        tokens, loc, scale = inputs
        flat = ops.reshape(tokens, (-1, tokens.shape[1] * tokens.shape[2]))  # (B*C, N*D)
        flat = self.flat_dropout(flat, training=training)
        point = self.point_projection(flat)  # (B*C, H)
        raw = self.quantile_projection(self.quantile_hidden(flat))
        raw = ops.reshape(raw, (-1, self.horizon, self.num_quantiles))  # (B*C, H, Q)
        middle = self.num_quantiles // 2
        median = point + raw[..., middle]
        below = ops.cumsum(ops.softplus(raw[..., :middle][..., ::-1]), axis=-1)[..., ::-1]
        above = ops.cumsum(ops.softplus(raw[..., middle + 1:]), axis=-1)
        quantiles = ops.concatenate(
            [median[..., None] - below, median[..., None], median[..., None] + above], axis=-1
        )  # (B*C, H, Q)

        batch, channels = ops.shape(loc)[0], ops.shape(loc)[2]
        point = ops.transpose(ops.reshape(point, (batch, channels, self.horizon)), (0, 2, 1))
        quantiles = ops.transpose(
            ops.reshape(quantiles, (batch, channels, self.horizon, self.num_quantiles)),
            (0, 2, 1, 3),
        )  # (B, H, C, Q)
        loc = ops.cast(loc, point.dtype)
        scale = ops.cast(scale, point.dtype)
        point = point * scale + loc  # (B, H, C)
        quantiles = quantiles * scale[..., None] + loc[..., None]  # (B, H, C, Q)
        return point, quantiles

    def compute_output_shape(self, input_shape):
        loc_shape = input_shape[1]
        point = (loc_shape[0], self.horizon, loc_shape[2])
        return point, point + (self.num_quantiles,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "horizon": self.horizon,
            "quantile_rank": self.quantile_rank,
            "num_quantiles": self.num_quantiles,
            "dropout": self.dropout,
        })
        return config
