"""Attention with Linear Biases, ALiBi (Press et al. 2022).

Shape legend: B batch, T query length, S key length, F features, N heads.
"""

import keras
import numpy as np
from keras import ops

from keras_attention.layers.encodings._utils import (
    check_length,
    check_position,
    relative_positions,
)
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class ALiBi(AttentionPositionEncoding):
    """Linear distance bias of "Train Short, Test Long: Attention with Linear
    Biases Enables Input Length Extrapolation" (Press et al. 2022).

    Head `h` of `n` (`h = 1 .. n`) has the fixed slope `m_h = 2^(-8h / n)` and
    adds `-m_h * |i - j|` to the logit of query `i` and key `j`; with
    `num_heads=8` the slopes are `1/2, 1/4, ..., 1/256`. The same formula is used
    for every `n` (the paper's reference code interleaves slopes of the nearest
    powers of two when `n` is not a power of two). There are no weights.

    Pass the layer to an attention layer through `position_encoding=`; its
    `num_heads` must match the attention layer's. With a causal mask the bias
    equals the paper's `-m_h * (i - j)` on every allowed key.

    Args:
        num_heads: the number of attention heads, a positive int.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, seq, features)`; only its shape is used.

    Returns:
        `(1, num_heads, seq, seq)` bias in the compute dtype, `compute_bias(seq,
        seq)`.

    Example:

    >>> alibi = ALiBi(num_heads=8)
    >>> alibi.slopes[:3]
    array([0.5  , 0.25 , 0.125], dtype=float32)
    >>> tuple(alibi.compute_bias(4, 6).shape)
    (1, 8, 4, 6)
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)

    @property
    def slopes(self):
        """The `(num_heads,)` float32 NumPy array of head slopes `2^(-8h / n)`."""
        h = np.arange(1, self.num_heads + 1, dtype="float64")
        return (2.0 ** (-8.0 * h / self.num_heads)).astype("float32")

    def _check_shape(self, shape):
        if shape is None or len(shape) not in (3, 4):
            got = None if shape is None else tuple(shape)
            raise ValueError(
                "`inputs` must have rank 3 (batch, seq, features) or 4 "
                f"(batch, seq, heads, head_dim). Received: shape={got}"
            )
        if len(shape) == 4 and shape[2] not in (None, self.num_heads):
            raise ValueError(
                f"`inputs` must have num_heads={self.num_heads} heads (axis 2). "
                f"Received: shape={tuple(shape)}"
            )

    def build(self, input_shape):
        self._check_shape(input_shape)

    def check_attention_shapes(self, num_heads, key_dim, value_dim):
        if num_heads != self.num_heads:
            raise ValueError(
                f"ALiBi was created for {self.num_heads} heads and must match the "
                f"attention layer's num_heads. Received: num_heads={num_heads}"
            )

    def compute_bias(self, query_length, key_length, query_start=None):
        """The logits bias `-slope * |i - j|`, `(1, num_heads, T, S)` float32.

        Args:
            query_length: `T`, an int or scalar tensor.
            key_length: `S`, keys at positions `0 .. S - 1`.
            query_start: position of the first query; None aligns the last query
                with the last key (`S - T`, as in decoding with a cache).
        """
        check_length("query_length", query_length)
        check_length("key_length", key_length)
        if query_start is not None:
            check_position("query_start", query_start)
        rel = relative_positions(query_length, key_length, query_start)  # (T, S)
        distance = ops.cast(ops.abs(rel), "float32")  # (T, S)
        slopes = ops.convert_to_tensor(self.slopes)  # (N,)
        return -slopes[None, :, None, None] * distance[None, None]  # (1, N, T, S)

    def attention_bias(self, query, key_length, query_start, scale):
        return self.compute_bias(ops.shape(query)[1], key_length, query_start)

    def call(self, inputs):
        self._check_shape(inputs.shape)
        t = ops.shape(inputs)[1]
        return ops.cast(self.compute_bias(t, t), self.compute_dtype)  # (1, N, T, T)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config
