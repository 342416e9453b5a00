"""Instance normalisation of a look-back window, undone at the output (RevIN).

Shape legend: B batch, L look-back length, C channels.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_attention")
class InstanceNormalization(keras.layers.Layer):
    """Per-window, per-channel standardisation of a series (Kim et al. 2022,
    "Reversible Instance Normalization for Accurate Time-Series Forecasting
    against Distribution Shift").

    Each channel of each window is shifted by its mean and divided by its
    standard deviation over time; the layer returns the statistics as well so
    that a forecast head can map its output back to the input's scale
    (`forecast * scale + loc`). A constant window gives zeros, not NaN.

    Args:
        epsilon: added to the variance before the square root.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, L, C)`.

    Returns:
        `(normalised (B, L, C), loc (B, 1, C), scale (B, 1, C))`.

    Example:

    >>> x = keras.random.normal((2, 96, 3)) * 5.0 + 10.0
    >>> z, loc, scale = InstanceNormalization()(x)
    >>> tuple(z.shape), tuple(loc.shape)
    ((2, 96, 3), (2, 1, 3))
    """

    def __init__(self, epsilon=1e-5, scale=True, **kwargs):
        super().__init__(**kwargs)
        self.scale = bool(scale)
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or epsilon <= 0:
            raise ValueError(f"`epsilon` must be a positive number. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "`inputs` must have rank 3 (batch, time, channels). "
                f"Received: shape={tuple(input_shape)}"
            )
        self.built = True

    def call(self, inputs):
        loc = ops.mean(inputs, axis=1, keepdims=True)  # (B, 1, C)
        variance = ops.mean(ops.square(inputs - loc), axis=1, keepdims=True)
        scale = ops.sqrt(variance + self.epsilon)  # (B, 1, C)
        if not self.scale:
            scale = ops.ones_like(scale)
        return (inputs - loc) / scale, loc, scale

    def compute_output_shape(self, input_shape):
        stats = (input_shape[0], 1, input_shape[2])
        return tuple(input_shape), stats, stats

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "scale": self.scale})
        return config
