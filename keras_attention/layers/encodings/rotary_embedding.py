"""Rotary position embedding, RoFormer / RoPE (Su et al. 2021).

Shape legend: B batch, T sequence length, N heads, H head dim (even).
"""

import keras
import numpy as np
from keras import ops

from keras_attention.layers.encodings._utils import (
    check_position,
    check_positive_number,
    positions,
)
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.utils.validation import check_rank


@keras.saving.register_keras_serializable(package="keras_attention")
class RotaryEmbedding(AttentionPositionEncoding):
    """Rotary position embedding of "RoFormer: Enhanced Transformer with Rotary
    Position Embedding" (Su et al. 2021).

    Each adjacent feature pair `(x[2i], x[2i+1])` of a head vector at position
    `p` is rotated by the angle `p * base^(-2i / H)`. Rotating queries and keys
    this way makes `q . k` depend on their positions only through the offset
    between them. Angles and the rotation are computed in float32 and the result
    is cast back to the input dtype. There are no weights.

    Pass the layer to an attention layer through `position_encoding=` (it rotates
    queries and keys through `transform_query_key`), or call it on per-head
    tensors directly.

    Args:
        base: the wavelength base, `10000` in the paper. A positive number.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: per-head tensor `(batch, seq, heads, head_dim)` with an even
            `head_dim`.
        start_index: position of the first row, an int or scalar integer tensor
            (the cache index when decoding with a cache). Defaults to 0.

    Returns:
        The rotated tensor, same shape and dtype as `inputs`.

    Example:

    >>> rope = RotaryEmbedding()
    >>> q = keras.random.normal((2, 8, 4, 16))  # (B, T, N, H)
    >>> tuple(rope(q).shape)
    (2, 8, 4, 16)
    """

    def __init__(self, base=10000, **kwargs):
        super().__init__(**kwargs)
        self.base = check_positive_number("base", base)

    @staticmethod
    def _check_shape(shape):
        check_rank("inputs", shape, 4, "(batch, seq, heads, head_dim)")
        head_dim = shape[-1]
        if head_dim is None or head_dim % 2:
            raise ValueError(
                "`inputs` must have a known, even head_dim (last axis) to rotate "
                f"feature pairs. Received: shape={tuple(shape)}"
            )

    def build(self, input_shape):
        self._check_shape(input_shape)

    def _rotate(self, x, start):
        """Rotate `(B, T, N, H)` rows at positions `start + arange(T)`."""
        shape = ops.shape(x)
        head_dim = x.shape[-1]
        half = head_dim // 2
        inv_freq = self.base ** (-np.arange(half, dtype="float64") * 2.0 / head_dim)
        inv_freq = ops.convert_to_tensor(inv_freq.astype("float32"))  # (H/2,)
        angles = positions(shape[1], start)[:, None] * inv_freq[None, :]  # (T, H/2)
        cos = ops.cos(angles)[None, :, None, :]  # (1, T, 1, H/2)
        sin = ops.sin(angles)[None, :, None, :]  # (1, T, 1, H/2)
        pairs = ops.reshape(ops.cast(x, "float32"),
                            (shape[0], shape[1], shape[2], half, 2))  # (B, T, N, H/2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]  # (B, T, N, H/2)
        rotated = ops.stack([even * cos - odd * sin, even * sin + odd * cos],
                            axis=-1)  # (B, T, N, H/2, 2)
        return ops.cast(ops.reshape(rotated, shape), x.dtype)  # (B, T, N, H)

    def call(self, inputs, start_index=0):
        self._check_shape(inputs.shape)
        start_index = check_position("start_index", start_index)
        return self._rotate(inputs, start_index)

    def transform_query_key(self, query, key, query_start, key_start):
        return self._rotate(query, query_start), self._rotate(key, key_start)

    def get_config(self):
        config = super().get_config()
        config.update({"base": self.base})
        return config
