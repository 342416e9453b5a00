"""Local (sliding-window) attention.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features, W window
size.
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.attention.variant_calls import project_heads, reject_cache
from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    check_no_logits_bias,
    reject_arguments,
)
from keras_attention.ops.attention import scaled_dot_product_attention, zero_rows
from keras_attention.ops.band import (
    PaddingMasks,
    blocked_band_attention,
    dense_pattern,
    rows_with_keys,
    split_masks,
    static_le,
)
from keras_attention.ops.sliding_window import sliding_window_attention
from keras_attention.utils.validation import check_bool, check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class LocalAttention(MultiHeadAttention):
    """Local (sliding-window) multi-head attention, the local attention of
    Longformer (Beltagy et al. 2020, "Longformer: The Long-Document Transformer")
    and of Mistral's sliding window.

    Query i attends the keys j with `|i - j| <= window_size`, or with
    `0 <= i - j <= window_size` when causal (`causal=True` in the constructor or
    `use_causal_mask=True` at call time; either gives the causal band). When the
    query and key lengths differ, query i sits at key position `i + (S - T)`, as
    in `causal_mask`. The result is exactly `MultiHeadAttention` with the mask
    `masks.local_attention_mask` (`masks.sliding_window_mask` for T != S), but it
    is computed with `keras_attention.ops.sliding_window_attention`: time and
    memory grow as `T * (block_size + 2 * window_size)` and no `(T, S)` tensor
    is formed.

    Masks: `query_mask` and `value_mask`/`key_mask` (and Keras implicit masks)
    are kept as `(B, T)` / `(B, S)` vectors: padded keys are left out of every
    window and padded query rows are zeros. A full `attention_mask (B, T, S)` is
    applied block by block: each block of queries gathers its
    `(block_size, block_size + 2 * window_size)` slice of the mask, so nothing
    larger than the mask the caller already holds is formed. Rows with no
    allowed key are zeros.

    Dropout on the attention weights (`dropout > 0`, training only) uses the same
    block-wise computation with the weights formed per block.

    Attention scores: `return_attention_scores=True` returns the dense
    `(B, N, T, S)` weights (zeros outside the band), computed on demand by dense
    attention with the band mask. That costs O(T * S) memory and is meant for
    inspection and plots; the output is the same.

    Position encodings: only rotary embeddings (`"rotary"`): the band computation
    takes no logits bias, so ALiBi, T5 and Shaw encodings raise a `ValueError`.
    A key/value cache is not supported.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        window_size: non-negative int W, the largest allowed distance `|i - j|`.
        causal: if True, query i attends only keys `i - W .. i`.
        block_size: queries per block; defaults to `max(window_size, 16)`
            (at most T).
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
        query: `(B, T, F)`.
        value: `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` padding masks;
            filled from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, applied block-wise on top of the band.
        use_causal_mask: use the causal band (same as `causal=True`).
        return_attention_scores: also return the dense `(B, N, T, S)` weights
            (O(T * S), for inspection).
        training: enables dropout.

    Returns:
        `output (B, T, O)`, or `(output, scores)` with `return_attention_scores`.
        Padded query rows and rows with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 1024, 64))
    >>> layer = LocalAttention(num_heads=4, key_dim=16, window_size=32, causal=True)
    >>> layer(x, x).shape
    (2, 1024, 64)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        window_size,
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
        self.window_size = check_positive_int("window_size", window_size, allow_zero=True)
        self.causal = check_bool("causal", causal)
        self.block_size = check_positive_int("block_size", block_size, allow_none=True)
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)

    # ------------------------------------------------------------------ masks
    def _merge_masks(self, query, key, query_mask, value_mask, key_mask, attention_mask,
                     key_length=None):
        # Kept apart as vectors: merging them would build a (B, T, S) tensor.
        return split_masks(self._check_mask, query, key, query_mask, value_mask,
                           key_mask, attention_mask, key_length)

    @staticmethod
    def _valid_rows(mask, use_causal_mask, query_length, key_length, query_start):
        return None  # rows are zeroed in `_compute_attention`, from the vectors

    # ------------------------------------------------------------------ attention
    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, cache=None, cache_index=None):
        reject_cache(type(self).__name__, cache)
        q, k, v = project_heads(self, query, key, value)  # (B, T, N, H), (B, S, K, H|V)
        causal = self.causal or use_causal_mask
        output, scores, rows = self._local_attention(
            q, k, v, mask, causal, training, return_attention_scores
        )  # (B, T, N, V), (B, N, T, S) or None, (B|1, T) or None
        output = zero_rows(self._output_dense(self._mask_heads(output)), rows)  # (B, T, O)
        return output, scores

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Band attention on per-head tensors; `mask` is a `PaddingMasks` or None.

        Returns `(output (B, T, N, V), weights (B, N, T, S) or None)`; rows with no
        allowed key are zeros.
        """
        if bias is not None:
            raise ValueError(
                f"{type(self).__name__} takes no logits bias. Received: bias with "
                f"shape={tuple(bias.shape)}"
            )
        mask = PaddingMasks(None, None, None) if mask is None else mask
        output, weights, _ = self._local_attention(
            query, key, value, mask, causal or self.causal, training, return_weights
        )
        return output, weights

    def _local_attention(self, q, k, v, masks, causal, training, return_weights):
        """Output `(B, T, N, V)`, dense weights or None, and rows `(B|1, T)` or None."""
        t, s = ops.shape(q)[1], ops.shape(k)[1]
        rate = self.dropout if training else 0.0
        if return_weights:
            band = masks_lib.sliding_window_mask(t, self.window_size, s, causal)  # (T, S)
            dense = dense_pattern(band[None], masks)  # (B|1, T, S)
            output, weights = scaled_dot_product_attention(
                q, k, v, mask=dense[:, None], dropout_rate=rate, training=bool(training),
                seed=self.seed_generator, return_weights=True,
            )
            return output, weights, ops.any(dense, axis=-1)
        if masks.full is not None or rate:
            output, rows = blocked_band_attention(
                q, k, v, window_size=self.window_size, causal=causal,
                key_valid=masks.key, mask=masks.full, block_size=self.block_size,
                dropout=rate, seed=self.seed_generator,
            )
        else:
            output = sliding_window_attention(
                q, k, v, window_size=self.window_size, causal=causal, mask=masks.key,
                block_size=self.block_size,
            )  # (B, T, N, V)
            rows = None
            if masks.key is not None or not static_le(q.shape[1], k.shape[1]):
                rows = rows_with_keys(masks.key, t, s, self.window_size, causal)
        return output, None, masks_lib.merge_masks(rows, masks.query)

    def get_config(self):
        config = super().get_config()
        for name in UNUSED_ARGUMENTS:
            config.pop(name)
        config.update(
            {
                "window_size": self.window_size,
                "causal": self.causal,
                "block_size": self.block_size,
            }
        )
        return config
