"""Multi-head scaled dot-product attention with GQA/MQA, a KV cache and pluggable
position encodings.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features.
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.ops.attention import scaled_dot_product_attention
from keras_attention.utils.validation import check_choice, check_positive_int, check_rate

IMPLEMENTATIONS = ("auto", "full", "chunked")
# Above this many query x key positions, implementation="auto" uses chunked attention.
AUTO_CHUNK_THRESHOLD = 4096 * 4096


class _Projection(keras.layers.EinsumDense):
    """`EinsumDense` for the query, key, value and output projections.

    The attention layer applies the masks itself: Keras passes a tensor's implicit
    mask in as `query_mask`/`value_mask`, and `BaseAttention` clears it from the
    tensor. On JAX, Keras keeps that mask beside the array, out of reach of its
    public API, so the projection still sees it; it accepts it and passes no mask
    on, where `EinsumDense` warns that it drops the mask.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, previous_mask=None):
        return None


def resolve_position_encoding(position_encoding, num_heads):
    """An `AttentionPositionEncoding` from an instance, a config dict or a short name."""
    if position_encoding is None or isinstance(position_encoding, AttentionPositionEncoding):
        return position_encoding
    if isinstance(position_encoding, dict):
        layer = keras.saving.deserialize_keras_object(position_encoding)
    elif isinstance(position_encoding, str):
        layer = _named_position_encoding(position_encoding, num_heads)
    else:
        layer = None
    if not isinstance(layer, AttentionPositionEncoding):
        raise ValueError(
            "`position_encoding` must be an attention position encoding layer "
            "(RotaryEmbedding, ALiBi, RelativePositionBias, RelativePositionEmbedding), "
            "its config, or one of 'rotary', 'alibi', 't5', 'shaw'. "
            f"Received: position_encoding={position_encoding!r}"
        )
    return layer


def _named_position_encoding(name, num_heads):
    """A default encoding for a short name, or None for an unknown name."""
    from keras_attention.layers.encodings.alibi import ALiBi
    from keras_attention.layers.encodings.relative_position_bias import RelativePositionBias
    from keras_attention.layers.encodings.relative_position_embedding import (
        RelativePositionEmbedding,
    )
    from keras_attention.layers.encodings.rotary_embedding import RotaryEmbedding

    makers = {
        "rotary": RotaryEmbedding,
        "alibi": lambda: ALiBi(num_heads),
        "t5": lambda: RelativePositionBias(num_heads),
        "shaw": lambda: RelativePositionEmbedding(max_distance=16),
    }
    return makers[name]() if name in makers else None


