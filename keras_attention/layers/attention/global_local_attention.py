"""Longformer attention: a sliding window for every token plus symmetric global tokens.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features, W window
size, J global tokens per sequence (a static bound).
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.attention.variant_calls import project_heads
from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    check_no_logits_bias,
    reject_arguments,
)
from keras_attention.ops.attention import (
    empty_result,
    scaled_dot_product_attention,
    zero_rows,
)
from keras_attention.ops.band import (
    GlobalKeys,
    PaddingMasks,
    blocked_band_attention,
    dense_pattern,
    gather_rows,
    split_masks,
)
from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class GlobalLocalAttention(MultiHeadAttention):
    """Global + local attention of Longformer (Beltagy et al. 2020, "Longformer: The
    Long-Document Transformer").

    Every query attends the keys of its sliding window (`|i - j| <= window_size`,
    positions aligned bottom-right when T != S, as in `LocalAttention`); global
    tokens attend every key and are attended by every query (symmetric). Global
    tokens are the first `num_global_tokens` positions, OR-ed with a call-time
    boolean `global_mask (B, T)` (self-attention only). Query i attends key j when
    `band(i, j) or global_query[i] or global_key[j]`, exactly `MultiHeadAttention`
    with the mask `masks.global_local_mask` (ANDed with the padding masks).

    Computation, with J global tokens per sequence: the queries are split into
    blocks; each block attends its band keys (global keys left out) plus the J
    global keys in a single softmax over both sets of logits, an
    O(T * (block_size + 2 * window_size + J)) computation; the J global query
    rows attend all S keys densely, O(J * S), and replace those rows. No
    `(T, S)` tensor is formed.

    J is static: `num_global_tokens`, or `max_global_tokens` when a `global_mask`
    is given. The global positions of each sequence are gathered with a top-k
    (earliest positions first); a sequence with more than `max_global_tokens`
    global tokens keeps its first `max_global_tokens` ones global and the rest
    act as local tokens (this cannot be checked inside a compiled graph).
    Without `max_global_tokens`, a call with a `global_mask` falls back to
    dense attention with the pattern mask: exact, but O(T * S) memory.

    Masks: `query_mask` and `value_mask`/`key_mask` (and Keras implicit masks)
    are kept as `(B, T)` / `(B, S)` vectors; padded keys are never attended
    (global ones included) and padded query rows are zeros. A full
    `attention_mask (B, T, S)` is ANDed with the pattern, applied block-wise
    (gathered per block, per global key and per global row). With
    `use_causal_mask=True` the band is causal and every pair also needs
    `j <= i + (S - T)`: a global token then attends all earlier keys and is
    attended by all later queries.

    Attention scores: `return_attention_scores=True` returns the dense
    `(B, N, T, S)` weights, computed on demand by dense attention with the
    pattern mask (O(T * S), for inspection and plots); the output is the same.

    Position encodings: only rotary embeddings (`"rotary"`); ALiBi, T5 and Shaw
    encodings raise a `ValueError`. A key/value cache is not supported.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        window_size: non-negative int W, the band's largest distance `|i - j|`.
        num_global_tokens: number of leading positions that are global.
        max_global_tokens: static bound J on the global tokens per sequence
            (including the leading ones) used with a call-time `global_mask`;
            at least `num_global_tokens`.
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
        attention_mask: boolean `(B, T, S)`, ANDed with the pattern.
        use_causal_mask: causal band, and `j <= i + (S - T)` for global pairs.
        return_attention_scores: also return the dense `(B, N, T, S)` weights
            (O(T * S), for inspection).
        training: enables dropout.
        global_mask: boolean `(B, T)`, True on global tokens (OR-ed with the first
            `num_global_tokens`); needs T == S.

    Returns:
        `output (B, T, O)`, or `(output, scores)` with `return_attention_scores`.
        Padded query rows and rows with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 1024, 64))
    >>> layer = GlobalLocalAttention(num_heads=4, key_dim=16, window_size=32,
    ...                              max_global_tokens=8)
    >>> is_global = keras.ops.arange(1024)[None] % 256 == 0  # 4 global tokens
    >>> layer(x, x, global_mask=keras.ops.tile(is_global, (2, 1))).shape
    (2, 1024, 64)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        window_size,
        num_global_tokens=0,
        max_global_tokens=None,
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
        self.num_global_tokens = check_positive_int(
            "num_global_tokens", num_global_tokens, allow_zero=True
        )
        self.max_global_tokens = check_positive_int(
            "max_global_tokens", max_global_tokens, allow_none=True
        )
        if self.max_global_tokens is not None and (
            self.max_global_tokens < self.num_global_tokens
        ):
            raise ValueError(
                "`max_global_tokens` bounds all global tokens, the leading "
                "`num_global_tokens` included, so it cannot be smaller. Received: "
                f"max_global_tokens={max_global_tokens}, "
                f"num_global_tokens={num_global_tokens}"
            )
        self.block_size = check_positive_int("block_size", block_size, allow_none=True)
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)

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
        global_mask=None,
    ):
        return self._attention_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            use_causal_mask, return_attention_scores, training, global_mask=global_mask,
        )

    def _merge_masks(self, query, key, query_mask, value_mask, key_mask, attention_mask,
                     key_length=None):
        # Kept apart as vectors: merging them would build a (B, T, S) tensor.
        return split_masks(self._check_mask, query, key, query_mask, value_mask,
                           key_mask, attention_mask, key_length)

    @staticmethod
    def _valid_rows(mask, use_causal_mask, query_length, key_length, query_start):
        return None  # rows are zeroed in `_compute_attention`, from the vectors

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, global_mask=None):
        q, k, v = project_heads(self, query, key, value)  # (B, T, N, H), (B, S, K, H|V)
        output, scores, rows = self._global_local_attention(
            q, k, v, mask, use_causal_mask, training, return_attention_scores, global_mask
        )
        output = zero_rows(self._output_dense(output), rows)  # (B, T, O)
        return output, scores

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Longformer attention on per-head tensors with the leading global tokens.

        `mask` is a `PaddingMasks` or None. Returns `(output (B, T, N, V), weights
        (B, N, T, S) or None)`; rows with no allowed key are zeros.
        """
        if bias is not None:
            raise ValueError(
                f"{type(self).__name__} takes no logits bias. Received: bias with "
                f"shape={tuple(bias.shape)}"
            )
        mask = PaddingMasks(None, None, None) if mask is None else mask
        output, weights, _ = self._global_local_attention(
            query, key, value, mask, causal, training, return_weights, None
        )
        return output, weights

    # ------------------------------------------------------------------ attention
    def _global_tokens(self, q, k, global_mask):
        """Global layout: `(is_global_query (B|1, T), is_global_key (B|1, S),
        positions (B|1, J) or None, slot_valid (B|1, J) or None)`; positions None
        means the dense fallback (a `global_mask` without `max_global_tokens`)."""
        t_dyn, s_dyn = ops.shape(q)[1], ops.shape(k)[1]
        count = self.num_global_tokens
        if global_mask is None:
            is_global_query = (ops.arange(t_dyn, dtype="int32") < count)[None]  # (1, T)
            is_global_key = (ops.arange(s_dyn, dtype="int32") < count)[None]  # (1, S)
            return is_global_query, is_global_key, None, None
        global_mask = ops.convert_to_tensor(global_mask)
        self._check_mask("global_mask", global_mask, tuple(q.shape[:2]))
        t, s = q.shape[1], k.shape[1]
        if isinstance(t, int) and isinstance(s, int) and t != s:
            raise ValueError(
                "`global_mask` marks tokens that are both queries and keys, so it needs "
                "a self-attention (query and key of the same length). Received: "
                f"global_mask with shape={tuple(global_mask.shape)}, key length {s}"
            )
        is_global = ops.logical_or(
            ops.cast(global_mask, "bool"), (ops.arange(t_dyn, dtype="int32") < count)[None]
        )  # (B, T)
        if self.max_global_tokens is None:
            return is_global, is_global, None, None
        bound = self.max_global_tokens
        rank = ops.cumsum(ops.cast(is_global, "int32"), axis=1)  # (B, T)
        is_global = ops.logical_and(is_global, rank <= bound)  # the first J stay global
        # Top-k of (T - position) on global tokens: their positions, earliest first.
        score = ops.cast(t_dyn - ops.arange(t_dyn, dtype="int32"), "float32")  # (T,)
        score = ops.where(is_global, score[None], 0.0)  # (B, T)
        score = ops.pad(score, [[0, 0], [0, bound]])  # (B, T + J): k <= length
        top, positions = ops.top_k(score, bound)  # (B, J)
        positions = ops.minimum(ops.cast(positions, "int32"), t_dyn - 1)
        return is_global, is_global, positions, top > 0.0

    def _global_local_attention(self, q, k, v, masks, causal, training, return_weights,
                                global_mask):
        t_dyn, s_dyn = ops.shape(q)[1], ops.shape(k)[1]
        rate = self.dropout if training else 0.0
        is_global_query, is_global_key, positions, slot_valid = self._global_tokens(
            q, k, global_mask
        )
        empty = empty_result(q, k, v, return_weights)
        if empty is not None:  # B, T or S is 0: no block, no global row, no key
            return empty + (ops.zeros((ops.shape(q)[0], t_dyn), dtype="bool"),)
        if return_weights or (global_mask is not None and positions is None):
            band = masks_lib.sliding_window_mask(t_dyn, self.window_size, s_dyn, causal)
            pattern = ops.logical_or(
                band[None],
                ops.logical_or(is_global_query[:, :, None], is_global_key[:, None, :]),
            )  # (B|1, T, S)
            if causal:
                pattern = ops.logical_and(pattern, masks_lib.causal_mask(t_dyn, s_dyn)[None])
            dense = dense_pattern(pattern, masks)  # (B|1, T, S)
            output, weights = scaled_dot_product_attention(
                q, k, v, mask=dense[:, None], dropout_rate=rate, training=bool(training),
                seed=self.seed_generator, return_weights=True,
            )
            weights = weights if return_weights else None
            return output, weights, ops.any(dense, axis=-1)

        if positions is None:  # only the leading tokens are global
            count = self.num_global_tokens
            slots = ops.arange(count, dtype="int32")[None]  # (1, J)
            query_positions = ops.minimum(slots, t_dyn - 1)
            query_slots = slots < t_dyn
            key_positions = ops.minimum(slots, s_dyn - 1)
            key_slots = slots < s_dyn
        else:
            count = self.max_global_tokens
            query_positions = key_positions = positions  # (B, J)
            query_slots = key_slots = slot_valid  # (B, J)
        global_keys = None
        if count:
            global_keys = GlobalKeys(key_positions, key_slots, is_global_key)
        output, rows = blocked_band_attention(
            q, k, v, window_size=self.window_size, causal=causal, key_valid=masks.key,
            mask=masks.full, global_keys=global_keys, block_size=self.block_size,
            dropout=rate, seed=self.seed_generator,
        )  # (B, T, N, V), (B|1, T)
        if count:
            output, rows = self._global_rows(
                q, k, v, masks, causal, rate, training, output, rows, is_global_query,
                query_positions, query_slots,
            )
        return output, None, masks_lib.merge_masks(rows, masks.query)

    def _global_rows(self, q, k, v, masks, causal, rate, training, output, rows,
                     is_global_query, positions, slot_valid):
        """Replace the rows of the global queries by dense attention over all keys."""
        t_dyn, s_dyn = ops.shape(q)[1], ops.shape(k)[1]
        query_global = gather_rows(q, positions)  # (B, J, N, H)
        allowed = slot_valid[:, :, None]  # (B|1, J, 1)
        if masks.key is not None:
            allowed = ops.logical_and(allowed, masks.key[:, None, :])  # (B, J, S)
        if causal:
            key_pos = ops.arange(s_dyn, dtype="int32")[None, None, :]  # (1, 1, S)
            before = key_pos <= positions[:, :, None] + (s_dyn - t_dyn)  # (B|1, J, S)
            allowed = ops.logical_and(allowed, before)
        if masks.full is not None:
            allowed = ops.logical_and(allowed, gather_rows(masks.full, positions))  # (B, J, S)
        output_global = scaled_dot_product_attention(
            query_global, k, v, mask=allowed[:, None], dropout_rate=rate,
            training=bool(training), seed=self.seed_generator,
        )  # (B, J, N, V)
        rows_global = ops.any(
            ops.broadcast_to(allowed, (ops.shape(allowed)[0], ops.shape(positions)[1],
                                       s_dyn)),
            axis=-1,
        )  # (B|1, J)
        # Global token i holds slot (number of global tokens up to i) - 1.
        slot = ops.cumsum(ops.cast(is_global_query, "int32"), axis=1) - 1  # (B|1, T)
        slot = ops.clip(slot, 0, ops.shape(positions)[1] - 1)
        output = ops.where(is_global_query[:, :, None, None],
                           gather_rows(output_global, slot), output)  # (B, T, N, V)
        rows = ops.where(is_global_query, gather_rows(rows_global, slot), rows)  # (B|1, T)
        return output, rows

    def get_config(self):
        config = super().get_config()
        for name in UNUSED_ARGUMENTS:
            config.pop(name)
        config.update(
            {
                "window_size": self.window_size,
                "num_global_tokens": self.num_global_tokens,
                "max_global_tokens": self.max_global_tokens,
                "block_size": self.block_size,
            }
        )
        return config
