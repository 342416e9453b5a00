"""Attention pooling with learned queries: a sequence to one (or a few) vectors.

Shape legend: B batch, T input length, F features, Q learned queries, N heads,
O output features.
"""

import keras
from keras import ops

from keras_attention.layers.attention.base_attention import CheckedInputs
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.utils.validation import (
    check_floating,
    check_positive_int,
    check_rank,
    check_rate,
)


@keras.saving.register_keras_serializable(package="keras_attention")
class AttentionPooling(CheckedInputs, keras.layers.Layer):
    """Pooling by multi-head attention with learned queries.

    `num_queries` learned query vectors (the "seed vectors" of the Set
    Transformer's PMA block, Lee et al. 2019; the single query of CLIP's attention
    pooling, Radford et al. 2021) attend over the input sequence with multi-head
    attention, giving a fixed number of summary vectors whatever the sequence
    length. The attention is an internal `MultiHeadAttention` sublayer, so padding
    is masked exactly as there, and a sequence with no valid position pools to
    zeros.

    This layer pools a single input rather than following the `query, value`
    convention: the queries are its own weights.

    Args:
        num_heads: number of heads N.
        key_dim: size of each query/key head; defaults to `F // num_heads` (then
            `F` must be divisible by `num_heads`).
        num_queries: number of learned queries Q.
        value_dim: size of each value head; defaults to `key_dim`.
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        output_dim: output features O; defaults to the input features F.
        kernel_initializer, bias_initializer: projection initializers.
        query_initializer: initializer of the `(Q, F)` learned queries.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, T, F)`.
        mask: optional boolean `(B, T)`, True on real positions; filled from a
            Keras implicit mask (e.g. `Embedding(mask_zero=True)`) when not given.
        return_attention_scores: also return the `(B, N, Q, T)` weights.
        training: enables dropout.

    Returns:
        Fixed by the constructor: `(B, O)` when `num_queries == 1` (the query axis
        is dropped) and `(B, Q, O)` when `num_queries > 1`; with
        `return_attention_scores=True`, `(pooled, scores (B, N, Q, T))`.

    Example:

    >>> x = keras.random.normal((2, 10, 32))
    >>> AttentionPooling(num_heads=4)(x).shape
    (2, 32)
    >>> AttentionPooling(num_heads=4, num_queries=3)(x).shape
    (2, 3, 32)
    """

    def __init__(
        self,
        num_heads=1,
        key_dim=None,
        num_queries=1,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        query_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim, allow_none=True)
        self.num_queries = check_positive_int("num_queries", num_queries)
        self.value_dim = check_positive_int("value_dim", value_dim, allow_none=True)
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = check_positive_int("output_dim", output_dim, allow_none=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.query_initializer = keras.initializers.get(query_initializer)
        self.seed = seed

    def build(self, inputs_shape):
        check_rank("inputs", inputs_shape, 3, "(batch, seq, features)")
        f = inputs_shape[-1]
        if f is None:
            raise ValueError(
                "`inputs` must have a known feature dimension. "
                f"Received: shape={tuple(inputs_shape)}"
            )
        key_dim = self.key_dim
        if key_dim is None:
            if f % self.num_heads:
                raise ValueError(
                    "Without `key_dim`, the input features must be divisible by "
                    f"`num_heads`. Received: num_heads={self.num_heads}, "
                    f"features={f}"
                )
            key_dim = f // self.num_heads
        self.queries = self.add_weight(
            name="queries",
            shape=(self.num_queries, f),
            initializer=keras.initializers.get(
                keras.initializers.serialize(self.query_initializer)
            ),
        )
        self._attention = MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_dim=self.output_dim or f,
            implementation="full",
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=self.seed,
            dtype=self.dtype_policy,
            name="attention",
        )
        self._attention.build((inputs_shape[0], self.num_queries, f), inputs_shape)
        self.built = True

    def call(self, inputs, mask=None, return_attention_scores=False, training=None):
        check_rank("inputs", inputs.shape, 3, "(batch, seq, features)")
        # The learned queries are cast to the inputs' dtype: integer inputs (token
        # ids instead of embeddings) would truncate them.
        check_floating("inputs", inputs)
        if mask is not None:
            mask = ops.convert_to_tensor(mask)
            expected = tuple(inputs.shape[:2])
            shape = tuple(mask.shape)
            if len(shape) != 2 or any(
                a is not None and e is not None and a != e for a, e in zip(shape, expected)
            ):
                raise ValueError(
                    f"`mask` must have shape (batch, seq) = {expected}. "
                    f"Received: shape={shape}"
                )
        batch = ops.shape(inputs)[0]
        queries = ops.cast(self.queries, inputs.dtype)[None]  # (1, Q, F)
        queries = ops.broadcast_to(
            queries, (batch, self.num_queries, ops.shape(inputs)[-1])
        )  # (B, Q, F)
        result = self._attention(
            queries, inputs, value_mask=mask,
            return_attention_scores=return_attention_scores, training=training,
        )  # (B, Q, O) [, (B, N, Q, T)]
        pooled, scores = result if return_attention_scores else (result, None)
        if self.num_queries == 1:
            pooled = pooled[:, 0]  # (B, O)
        return (pooled, scores) if return_attention_scores else pooled

    def compute_mask(self, inputs, mask=None):
        # The sequence axis is pooled away: nothing to propagate.
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "num_queries": self.num_queries,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "query_initializer": keras.initializers.serialize(self.query_initializer),
                "seed": self.seed,
            }
        )
        return config
