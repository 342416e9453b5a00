"""Multi-head scaled dot-product attention with GQA/MQA, a KV cache, sliding
windows and pluggable position encodings: a superset of
`keras.layers.MultiHeadAttention`.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features.
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.base_attention import key_rows
from keras_attention.layers.attention.projected_attention import ProjectedAttention
from keras_attention.ops.band import blocked_band_attention
from keras_attention.ops.attention import (
    prepare_mask,
    repeat_kv_heads,
    scaled_dot_product_attention,
)
from keras_attention.ops.sliding_window import sliding_window_attention
from keras_attention.utils.validation import check_choice, check_positive_int

IMPLEMENTATIONS = ("auto", "full", "chunked")
# Above this many query x key positions, implementation="auto" uses chunked attention.
AUTO_CHUNK_THRESHOLD = 4096 * 4096


@keras.saving.register_keras_serializable(package="keras_attention")
class MultiHeadAttention(ProjectedAttention):
    """Multi-head attention (Vaswani et al. 2017), a drop-in for
    `keras.layers.MultiHeadAttention`.

    Queries, keys and values are projected per head, attended with scaled
    dot-product attention and projected back. It takes every argument of Keras's
    layer with the same meaning, and more: `num_key_value_heads` below
    `num_heads` gives grouped-query attention (Ainslie et al. 2023), 1 gives
    multi-query attention (Shazeer 2019); a KV cache supports incremental decoding;
    rotary, ALiBi, T5 and Shaw position encodings plug in through
    `position_encoding`; `sliding_window` runs on a band kernel in
    O(T * window) time and memory.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`);
            defaults to `num_heads`.
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        output_shape: output features: an int, or a tuple for several output
            axes; defaults to the query's features.
        attention_axes: for inputs of rank > 3 such as `(B, H, W, C)` images, the
            axes attended over (int or tuple); the other axes act as batch axes.
            None attends over every axis but the batch and the features.
        sliding_window: None, or a positive int s: query i attends only keys j
            with `|i - j| < s` (Keras's meaning; with `use_causal_mask`,
            `0 <= i - j < s`). Unless scores, a logits bias or a cache are
            involved it runs on a band kernel, O(T * s), never forming a `(T, S)`
            mask: `keras_attention.ops.sliding_window_attention`, or
            `ops.band.blocked_band_attention` with an explicit `attention_mask`
            or dropout. When `T != S` query i sits at key position `i + S - T`
            (bottom-right, as the causal mask).
        flash_attention: None (let Keras decide, see
            `keras.config.enable_flash_attention`), True or False; passed to
            `keras.ops.dot_product_attention` on the fused path. True cannot be
            combined with dropout or attention scores.
        use_gate: multiply each head's output by a sigmoid gate projected from
            the query (Qiu et al. 2025), as Keras's `use_gate`.
        position_encoding: an `AttentionPositionEncoding` layer (RotaryEmbedding,
            ALiBi, RelativePositionBias, RelativePositionEmbedding), its config, or
            one of `"rotary"`, `"alibi"`, `"t5"`, `"shaw"`.
        implementation: `"full"` (dense weights, `keras.ops.dot_product_attention`
            fast path), `"chunked"` (exact block-wise online softmax, memory linear
            in length; cannot return scores) or `"auto"` (chunked when
            `T * S > 4096 * 4096` and no scores, full otherwise).
        query_chunk_size, key_chunk_size: block sizes of the chunked path.
        kernel_initializer, bias_initializer: projection initializers.
        kernel_regularizer, bias_regularizer, activity_regularizer: projection
            regularizers.
        kernel_constraint, bias_constraint: projection constraints.
        seed: seed of the attention dropout.
        output_dim: deprecated former name of `output_shape` (an int), accepted
            so that older configs and code keep working.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    The projections are public, as in Keras: `query_dense`, `key_dense`,
    `value_dense` and `output_dense` (e.g. `layer.query_dense.enable_lora(4)`),
    and `model.quantize("int8")` quantizes them.

    Call arguments:
        query: `(B, T, F)` (or `(B, *D, F)` with `attention_axes`).
        value: `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` masks; filled
            from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, True where attention is allowed;
            `(T, S)` and `(1, T, S)` broadcast over the batch.
        use_causal_mask: query i attends keys `j <= i + (S - T)`.
        return_attention_scores: also return the `(B, N, T, S)` weights.
        training: enables dropout.
        cache: optional `(B, 2, S_max, K, H)` key/value cache (requires
            `value_dim == key_dim`); the new keys and values are written at
            `cache_index` and attention runs over the cache.
        cache_index: position of the first new token in the cache (int or scalar
            tensor); required with `cache`.

    Returns:
        `output (B, T, *O)`; `(output, scores)` with `return_attention_scores`;
        `(output, cache)` or `(output, scores, cache)` when a cache is given.
        Query rows with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 16, 64))
    >>> mha = MultiHeadAttention(num_heads=4, key_dim=16, num_key_value_heads=2,
    ...                          position_encoding="rotary")
    >>> mha(x, x, use_causal_mask=True).shape
    (2, 16, 64)
    """

    supports_cache = True

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        sliding_window=None,
        flash_attention=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate=False,
        seed=None,
        num_key_value_heads=None,
        position_encoding=None,
        implementation="auto",
        query_chunk_size=512,
        key_chunk_size=512,
        **kwargs,
    ):
        super().__init__(
            num_heads,
            key_dim,
            value_dim=value_dim,
            num_key_value_heads=num_key_value_heads,
            dropout=dropout,
            use_bias=use_bias,
            output_shape=output_shape,
            attention_axes=attention_axes,
            use_gate=use_gate,
            position_encoding=position_encoding,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            seed=seed,
            **kwargs,
        )
        if sliding_window is not None and (
            isinstance(sliding_window, bool) or not isinstance(sliding_window, int)
            or sliding_window <= 0
        ):
            raise ValueError(
                "`sliding_window` must be `None` or a positive integer. "
                f"Received: sliding_window={sliding_window}"
            )
        self.sliding_window = sliding_window
        if flash_attention not in (None, True, False):
            raise ValueError(
                "`flash_attention` must be None, True or False. "
                f"Received: flash_attention={flash_attention!r}"
            )
        self.flash_attention = flash_attention
        if self._flash() and self.dropout > 0.0:
            raise ValueError(
                "Dropout is not supported when flash attention is enabled. Please set "
                "dropout to 0.0 to use flash attention. Received: "
                f"dropout={self.dropout}, flash_attention={flash_attention}"
            )
        self.implementation = check_choice("implementation", implementation, IMPLEMENTATIONS)
        self.query_chunk_size = check_positive_int("query_chunk_size", query_chunk_size)
        self.key_chunk_size = check_positive_int("key_chunk_size", key_chunk_size)

    def _flash(self):
        """The effective flash-attention setting: the argument, else Keras's global."""
        if self.flash_attention is not None:
            return self.flash_attention
        return keras.config.is_flash_attention_enabled()

    # ------------------------------------------------------------------ cache
    def _check_cache(self, cache, cache_index, query):
        expected = (query.shape[0], 2, None, self._kv_heads, self.key_dim)
        self._check_mask("cache", cache, expected)
        if self._value_dim != self.key_dim:
            raise ValueError(
                "A key/value cache needs `value_dim == key_dim`. "
                f"Received: key_dim={self.key_dim}, value_dim={self.value_dim}"
            )
        if cache_index is None:
            raise ValueError("`cache_index` is required with `cache`. Received: cache_index=None")

    def _use_cache(self, cache, cache_index, key, value):
        kv = ops.stack([key, value], axis=1)  # (B, 2, T, K, H)
        cache = ops.slice_update(cache, [0, 0, cache_index, 0, 0], ops.cast(kv, cache.dtype))
        length = ops.shape(cache)[2]
        written = ops.arange(length, dtype="int32") < (
            ops.cast(cache_index, "int32") + ops.shape(key)[1]
        )  # keys already written
        return cache[:, 0], cache[:, 1], cache, written[None]  # (B, S_max, K, H), (1, S_max)

    # ------------------------------------------------------------------ per-head hook
    def _attend_heads(self, query, key, value, masks, *, use_causal_mask, training,
                      return_weights, bias=None):
        t, s = ops.shape(query)[1], ops.shape(key)[1]
        rate = self.dropout if training else 0.0
        rows = None
        if self.sliding_window is not None:
            window = self.sliding_window - 1  # |i - j| < sliding_window
            banded = masks.query_start is None and bias is None and not return_weights
            if banded and masks.full is None and not rate:
                output = sliding_window_attention(
                    query, key, value, window_size=window, causal=use_causal_mask,
                    mask=masks.key,
                )  # (B, T, N, V)
                return output, None, key_rows(masks.key, t, s, None, window,
                                              use_causal_mask)
            if banded:  # an explicit mask or dropout: gathered block by block
                full = masks.full
                if full is not None:  # (B|1, T, S) -> (B, T, S)
                    full = ops.broadcast_to(full, (ops.shape(query)[0], t, s))
                output, rows = blocked_band_attention(
                    query, key, value, window_size=window, causal=use_causal_mask,
                    key_valid=masks.key, mask=full, dropout=rate,
                    seed=self.seed_generator,
                )
                return output, None, rows
            band = masks_lib.sliding_window_mask(t, window, s, use_causal_mask,
                                                 masks.query_start)  # (T, S)
            masks = masks._replace(full=masks_lib.merge_masks(masks.full, band[None]))
            rows = self._rows(masks, use_causal_mask, t, s)
        causal = use_causal_mask
        full = masks.full
        if causal and masks.query_start is not None:  # cached decoding
            full = masks_lib.merge_masks(
                full, masks_lib.causal_mask(t, s, masks.query_start)[None])
            causal = False
        key_valid = None if masks.key is None else masks.key[:, None, :]  # (B|1, 1, S)
        mask = masks_lib.merge_masks(full, key_valid)  # (B|1, T|1, S) or None
        output, weights = self._attend(
            query, key, value, mask=None if mask is None else mask[:, None], bias=bias,
            causal=causal, training=training, return_weights=return_weights,
        )
        return output, weights, rows

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Dense attention on per-head tensors with a mask broadcastable to
        `(B, N, T, S)`; returns `(output (B, T, N, V), weights or None)`.

        Variants not yet on `_attend_heads` override this hook.
        """
        rate = self.dropout if training else 0.0
        flash = self._flash()
        if flash and return_weights:
            raise ValueError(
                "Returning attention scores is not supported when flash attention is "
                "enabled. Please disable flash attention to access attention scores. "
                "Received: return_attention_scores=True, flash_attention=True"
            )
        if self._use_chunked(query, key, return_weights, rate):
            from keras_attention.ops.chunked import chunked_attention

            output = chunked_attention(
                query, key, value, mask=mask, bias=bias, causal=causal,
                query_chunk_size=self.query_chunk_size, key_chunk_size=self.key_chunk_size,
            )
            return output, None
        if self.flash_attention is not None and bias is None and not return_weights:
            return self._flash_path(query, key, value, mask, causal, flash), None
        result = scaled_dot_product_attention(
            query, key, value, mask=mask, bias=bias, causal=causal, dropout_rate=rate,
            training=bool(training), seed=self.seed_generator, return_weights=return_weights,
        )
        return result if return_weights else (result, None)

    def _flash_path(self, query, key, value, mask, causal, flash):
        """`keras.ops.dot_product_attention` with the layer's `flash_attention`."""
        t, s = ops.shape(query)[1], ops.shape(key)[1]
        native_causal = causal and mask is None and query.shape[1] == key.shape[1]
        if not native_causal:
            mask = prepare_mask(mask, causal, t, s, (None,) * 4)
        groups = self.num_heads // self._kv_heads
        return ops.dot_product_attention(
            query, repeat_kv_heads(key, groups), repeat_kv_heads(value, groups),
            mask=mask, scale=1.0 / self.key_dim**0.5, is_causal=native_causal,
            flash_attention=flash,
        )

    def _attention_scores_unavailable(self):
        if self.implementation == "chunked":
            return ("implementation='chunked' never forms the attention weights "
                    "(use implementation='full')")
        return super()._attention_scores_unavailable()

    def _use_chunked(self, query, key, return_weights, rate):
        if self.implementation == "full":
            return False
        if self.implementation == "chunked":
            if return_weights:
                raise ValueError(
                    "implementation='chunked' cannot return attention weights (they are "
                    "never formed). Use implementation='full'. Received: "
                    "return_attention_scores=True"
                )
            if rate:
                raise ValueError(
                    "implementation='chunked' does not support attention dropout. "
                    f"Received: dropout={self.dropout}"
                )
            return True
        t, s = query.shape[1], key.shape[1]
        return (not return_weights and not rate and isinstance(t, int) and isinstance(s, int)
                and t * s > AUTO_CHUNK_THRESHOLD)

    # ------------------------------------------------------------------ whole-layer hook
    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, cache=None, cache_index=None):
        """The whole-layer hook with one merged `(B, T, S)` mask, kept for the
        variants that still override `_attend`; returns `(output, scores[, cache])`."""
        t = ops.shape(query)[1]
        if cache is None:
            query_start, key_start = ops.shape(key)[1] - t, 0
        else:
            query_start = key_start = cache_index
        gate = self._gate_dense(query) if self.use_gate else None
        q, k, v = self._project(query, key, value, query_start, key_start)
        if cache is not None:
            k, v, cache, written = self._use_cache(cache, cache_index, k, v)
            s = ops.shape(k)[1]
            causal_part = (masks_lib.causal_mask(t, s, cache_index)[None]
                           if use_causal_mask else None)
            mask = masks_lib.merge_masks(mask, written[:, None, :], causal_part)
            use_causal_mask = False
        if self.sliding_window is not None:
            band = masks_lib.sliding_window_mask(t, self.sliding_window - 1, ops.shape(k)[1],
                                                 use_causal_mask, query_start)  # (T, S)
            mask = masks_lib.merge_masks(mask, band[None])
        mask = None if mask is None else mask[:, None]  # (B, 1, T, S)
        bias = self._logits_bias(q, ops.shape(k)[1], query_start)
        output, scores = self._attend(q, k, v, mask=mask, bias=bias,
                                      causal=use_causal_mask, training=training,
                                      return_weights=return_attention_scores
                                      or self._needs_weights())
        output = self._add_value_term(output, scores, query_start)
        output = self._combine_heads(output, gate)  # (B, T, O)
        scores = scores if return_attention_scores else None
        return (output, scores) if cache is None else (output, scores, cache)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sliding_window": self.sliding_window,
                "flash_attention": self.flash_attention,
                "implementation": self.implementation,
                "query_chunk_size": self.query_chunk_size,
                "key_chunk_size": self.key_chunk_size,
            }
        )
        return config
