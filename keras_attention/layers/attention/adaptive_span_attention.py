"""Adaptive-span attention: each head learns how far back it looks.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features.
"""

import math
import numbers

import keras
from keras import ops

from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    reject_arguments,
)
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.ops.attention import MASK_VALUE, prepare_mask, repeat_kv_heads
from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class AdaptiveSpanAttention(MultiHeadAttention):
    """Adaptive attention span (Sukhbaatar et al. 2019, "Adaptive Attention Span in
    Transformers").

    Each head h learns a span `z_h = clip(span_fraction_h, 0, 1) * max_span`. Its
    attention weights are multiplied by the soft mask

        m(x) = clip((R + z_h - x) / R, 0, 1),   R = ramp_size,

    of the distance `x` between query and key, and renormalised:
    `a_ij = m(x_ij) exp(s_ij) / sum_k m(x_ik) exp(s_ik)` (computed as a softmax of
    `s + log m`, which is the same thing, stably). Keys farther than `max_span`
    are excluded. Positions are aligned bottom-right as in the causal mask: query
    i sits at position `i + S - T`, so `x = i + S - T - j`; the method is meant
    for causal attention (`use_causal_mask=True`), and without it the distance is
    `|x|`. Every call adds the span penalty `span_loss_coef * mean_h(z_h)` (in
    positions) with `self.add_loss`, so training shrinks spans the task does not
    need.

    The weights are dense `(B, N, T, S)` (exact attention with a soft mask; the
    memory saving of computing only the `max_span` band is not implemented), so
    attention scores, every mask and logits-bias position encodings are
    supported. A key/value cache is not (its query positions do not reach the
    soft mask): passing `cache` raises a `ValueError`.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        max_span: longest span; keys farther away are never attended.
        ramp_size: length R of the soft mask's linear ramp.
        span_init: initial span fraction `z_h / max_span` in [0, 1].
        span_loss_coef: weight of the span penalty (>= 0).
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`).
        dropout: dropout rate on the attention weights.
        use_bias: whether the dense projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: as in `MultiHeadAttention`.
        kernel_initializer, bias_initializer: dense projection initializers.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        Those of `MultiHeadAttention` without the cache: `query (B, T, F)`,
        `value (B, S, F_v)`, `key=None`, `query_mask`, `value_mask`, `key_mask`,
        `attention_mask`, `use_causal_mask`, `return_attention_scores`, `training`.

    Returns:
        `output (B, T, O)`, or `(output, scores)` with `return_attention_scores`,
        where `scores (B, N, T, S)` are the renormalised masked weights. Query rows
        with no allowed key are zeros. (A row whose allowed keys all lie beyond
        its span gets zero weights, so its output is the output projection's
        bias; distance 0 is always within the span.)

    Example:

    >>> x = keras.random.normal((2, 64, 32))
    >>> layer = AdaptiveSpanAttention(num_heads=4, key_dim=8, max_span=32, ramp_size=8)
    >>> layer(x, x, use_causal_mask=True).shape
    (2, 64, 32)
    >>> len(layer.losses)
    1
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        max_span,
        ramp_size=32,
        span_init=0.5,
        span_loss_coef=2e-6,
        value_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        position_encoding=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
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
            implementation="full",
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            **kwargs,
        )
        self.max_span = check_positive_int("max_span", max_span)
        self.ramp_size = check_positive_int("ramp_size", ramp_size)
        self.span_init = _check_real("span_init", span_init, 0.0, 1.0, "in [0, 1]")
        self.span_loss_coef = _check_real(
            "span_loss_coef", span_loss_coef, 0.0, math.inf, "non-negative"
        )

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self.span_fraction = self.add_weight(
            name="span_fraction",
            shape=(self.num_heads,),
            initializer=keras.initializers.Constant(self.span_init),
        )

    @property
    def spans(self):
        """Current spans `z_h` in positions, `(N,)` float32."""
        fraction = ops.clip(ops.cast(self.span_fraction, "float32"), 0.0, 1.0)
        return fraction * float(self.max_span)

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
        cache=None,
        cache_index=None,
    ):
        if cache is not None or cache_index is not None:
            raise ValueError(
                "AdaptiveSpanAttention does not support a key/value cache. Received: "
                f"cache={'a tensor' if cache is not None else None}, "
                f"cache_index={cache_index!r}"
            )
        result = super().call(
            query, value, key=key, query_mask=query_mask, value_mask=value_mask,
            key_mask=key_mask, attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            return_attention_scores=return_attention_scores, training=training,
        )
        self.add_loss(self.span_loss_coef * ops.mean(self.spans))
        return result

    def span_mask(self, query_length, key_length, causal):
        """Soft mask `(N, T, S)` float32 in [0, 1]; zero beyond `max_span`."""
        q = ops.arange(query_length, dtype="float32") + ops.cast(
            key_length - query_length, "float32"
        )
        k = ops.arange(key_length, dtype="float32")
        distance = q[:, None] - k[None, :]  # (T, S)
        if not causal:
            distance = ops.abs(distance)
        ramp = float(self.ramp_size)
        soft = (ramp + self.spans[:, None, None] - distance[None]) / ramp  # (N, T, S)
        soft = ops.clip(soft, 0.0, 1.0)
        return ops.where(distance[None] <= float(self.max_span), soft, 0.0)

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Dense attention with the per-head soft span mask.

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
        if bias is not None:
            logits = logits + ops.cast(bias, "float32")
        soft = self.span_mask(t_dyn, s_dyn, causal)[None]  # (1, N, T, S)
        allowed = soft > 0.0
        if mask is not None:
            allowed = ops.logical_and(allowed, mask)  # (B, N, T, S)
        # softmax(s + log m) = m exp(s) / sum(m exp(s)): weights masked, renormalised.
        logits = logits + ops.log(ops.maximum(soft, 1e-30))
        weights = ops.softmax(ops.where(allowed, logits, MASK_VALUE), axis=-1)
        weights = ops.where(allowed, weights, 0.0)  # (B, N, T, S); empty rows -> 0
        if training and self.dropout > 0.0:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        probs = ops.cast(weights, value.dtype)
        output = ops.einsum("bnts,bsnv->btnv", probs, value)  # (B, T, N, V)
        return ops.cast(output, query.dtype), weights

    def get_config(self):
        config = super().get_config()
        for name in UNUSED_ARGUMENTS:
            config.pop(name)
        config.update(
            {
                "max_span": self.max_span,
                "ramp_size": self.ramp_size,
                "span_init": self.span_init,
                "span_loss_coef": self.span_loss_coef,
            }
        )
        return config


def _check_real(name, value, low, high, what):
    """Return `value` as a float if it is a real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number {what}. Received: {name}={value!r}")
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value}")
    return float(value)
