"""Co-attention between two modalities of different widths (ViLBERT-style).

Shape legend: B batch, T length of modality A (the query), S length of modality B
(the value), Fa / Fb features of A / B, N heads.
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.utils.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_attention")
class CrossModalAttention(BaseAttention):
    """Co-attention between two modalities (Lu et al. 2019, ViLBERT).

    The co-attentional layer of ViLBERT exchanges information both ways between
    two streams, e.g. text tokens `A (B, T, Fa)` and image regions
    `B (B, S, Fb)` of different widths: A attends to B (queries from A, keys and
    values from B) and B attends to A (queries from B, keys and values from A),
    each with its own `MultiHeadAttention` sublayer whose output has the width of
    its query stream. Residual connections, normalisation and feed-forward parts
    of the ViLBERT block are left to the caller, as for every attention layer.

    The layer keeps the `MultiHeadAttention` call convention, `layer(query,
    value)` with `query` = modality A and `value` = modality B, and returns the
    A-side output by default, so it is a drop-in cross-attention layer. With
    `return_both=True` it also returns the B-side output. The masks of the
    B -> A direction are those of the A -> B direction transposed: `value_mask`
    becomes its query mask, `query_mask` its key mask, and `attention_mask`
    `(B, T, S)` (and the causal mask, when `use_causal_mask=True`) becomes
    `(B, S, T)`. Rows of either side with no allowed key give zeros. A call
    without `return_both` does not run the B -> A sublayer, so a model that never
    asks for the B side leaves its weights untrained (Keras warns that they get no
    gradients).

    Args:
        num_heads: number of heads N of both directions.
        key_dim: size of each query/key head.
        value_dim: size of each value head; defaults to `key_dim`.
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        kernel_initializer, bias_initializer: projection initializers.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: modality A, `(B, T, Fa)`.
        value: modality B, `(B, S, Fb)`.
        key: optional `(B, S, Fk)` keys of the A -> B direction, defaults to
            `value`. The B -> A direction always uses `value` as its queries and
            `query` as its keys and values.
        query_mask: boolean `(B, T)`; value_mask, key_mask: boolean `(B, S)`.
            Filled from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, True where A position t may attend
            B position s (and, transposed, where s may attend t).
        use_causal_mask: bottom-right causal mask on the A -> B direction
            (A position t attends B positions `s <= t + (S - T)`), transposed for
            the B -> A direction.
        return_attention_scores: also return the attention weights.
        training: enables dropout.
        return_both: also return the B-side output.

    Returns:
        A fixed structure per call signature:
        - default: `a_out (B, T, Fa)`;
        - `return_attention_scores=True`: `(a_out, a_scores (B, N, T, S))`;
        - `return_both=True`: `(a_out, b_out (B, S, Fb))`;
        - both flags: `((a_out, b_out), (a_scores, b_scores (B, N, S, T)))`.

    Example:

    >>> text = keras.random.normal((2, 12, 32))
    >>> regions = keras.random.normal((2, 36, 20))
    >>> layer = CrossModalAttention(num_heads=4, key_dim=8)
    >>> a_out, b_out = layer(text, regions, return_both=True)
    >>> a_out.shape, b_out.shape
    ((2, 12, 32), (2, 36, 20))
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = check_positive_int("value_dim", value_dim, allow_none=True)
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.seed = seed

    def _attention_sublayer(self, name, output_dim, seed):
        return MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_dim=output_dim,
            implementation="full",
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=seed,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape, key_shape=None):
        self._check_input_shapes(query_shape, value_shape, key_shape)
        for name, shape in (("query", query_shape), ("value", value_shape)):
            if shape[-1] is None:
                raise ValueError(
                    f"`{name}` must have a known feature dimension. "
                    f"Received: shape={tuple(shape)}"
                )
        # Different seeds so the two directions do not drop the same pattern.
        reverse_seed = None if self.seed is None else self.seed + 1
        self._a_to_b = self._attention_sublayer("a_to_b", query_shape[-1], self.seed)
        self._a_to_b.build(query_shape, value_shape, key_shape)
        self._b_to_a = self._attention_sublayer("b_to_a", value_shape[-1], reverse_seed)
        self._b_to_a.build(value_shape, query_shape)
        self.built = True

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
        return_both=False,
    ):
        result = self._attention_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            use_causal_mask, return_attention_scores, training,
            return_both=bool(return_both),
        )
        if not return_both:
            return result
        if return_attention_scores:
            a_out, a_scores, b_out, b_scores = result
            return (a_out, b_out), (a_scores, b_scores)
        a_out, b_out, _ = result
        return a_out, b_out

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, return_both=False):
        b, t, s = ops.shape(query)[0], ops.shape(query)[1], ops.shape(value)[1]
        if mask is not None:
            mask = ops.broadcast_to(mask, (b, t, s))  # (B, T, S) from (B|1, T|1, S|1)
        a_result = self._a_to_b(
            query, value, key=key, attention_mask=mask, use_causal_mask=use_causal_mask,
            return_attention_scores=return_attention_scores, training=training,
        )  # (B, T, Fa) [, (B, N, T, S)]
        a_out, a_scores = a_result if return_attention_scores else (a_result, None)
        if not return_both:
            return a_out, a_scores
        reverse_mask = mask
        if use_causal_mask:
            causal = masks_lib.causal_mask(t, s)[None]  # (1, T, S)
            reverse_mask = ops.broadcast_to(
                masks_lib.merge_masks(mask, causal), (b, t, s)
            )  # (B, T, S)
        if reverse_mask is not None:
            reverse_mask = masks_lib.transpose_mask(reverse_mask, (0, 2, 1))  # (B, S, T)
        b_result = self._b_to_a(
            value, query, attention_mask=reverse_mask,
            return_attention_scores=return_attention_scores, training=training,
        )  # (B, S, Fb) [, (B, N, S, T)]
        b_out, b_scores = b_result if return_attention_scores else (b_result, None)
        return a_out, a_scores, b_out, b_scores

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config
