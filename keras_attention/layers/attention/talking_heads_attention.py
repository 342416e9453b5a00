"""Talking-heads attention: multi-head attention whose heads exchange information
through learned mixings of the logits (before the softmax) and of the weights
(after it).

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads, H key head dim, V value head dim, M heads after a mixing (M = N).
"""

import math

import keras
from keras import ops

from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.ops.attention import prepare_mask, repeat_kv_heads
from keras_attention.ops.masked_softmax import masked_softmax


@keras.saving.register_keras_serializable(package="keras_attention")
class TalkingHeadsAttention(MultiHeadAttention):
    """Talking-heads attention (Shazeer et al. 2020, "Talking-Heads Attention").

    Multi-head attention in which the `N` heads are linearly mixed twice by learned
    `(N, N)` matrices: once on the attention logits, right before the softmax, and
    once on the attention weights, right after it. Every head's weights can thus
    depend on every head's query-key products.

    With the default `mixing_initializer="identity"` both mixings start as the
    identity, so a freshly built layer computes exactly the same function as a
    `MultiHeadAttention` with the same projection weights; training then learns how
    the heads talk. A logits bias from `position_encoding` (ALiBi, T5) and the masks
    are applied to the mixed logits, i.e. to the heads that enter the softmax.

    The layer always forms the full `(B, N, T, S)` weights, so
    `implementation="chunked"` is rejected; `"auto"` and `"full"` both compute the
    dense weights. Grouped-query attention (`num_key_value_heads < num_heads`) is
    supported by repeating each key/value head for its group of query heads before
    the heads are mixed.

    Args:
        num_heads: number of heads N (also the size of both mixing matrices).
        key_dim: size of each query/key head H.
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`);
            defaults to `num_heads`.
        dropout: dropout rate on the (mixed) attention weights.
        use_bias: whether the projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: as in `MultiHeadAttention`.
        implementation: `"auto"` or `"full"` (both dense); `"chunked"` raises.
        query_chunk_size, key_chunk_size: accepted for signature compatibility with
            `MultiHeadAttention`; unused.
        kernel_initializer, bias_initializer: projection initializers.
        mixing_initializer: initializer of the two `(N, N)` head-mixing matrices;
            `"identity"` (default) starts as standard multi-head attention.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        Those of `MultiHeadAttention`: `query (B, T, F)`, `value (B, S, F_v)`,
        `key=None`, `query_mask`, `value_mask`, `key_mask`, `attention_mask`,
        `use_causal_mask`, `return_attention_scores`, `training`, `cache`,
        `cache_index`.

    Returns:
        `output (B, T, O)`, or `(output, scores)` with `return_attention_scores`,
        where `scores (B, N, T, S)` are the weights after the post-softmax mixing
        (the weights actually applied to the values; their rows sum to the column
        sums of the post-softmax mixing matrix, 1 with the identity). With a
        cache, the updated cache is appended as in `MultiHeadAttention`. Query rows
        with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 10, 32))
    >>> layer = TalkingHeadsAttention(num_heads=4, key_dim=8)
    >>> layer(x, x, use_causal_mask=True).shape
    (2, 10, 32)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        position_encoding=None,
        implementation="auto",
        query_chunk_size=512,
        key_chunk_size=512,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        mixing_initializer="identity",
        seed=None,
        **kwargs,
    ):
        super().__init__(
            num_heads,
            key_dim,
            value_dim=value_dim,
            num_key_value_heads=num_key_value_heads,
            dropout=dropout,
            use_bias=use_bias,
            output_dim=output_dim,
            position_encoding=position_encoding,
            implementation=implementation,
            query_chunk_size=query_chunk_size,
            key_chunk_size=key_chunk_size,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            **kwargs,
        )
        if self.implementation == "chunked":
            raise ValueError(
                "TalkingHeadsAttention mixes the full attention logits across heads, "
                "so it cannot use chunked attention. Use implementation='auto' or "
                f"'full'. Received: implementation={implementation!r}"
            )
        self.mixing_initializer = keras.initializers.get(mixing_initializer)

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        n = self.num_heads
        self.pre_softmax_kernel = self.add_weight(
            name="pre_softmax_kernel",
            shape=(n, n),
            initializer=keras.initializers.get(
                keras.initializers.serialize(self.mixing_initializer)
            ),
        )
        self.post_softmax_kernel = self.add_weight(
            name="post_softmax_kernel",
            shape=(n, n),
            initializer=keras.initializers.get(
                keras.initializers.serialize(self.mixing_initializer)
            ),
        )

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Talking-heads attention on per-head tensors.

        Returns `(output (B, T, N, V), weights (B, N, T, S))`; the weights are
        always formed, so they are returned even when not requested.
        """
        b, t, n, h = query.shape
        groups = n // key.shape[2]
        key = repeat_kv_heads(key, groups)  # (B, S, N, H)
        value = repeat_kv_heads(value, groups)  # (B, S, N, V)
        t_dyn, s_dyn = ops.shape(query)[1], ops.shape(key)[1]
        mask = prepare_mask(mask, causal, t_dyn, s_dyn, (b, n, t, key.shape[1]))

        scale = ops.cast(1.0 / math.sqrt(h), query.dtype)
        logits = ops.einsum("btnh,bsnh->bnts", query * scale, key)  # (B, N, T, S)
        logits = ops.cast(logits, "float32")
        pre = ops.cast(self.pre_softmax_kernel, "float32")  # (N, M)
        logits = ops.einsum("bnts,nm->bmts", logits, pre)  # (B, M, T, S)
        if bias is not None:
            logits = logits + ops.cast(bias, "float32")
        weights = masked_softmax(logits, mask)  # (B, M, T, S); masked keys, empty rows -> 0
        post = ops.cast(self.post_softmax_kernel, "float32")  # (N, M)
        weights = ops.einsum("bnts,nm->bmts", weights, post)  # (B, M, T, S)
        if training and self.dropout > 0.0:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        probs = ops.cast(weights, value.dtype)
        output = ops.einsum("bnts,bsnv->btnv", probs, value)  # (B, T, N, V)
        return ops.cast(output, query.dtype), weights

    def get_config(self):
        config = super().get_config()
        config["mixing_initializer"] = keras.initializers.serialize(self.mixing_initializer)
        return config
