"""Fixed sine/cosine position encoding (Vaswani et al. 2017).

Shape legend: B batch, T sequence length, F features.
"""

import keras
from keras import ops

from keras_attention.layers.encodings._utils import (
    check_position,
    check_positive_number,
    positions,
    sinusoid,
)
from keras_attention.utils.validation import check_rank


@keras.saving.register_keras_serializable(package="keras_attention")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Sine/cosine position encoding of "Attention Is All You Need"
    (Vaswani et al. 2017).

    For position `p` and feature `j` of `d` features, `PE[p, 2i] =
    sin(p / base^(2i / d))` and `PE[p, 2i + 1] = cos(p / base^(2i / d))`. The
    table has no weights and no maximum length; an odd `d` ends with a sine
    column. The layer returns the encoding, broadcastable to its input, for the
    caller to add; it is computed in float32 and cast to the compute dtype.

    Args:
        base: the wavelength base, `10000` in the paper. A positive number.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, seq, features)`; only its shape is used.
        start_index: position of the first row, a non-negative int or scalar
            integer tensor (for decoding one step at a time). Defaults to 0.

    Returns:
        `(1, seq, features)` encoding in the compute dtype.

    Example:

    >>> x = keras.random.normal((2, 8, 16))
    >>> y = x + SinusoidalPositionEncoding()(x)
    >>> tuple(y.shape)
    (2, 8, 16)
    """

    def __init__(self, base=10000, **kwargs):
        super().__init__(**kwargs)
        self.base = check_positive_number("base", base)

    @staticmethod
    def _check_shape(shape):
        check_rank("inputs", shape, 3, "(batch, seq, features)")
        if shape[-1] is None:
            raise ValueError(
                "`inputs` must have a known number of features (last axis). "
                f"Received: shape={tuple(shape)}"
            )

    def build(self, input_shape):
        self._check_shape(input_shape)

    def call(self, inputs, start_index=0):
        self._check_shape(inputs.shape)
        start_index = check_position("start_index", start_index, allow_negative=False)
        length = ops.shape(inputs)[1]
        p = positions(length, start_index)  # (T,)
        table = sinusoid(p, inputs.shape[-1], self.base)  # (T, F) float32
        return ops.cast(table[None], self.compute_dtype)  # (1, T, F)

    def get_config(self):
        config = super().get_config()
        config.update({"base": self.base})
        return config
