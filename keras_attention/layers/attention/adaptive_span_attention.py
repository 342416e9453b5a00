"""Adaptive-span attention: each head learns how far back it looks.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features, R query
blocks, C block size, L keys per block.
"""

import math
import numbers

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.local_attention import LocalAttention
from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    reject_arguments,
)
from keras_attention.ops.attention import scaled_dot_product_attention
from keras_attention.ops.band import blocked_band_attention, dense_pattern
from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class AdaptiveSpanAttention(LocalAttention):
    """Adaptive attention span (Sukhbaatar et al. 2019, "Adaptive Attention Span in
    Transformers").

    Each head h learns a span `z_h = clip(span_fraction_h, 0, 1) * max_span`. Its
    attention weights are multiplied by the soft mask

        m(x) = clip((R + z_h - x) / R, 0, 1),   R = ramp_size,

    of the distance `x` between query and key, and renormalised:
    `a_ij = m(x_ij) exp(s_ij) / sum_k m(x_ik) exp(s_ik)` (computed as a softmax of
    `s + log m`, which is the same thing, stably). Keys farther than `max_span`
    are never attended. Positions are aligned bottom-right as in the causal mask:
    query i sits at position `i + S - T`, so `x = i + S - T - j`; the method is
    meant for causal attention (`causal=True` or `use_causal_mask=True`), and
    without it the distance is `|x|`. Every call adds the span penalty
    `span_loss_coef * mean_h(z_h)` (in positions) with `self.add_loss`, so
    training shrinks spans the task does not need.

    Only the band `|x| <= max_span` is computed, block by block as in
    `LocalAttention` (whose masks, dropout and rotary encodings it shares): time
    and memory grow as `T * (block_size + 2 * max_span)` and no `(T, S)` tensor
    is formed. `return_attention_scores=True` computes the dense `(B, N, T, S)`
    weights on demand (O(T * S), for inspection); the output is the same.
    Position encodings that add a logits bias (ALiBi, T5, Shaw) are not
    supported (the soft span already is a learned distance bias), nor is a
    key/value cache: both raise a `ValueError`.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        max_span: longest span; keys farther away are never attended.
        ramp_size: length R of the soft mask's linear ramp.
        span_init: initial span fraction `z_h / max_span` in [0, 1].
        span_loss_coef: weight of the span penalty (>= 0).
        causal: if True, query i attends only keys `i - max_span .. i`.
        block_size: queries per block; defaults to `max(max_span, 16)` (at most T).
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`).
        dropout: dropout rate on the attention weights.
        use_bias: whether the dense projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: `None` or a rotary encoding (instance, config or
            `"rotary"`).
        kernel_initializer, bias_initializer: dense projection initializers.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        Those of `LocalAttention`: `query (B, T, F)`, `value (B, S, F_v)`,
        `key=None`, `query_mask`, `value_mask`, `key_mask`, `attention_mask`,
        `use_causal_mask`, `return_attention_scores`, `training`.

    Returns:
        `output (B, T, O)`, or `(output, scores)` with `return_attention_scores`,
        where `scores (B, N, T, S)` are the renormalised masked weights. Padded
        query rows and rows with no allowed key within `max_span` are zeros. (A
        head whose allowed keys all lie beyond its own span gets zero weights;
        distance 0 is always within the span.)

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
        causal=False,
        block_size=None,
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
        reject_arguments(type(self).__name__, kwargs, UNUSED_ARGUMENTS + ("window_size",))
        self.max_span = check_positive_int("max_span", max_span)
        super().__init__(
            num_heads,
            key_dim,
            window_size=self.max_span,
            causal=causal,
            block_size=block_size,
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

    def soft_mask(self, distance, causal):
        """Soft mask `(N, *distance.shape)` float32 in [0, 1] of the signed
        distances (query position minus key position); zero beyond `max_span`."""
        distance = ops.cast(distance, "float32")
        if not causal:
            distance = ops.abs(distance)
        spans = ops.reshape(self.spans, (-1,) + (1,) * len(distance.shape))
        ramp = float(self.ramp_size)
        soft = ops.clip((ramp + spans - distance[None]) / ramp, 0.0, 1.0)
        inside = ops.logical_and(distance >= 0.0, distance <= float(self.max_span))
        return ops.where(inside[None], soft, 0.0)

    def span_mask(self, query_length, key_length, causal):
        """Dense soft mask `(N, T, S)` float32 in [0, 1]; zero beyond `max_span`."""
        q = ops.arange(query_length, dtype="int32") + ops.cast(
            key_length - query_length, "int32"
        )
        distance = q[:, None] - ops.arange(key_length, dtype="int32")[None, :]  # (T, S)
        return self.soft_mask(distance, causal)

    def _local_attention(self, q, k, v, masks, causal, training, return_weights):
        """Output `(B, T, N, V)`, dense weights or None, and rows `(B|1, T)` or None."""
        rate = self.dropout if training else 0.0
        if return_weights:
            return self._dense_attention(q, k, v, masks, causal, rate)
        output, rows = blocked_band_attention(
            q, k, v, window_size=self.max_span, causal=causal, key_valid=masks.key,
            mask=masks.full, block_size=self.block_size, dropout=rate,
            seed=self.seed_generator,
            soft_mask=lambda distance: self.soft_mask(distance, causal),
        )
        return output, None, masks_lib.merge_masks(rows, masks.query)

    def _dense_attention(self, query, key, value, masks, causal, rate):
        """Dense attention with the soft span mask, for the attention scores."""
        t, s = ops.shape(query)[1], ops.shape(key)[1]
        band = masks_lib.sliding_window_mask(t, self.max_span, s, causal)  # (T, S)
        allowed = dense_pattern(band[None], masks)  # (B|1, T, S)
        soft = self.span_mask(t, s, causal)[None]  # (1, N, T, S)
        # softmax(s + log m) = m exp(s) / sum(m exp(s)): weights masked, renormalised.
        output, weights = scaled_dot_product_attention(
            query, key, value, mask=ops.logical_and(allowed[:, None], soft > 0.0),
            bias=ops.log(ops.maximum(soft, 1e-30)), dropout_rate=rate,
            training=bool(rate), seed=self.seed_generator, return_weights=True,
        )  # (B, T, N, V), (B, N, T, S)
        rows = ops.any(allowed, axis=-1)  # (B|1, T)
        return output, weights, masks_lib.merge_masks(rows, masks.query)

    def get_config(self):
        config = super().get_config()
        config.pop("window_size")
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
