"""Linformer attention: keys and values projected to a fixed length along the sequence.

Shape legend: B batch, T query length, S key length, S_max the longest key length
(`max_length`), P projected length, F features, N query heads, K key/value heads,
H key head dim, V value head dim, O output features.
"""

import keras
from keras import ops

from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    check_no_logits_bias,
    checked_query_mask,
    reject_arguments,
)
from keras_attention.ops.attention import scaled_dot_product_attention, zero_rows
from keras_attention.utils.validation import check_positive_int

@keras.saving.register_keras_serializable(package="keras_attention")
class LowRankAttention(MultiHeadAttention):
    """Linformer attention (Wang et al. 2020, "Linformer: Self-Attention with Linear
    Complexity").

    The per-head keys and values `(B, S, K, H)` are projected along the sequence
    axis to `P = projected_length` rows by learned `(S_max, P)` matrices `E` (keys)
    and `F` (values), shared by all heads. Each query then attends the `P`
    projected keys, so time and memory grow as `T * P` instead of `T * S`.

    The projection needs a longest key length `S_max`: `max_length`, or the static
    key length seen when the layer is built. Shorter sequences use the first `S`
    rows of `E` and `F`; a longer one raises a `ValueError`.

    Masks: the projection mixes positions, so masks act before it. Keys and values
    at padded positions (`value_mask`, `key_mask`, Keras implicit masks) are set to
    zero before the projection, so they carry no information; they are not removed
    from the `P` projected slots, which is the Linformer approximation. `query_mask`
    zeroes the output rows of padded queries. A general `attention_mask (B, T, S)`
    cannot act through the projection and raises a `ValueError`, and so does
    `use_causal_mask=True`: every projected key mixes all positions, future ones
    included (the paper's model is bidirectional).

    No `(T, S)` matrix is formed. The weights are over the `P` projected keys, not
    the `S` keys, so they do not fit the `(B, N, T, S)` contract of attention
    scores: `return_attention_scores=True` raises a `ValueError`.

    With `projected_length == S` and `E = F = I` the layer is exactly
    `MultiHeadAttention` (tested with hand-set weights; documented error against
    exact attention: below 1e-6).

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        projected_length: number P of projected key/value rows.
        max_length: longest key length S_max; defaults to the static key length
            at build time.
        share_projection: use one matrix for keys and values (`E = F`, the
            paper's key-value sharing).
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`).
        dropout: dropout rate on the `(B, N, T, P)` attention weights.
        use_bias: whether the dense projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: `None` or a rotary encoding (instance, config or
            `"rotary"`); encodings that add a `(T, S)` logits bias (ALiBi, T5, Shaw)
            raise a `ValueError`.
        kernel_initializer, bias_initializer: dense projection initializers.
        projection_initializer: initializer of `E` and `F`.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, T, F)`.
        value: `(B, S, F_v)` with `S <= S_max`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` padding masks;
            filled from Keras implicit masks when not given.
        attention_mask: not supported (must be None).
        use_causal_mask: not supported (must be False).
        return_attention_scores: not supported (must be False).
        training: enables dropout.

    Returns:
        `output (B, T, O)`; rows of padded queries, and every row of a sequence
        without any valid key, are zeros.

    Example:

    >>> x = keras.random.normal((2, 64, 32))
    >>> layer = LowRankAttention(num_heads=4, key_dim=8, projected_length=16)
    >>> layer(x, x).shape
    (2, 64, 32)
    """

    supports_attention_scores = False

    def __init__(
        self,
        num_heads,
        key_dim,
        projected_length,
        max_length=None,
        share_projection=False,
        value_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        position_encoding=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        projection_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        reject_arguments(type(self).__name__, kwargs, UNUSED_ARGUMENTS)
        super().__init__(
            num_heads,
            key_dim,
            value_dim=value_dim,
            num_key_value_heads=num_key_value_heads,
            dropout=dropout,
            use_bias=use_bias,
            output_dim=output_dim,
            position_encoding=position_encoding,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            **kwargs,
        )
        self.projected_length = check_positive_int("projected_length", projected_length)
        self.max_length = check_positive_int("max_length", max_length, allow_none=True)
        self.share_projection = bool(share_projection)
        self.projection_initializer = keras.initializers.get(projection_initializer)
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)
        self._max_length = max_length

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        length = value_shape[1]
        if self.max_length is None and length is None:
            raise ValueError(
                "LowRankAttention needs the longest key length for its (max_length, "
                "projected_length) projections: pass `max_length` or build it on "
                "inputs with a static sequence length. Received: max_length=None, "
                f"value.shape={tuple(value_shape)}"
            )
        self._max_length = self.max_length or length
        self._check_key_length(length)
        shape = (self._max_length, self.projected_length)
        self.key_projection = self.add_weight(
            name="key_projection", shape=shape, initializer=self._projection_init()
        )
        if not self.share_projection:
            self.value_projection = self.add_weight(
                name="value_projection", shape=shape, initializer=self._projection_init()
            )

    def _projection_init(self):
        # A fresh initializer per weight, so a seeded one does not repeat itself.
        return keras.initializers.get(
            keras.initializers.serialize(self.projection_initializer)
        )

    def _check_key_length(self, length):
        """Raise when a static key length exceeds the projections' rows."""
        longest = self._max_length
        if isinstance(length, int) and longest is not None and length > longest:
            raise ValueError(
                "LowRankAttention projects keys of at most max_length positions (the "
                f"rows of its projections). Received: key length={length}, "
                f"max_length={longest}"
            )

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        if use_causal_mask:
            raise ValueError(
                "LowRankAttention cannot be causal: every projected key and value mixes "
                "all positions, future ones included. Received: use_causal_mask=True"
            )
        if attention_mask is not None:
            raise ValueError(
                "LowRankAttention supports padding masks (query_mask, value_mask, "
                "key_mask) only: a (B, T, S) mask cannot act through the sequence "
                "projection. Received: attention_mask with shape="
                f"{tuple(ops.convert_to_tensor(attention_mask).shape)}"
            )
        query_mask = checked_query_mask(self, query, value, key, query_mask)
        # query_mask stays out of the merged mask, which is then the (B, 1, S) key
        # padding mask: no (B, T, S) tensor is built.
        output = self._attention_call(
            query, value, key, None, value_mask, key_mask, None, False,
            return_attention_scores, training,
        )
        return zero_rows(output, query_mask)

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Attention over the projected keys; `mask` is None or `(B, 1, 1, S)`."""
        self._check_key_length(key.shape[1])
        s = ops.shape(key)[1]
        if mask is not None:
            keep = ops.cast(mask[:, 0, 0, :], key.dtype)[:, :, None, None]  # (B, S, 1, 1)
            key = key * keep  # (B, S, K, H)
            value = value * ops.cast(keep, value.dtype)  # (B, S, K, V)
        e = self.key_projection  # (S_max, P)
        f = e if self.share_projection else self.value_projection  # (S_max, P)
        if isinstance(s, int):
            e, f = e[:s], f[:s]  # (S, P): the first S rows
        else:  # a symbolic length (gather works where slicing cannot be checked)
            rows = ops.arange(s, dtype="int32")
            e, f = ops.take(e, rows, axis=0), ops.take(f, rows, axis=0)  # (S, P)
        e, f = ops.cast(e, key.dtype), ops.cast(f, value.dtype)
        key = ops.einsum("bskh,sp->bpkh", key, e)  # (B, P, K, H)
        value = ops.einsum("bskv,sp->bpkv", value, f)  # (B, P, K, V)
        rate = self.dropout if training else 0.0
        output = scaled_dot_product_attention(
            query, key, value, dropout_rate=rate, training=bool(training),
            seed=self.seed_generator,
        )  # (B, T, N, V)
        return output, None

    def get_config(self):
        config = super().get_config()
        for name in UNUSED_ARGUMENTS:
            config.pop(name)
        config.update(
            {
                "projected_length": self.projected_length,
                "max_length": self.max_length,
                "share_projection": self.share_projection,
                "projection_initializer": keras.initializers.serialize(
                    self.projection_initializer
                ),
            }
        )
        return config
