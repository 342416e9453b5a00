"""T5 relative position bias with log-spaced buckets (Raffel et al. 2020).

Shape legend: B batch, T query length, S key length, F features, N heads,
M num_buckets.
"""

import math

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


def _bucket_table(num_buckets, max_distance):
    """T5 bucket of each distance `0 .. max_distance` for one direction (NumPy).

    Distances below `num_buckets // 2` get their own bucket; larger ones share
    log-spaced buckets up to `max_distance`, past which they all fall into the last
    bucket. Computed in float32 as in the reference implementation.
    """
    max_exact = num_buckets // 2
    n = np.arange(max_distance + 1)
    ratio = np.maximum(n, max_exact).astype("float32") / np.float32(max_exact)
    scaled = (np.log(ratio) / np.float32(math.log(max_distance / max_exact))
              * np.float32(num_buckets - max_exact))
    large = np.minimum(max_exact + scaled.astype("int32"), num_buckets - 1)
    return np.where(n < max_exact, n, large).astype("int32")


@keras.saving.register_keras_serializable(package="keras_attention")
class RelativePositionBias(AttentionPositionEncoding):
    """Learned per-head logits bias over bucketed relative positions, from
    "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
    Transformer" (T5, Raffel et al. 2020).

    The relative position `j - i` (key minus query) is mapped to one of
    `num_buckets` buckets: small distances exactly, larger ones log-spaced up to
    `max_distance`, past which all share the last bucket. With
    `bidirectional=True` half the buckets serve keys after the query (`j > i`)
    and half the others; otherwise only keys at or before the query are told
    apart and later keys share bucket 0. A trainable `(num_buckets, num_heads)`
    table gives each head a bias per bucket, added to the attention logits
    unscaled.

    Pass the layer to an attention layer through `position_encoding=`; its
    `num_heads` must match the attention layer's.

    Args:
        num_heads: the number of attention heads, a positive int.
        num_buckets: the number of buckets, at least 4 when bidirectional and 2
            otherwise. Defaults to 32.
        max_distance: the distance from which all positions share the last
            bucket; greater than the number of exact buckets
            (`num_buckets // 4` when bidirectional, else `num_buckets // 2`).
            Defaults to 128.
        bidirectional: whether keys after the query get their own buckets (True
            for encoders, False for causal decoders). Defaults to True.
        initializer: initializer of the bias table. Defaults to
            `"glorot_uniform"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, seq, features)`; only its shape is used.

    Returns:
        `(1, num_heads, seq, seq)` bias in the compute dtype, `compute_bias(seq,
        seq)`.

    Example:

    >>> bias = RelativePositionBias(num_heads=4)
    >>> tuple(bias.compute_bias(5, 7).shape)
    (1, 4, 5, 7)
    """

    def __init__(self, num_heads, num_buckets=32, max_distance=128, bidirectional=True,
                 initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.num_buckets = check_positive_int("num_buckets", num_buckets)
        self.max_distance = check_positive_int("max_distance", max_distance)
        if not isinstance(bidirectional, bool):
            raise TypeError(
                f"`bidirectional` must be a bool. Received: bidirectional={bidirectional!r}"
            )
        self.bidirectional = bidirectional
        self.initializer = keras.initializers.get(initializer)
        smallest = 4 if bidirectional else 2
        if self.num_buckets < smallest:
            raise ValueError(
                f"`num_buckets` must be at least {smallest} when "
                f"bidirectional={bidirectional}. Received: num_buckets={num_buckets}"
            )
        self._side_buckets = self.num_buckets // 2 if bidirectional else self.num_buckets
        max_exact = self._side_buckets // 2
        if self.max_distance <= max_exact:
            raise ValueError(
                f"`max_distance` must be greater than the {max_exact} exactly bucketed "
                f"distances (num_buckets={num_buckets}, bidirectional={bidirectional}). "
                f"Received: max_distance={max_distance}"
            )
        self._table = _bucket_table(self._side_buckets, self.max_distance)  # (max_distance+1,)

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
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=self.initializer,
        )

    def check_attention_shapes(self, num_heads, key_dim, value_dim):
        if num_heads != self.num_heads:
            raise ValueError(
                f"RelativePositionBias was created for {self.num_heads} heads and must "
                f"match the attention layer's num_heads. Received: num_heads={num_heads}"
            )

    def relative_position_bucket(self, relative_position):
        """Bucket index (int32, same shape) of each relative position `j - i`."""
        rel = ops.cast(relative_position, "int32")
        if self.bidirectional:
            offset = ops.cast(rel > 0, "int32") * self._side_buckets
            distance = ops.abs(rel)
        else:
            offset = 0
            distance = ops.maximum(-rel, 0)
        distance = ops.minimum(distance, self.max_distance)
        table = ops.convert_to_tensor(self._table)
        return ops.take(table, distance, axis=0) + offset

    def compute_bias(self, query_length, key_length, query_start=None):
        """The logits bias `(1, num_heads, T, S)`, float32.

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
        if not self.built:
            self.build((None, None, self.num_heads, None))
        rel = relative_positions(query_length, key_length, query_start)  # (T, S)
        bucket = self.relative_position_bucket(rel)  # (T, S)
        values = ops.take(ops.cast(self.embeddings, "float32"), bucket, axis=0)  # (T, S, N)
        return ops.transpose(values, (2, 0, 1))[None]  # (1, N, T, S)

    def attention_bias(self, query, key_length, query_start, scale):
        return self.compute_bias(ops.shape(query)[1], key_length, query_start)

    def call(self, inputs):
        self._check_shape(inputs.shape)
        t = ops.shape(inputs)[1]
        return ops.cast(self.compute_bias(t, t), self.compute_dtype)  # (1, N, T, T)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "initializer": keras.initializers.serialize(self.initializer),
        })
        return config