@keras.saving.register_keras_serializable(package="keras_attention")
class MultiHeadAttention(BaseAttention):
    """Multi-head attention (Vaswani et al. 2017), a drop-in for
    `keras.layers.MultiHeadAttention`.

    Queries, keys and values are projected per head, attended with scaled
    dot-product attention and projected back. `num_key_value_heads` below
    `num_heads` gives grouped-query attention (Ainslie et al. 2023); 1 gives
    multi-query attention (Shazeer 2019). A KV cache supports incremental decoding,
    and rotary, ALiBi, T5 and Shaw position encodings plug in through
    `position_encoding`.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`);
            defaults to `num_heads`.
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: an `AttentionPositionEncoding` layer (RotaryEmbedding,
            ALiBi, RelativePositionBias, RelativePositionEmbedding), its config, or
            one of `"rotary"`, `"alibi"`, `"t5"`, `"shaw"`.
        implementation: `"full"` (dense weights, `keras.ops.dot_product_attention`
            fast path), `"chunked"` (exact block-wise online softmax, memory linear
            in length; cannot return scores) or `"auto"` (chunked when
            `T * S > 4096 * 4096` and no scores, full otherwise).
        query_chunk_size, key_chunk_size: block sizes of the chunked path.
        kernel_initializer, bias_initializer: projection initializers.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, T, F)`.
        value: `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` masks; filled
            from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, True where attention is allowed.
        use_causal_mask: query i attends keys `j <= i + (S - T)`.
        return_attention_scores: also return the `(B, N, T, S)` weights.
        training: enables dropout.
        cache: optional `(B, 2, S_max, K, H)` key/value cache (requires
            `value_dim == key_dim`); the new keys and values are written at
            `cache_index` and attention runs over the cache.
        cache_index: position of the first new token in the cache (int or scalar
            tensor); required with `cache`.

    Returns:
        `output (B, T, O)`; `(output, scores)` with `return_attention_scores`;
        `(output, cache)` or `(output, scores, cache)` when a cache is given.
        Query rows with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 16, 64))
    >>> mha = MultiHeadAttention(num_heads=4, key_dim=16, num_key_value_heads=2,
    ...                          position_encoding="rotary")
    >>> mha(x, x, use_causal_mask=True).shape
    (2, 16, 64)
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
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = check_positive_int("value_dim", value_dim, allow_none=True)
        self.num_key_value_heads = check_positive_int(
            "num_key_value_heads", num_key_value_heads, allow_none=True
        )
        kv_heads = self.num_key_value_heads or self.num_heads
        if self.num_heads % kv_heads:
            raise ValueError(
                "`num_heads` must be a multiple of `num_key_value_heads`. "
                f"Received: num_heads={num_heads}, num_key_value_heads={num_key_value_heads}"
            )
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = check_positive_int("output_dim", output_dim, allow_none=True)
        self.implementation = check_choice("implementation", implementation, IMPLEMENTATIONS)
        self.query_chunk_size = check_positive_int("query_chunk_size", query_chunk_size)
        self.key_chunk_size = check_positive_int("key_chunk_size", key_chunk_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.position_encoding = resolve_position_encoding(position_encoding, self.num_heads)
        self._kv_heads = kv_heads
        self._value_dim = self.value_dim or self.key_dim
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None

    # ------------------------------------------------------------------ build
    def _dense(self, name, equation, output_shape, bias_axes):
        return _Projection(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            bias_initializer=keras.initializers.get(
                keras.initializers.serialize(self.bias_initializer)
            ),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_input_shapes(query_shape, value_shape, key_shape)
        n, k, h, v = self.num_heads, self._kv_heads, self.key_dim, self._value_dim
        out = self.output_dim or query_shape[-1]
        self._query_dense = self._dense("query", "btf,fnh->btnh", (None, n, h), "nh")
        self._query_dense.build(query_shape)
        self._key_dense = self._dense("key", "bsf,fkh->bskh", (None, k, h), "kh")
        self._key_dense.build(key_shape)
        self._value_dense = self._dense("value", "bsf,fkv->bskv", (None, k, v), "kv")
        self._value_dense.build(value_shape)
        self._output_dense = self._dense("attention_output", "btnv,nvo->bto", (None, out), "o")
        self._output_dense.build((query_shape[0], query_shape[1], n, v))
        if self.position_encoding is not None:
            self.position_encoding.check_attention_shapes(n, h, v)
            if not self.position_encoding.built:
                self.position_encoding.build((None, None, n, h))
        self.built = True

    # ------------------------------------------------------------------ call
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
        if cache is None:
            if cache_index is not None:
                raise ValueError(
                    "`cache_index` is only used together with `cache`. "
                    f"Received: cache=None, cache_index={cache_index!r}"
                )
            return self._attention_call(
                query, value, key, query_mask, value_mask, key_mask, attention_mask,
                use_causal_mask, return_attention_scores, training,
            )
        self._check_cache(cache, cache_index, query)
        return self._attention_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            use_causal_mask, return_attention_scores, training,
            key_length=ops.shape(cache)[2], query_start=cache_index,
            cache=cache, cache_index=cache_index,
        )

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

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, cache=None, cache_index=None):
        q = self._query_dense(query)  # (B, T, N, H)
        k = self._key_dense(key)  # (B, S, K, H)
        v = self._value_dense(value)  # (B, S, K, V)
        t = ops.shape(q)[1]
        if cache is None:
            s = ops.shape(k)[1]
            query_start, key_start = s - t, 0
        else:
            query_start = key_start = cache_index
        pe = self.position_encoding
        if pe is not None:
            q, k = pe.transform_query_key(q, k, query_start, key_start)
        if cache is not None:
            cache = self._update_cache(cache, cache_index, k, v)
            k, v = cache[:, 0], cache[:, 1]  # (B, S_max, K, H)
            mask = masks_lib.merge_masks(mask, self._cache_mask(t, ops.shape(k)[1],
                                                                 cache_index,
                                                                 use_causal_mask))
            use_causal_mask = False
        mask = None if mask is None else mask[:, None]  # (B, 1, T, S)
        bias = None
        if pe is not None:
            bias = pe.attention_bias(q, ops.shape(k)[1], query_start, 1.0 / self.key_dim**0.5)
        need_weights = return_attention_scores or (pe is not None and pe.requires_weights)
        output, scores = self._attend(q, k, v, mask=mask, bias=bias,
                                      causal=use_causal_mask, training=training,
                                      return_weights=need_weights)
        if pe is not None and pe.requires_weights:
            output = output + ops.cast(pe.value_term(scores, query_start), output.dtype)
        output = self._output_dense(self._mask_heads(output))  # (B, T, O)
        scores = scores if return_attention_scores else None
        return (output, scores) if cache is None else (output, scores, cache)

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Attention on per-head tensors; returns `(output (B, T, N, V), weights or None)`.

        The hook that efficient and structured variants override.
        """
        rate = self.dropout if training else 0.0
        if self._use_chunked(query, key, return_weights, rate):
            from keras_attention.ops.chunked import chunked_attention

            output = chunked_attention(
                query, key, value, mask=mask, bias=bias, causal=causal,
                query_chunk_size=self.query_chunk_size, key_chunk_size=self.key_chunk_size,
            )
            return output, None
        result = scaled_dot_product_attention(
            query, key, value, mask=mask, bias=bias, causal=causal, dropout_rate=rate,
            training=bool(training), seed=self.seed_generator, return_weights=return_weights,
        )
        return result if return_weights else (result, None)

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

    @staticmethod
    def _update_cache(cache, cache_index, k, v):
        kv = ops.stack([k, v], axis=1)  # (B, 2, T, K, H)
        start = [0, 0, cache_index, 0, 0]
        return ops.slice_update(cache, start, ops.cast(kv, cache.dtype))

    @staticmethod
    def _cache_mask(query_length, cache_length, cache_index, causal):
        """`(1, T, S_max)`: keys already written; with `causal`, not after the query."""
        if causal:
            return masks_lib.causal_mask(query_length, cache_length, cache_index)[None]
        written = ops.arange(cache_length, dtype="int32") < (
            ops.cast(cache_index, "int32") + query_length
        )
        return ops.broadcast_to(written[None, None, :], (1, query_length, cache_length))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "num_key_value_heads": self.num_key_value_heads,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "position_encoding": (
                    None if self.position_encoding is None
                    else keras.saving.serialize_keras_object(self.position_encoding)
                ),
                "implementation": self.implementation,
                "query_chunk_size": self.query_chunk_size,
                "key_chunk_size": self.key_chunk_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config
