"""Sparse Transformer attention (Child et al. 2019): strided and fixed patterns,
computed block by block.

Shape legend: B batch, T sequence length (queries and keys are the same positions),
Tp = R * C the length padded to whole blocks, F features, N query heads, K key/value
heads (G = N // K query heads per key/value head), H key head dim, V value head dim,
O output features, C block size (the stride l), R number of blocks, L keys of one
part of the pattern seen by a query, c summary positions per block.
"""

import math

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.attention.variant_calls import (
    blockwise_call,
    compute_with_pattern_rows,
)
from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    check_no_logits_bias,
    reject_arguments,
)
from keras_attention.ops.attention import empty_result, scaled_dot_product_attention
from keras_attention.ops.block_sparse import (
    attend_parts,
    block_key_masks,
    check_same_length,
    dense_rows,
    gather_valid,
    logical_and,
    pad_sequence,
    parts_rows,
    positions_module,
    seq_length,
)
from keras_attention.utils.validation import check_choice, check_positive_int

PATTERNS = ("strided", "fixed")


@keras.saving.register_keras_serializable(package="keras_attention")
class SparseAttention(MultiHeadAttention):
    """Sparse Transformer attention (Child et al. 2019, "Generating Long Sequences
    with Sparse Transformers"), strided and fixed patterns.

    Self-attention in which each query sees a fixed sparse set of keys, the union
    of two sets (the paper's "merged" heads: every head attends the union), with
    `l = block_size`:

    - `pattern="strided"`: (a) the previous `l` positions, `0 <= i - j < l`, and
      (b) every `l`-th position, `(i - j) mod l == 0`.
    - `pattern="fixed"`: (a) the positions of the same block, `j // l == i // l`,
      and (b) the summary positions, the last `c = num_summary` of every block,
      `j mod l >= l - c`.

    With `causal=True` (the paper's autoregressive setting, the default) only keys
    `j <= i` are kept. With `causal=False` the patterns are symmetric: strided
    (a) becomes `|i - j| < l` and (b) covers both directions; fixed (a) is the whole
    block and (b) every summary position of the sequence. `use_causal_mask=True`
    at call time makes a non-causal layer causal (the causal pattern is the
    non-causal one restricted to `j <= i`). The patterns are
    `keras_attention.masks.strided_sparse_mask` and `fixed_sparse_mask`; the layer
    equals `MultiHeadAttention` with that `attention_mask` and the same weights.

    Computation: the sequence is padded to a multiple of `l` and cut into blocks
    of `l` queries. Part (a) gathers each block's neighbouring key blocks (2, or 3
    when not causal; 1 for fixed); part (b) gathers the `T / l` keys of the query's
    residue class (strided) or the `c * T / l` summary keys (fixed). Both parts
    share one softmax, and a key in both parts counts once (masked in part (b)).
    Time and memory grow as `T * (l + T / l)` (`T * (l + c * T / l)` for fixed),
    `O(T sqrt(T))` with `l ~ sqrt(T)`, as in the paper; no `(T, T)` tensor is
    formed, not even for padding masks. Pick `block_size` near `sqrt(T)` for long
    sequences: with the default 16 the `T / l` part dominates beyond a few thousand
    positions.

    Masks: `query_mask` zeroes padded query rows; `value_mask`/`key_mask` (and Keras
    implicit masks) are gathered per block as key padding; a full
    `attention_mask (B, T, T)` (already quadratic) is gathered at the pattern's
    pairs. `return_attention_scores=True` falls back to dense attention with the
    pattern mask (O(T^2) time and memory) and returns the exact `(B, N, T, T)`
    weights, zero outside the pattern. Bias-type position encodings (ALiBi, T5,
    Shaw) would need the `(T, T)` logits and raise a `ValueError`; rotary works.
    There is no KV cache.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        pattern: `"strided"` or `"fixed"`.
        block_size: the stride / block length l.
        num_summary: summary positions per block c for the fixed pattern,
            `1 <= c <= block_size`.
        causal: keep only keys at or before the query (default True).
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
        value: `(B, T, F_v)`, usually the query itself (same length T).
        key: `(B, T, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` padding masks; filled
            from Keras implicit masks when not given.
        attention_mask: optional boolean `(B, T, T)`, True where allowed.
        use_causal_mask: also restrict to keys `j <= i`.
        return_attention_scores: also return the `(B, N, T, T)` weights (computed
            densely).
        training: enables dropout.

    Returns:
        `output (B, T, O)`, or `(output, scores)`. Rows of padded queries and rows
        with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 256, 32))
    >>> layer = SparseAttention(num_heads=4, key_dim=8, pattern="strided", block_size=16)
    >>> layer(x, x).shape
    (2, 256, 32)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        pattern="strided",
        block_size=16,
        num_summary=1,
        causal=True,
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
        self.pattern = check_choice("pattern", pattern, PATTERNS)
        self.block_size = check_positive_int("block_size", block_size)
        self.num_summary = check_positive_int("num_summary", num_summary)
        if self.num_summary > self.block_size:
            raise ValueError(
                "`num_summary` must be at most `block_size` (it counts positions of a "
                f"block). Received: num_summary={num_summary}, block_size={block_size}"
            )
        self.causal = bool(causal)
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)

    def _check_input_shapes(self, query_shape, value_shape, key_shape=None):
        super()._check_input_shapes(query_shape, value_shape, key_shape)
        check_same_length(type(self).__name__, query_shape, value_shape)

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
    ):
        return blockwise_call(
            self, query, value, key, query_mask, value_mask, key_mask, attention_mask,
            self.causal or bool(use_causal_mask), return_attention_scores, training,
        )

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, causal=False):
        return compute_with_pattern_rows(
            self, lambda: super(SparseAttention, self)._compute_attention(
                query, key, value, mask, causal, training, return_attention_scores
            )
        )

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """`mask` is None, `(B, 1, 1, T)` or `(B, 1, T, T)`; returns `(B, T, N, V)`."""
        empty = empty_result(query, key, value, return_weights)
        if empty is not None:  # T == 0 or B == 0: no block
            return empty
        rate = self.dropout if training else 0.0
        if return_weights:  # dense, with the pattern as the mask
            pattern = self._pattern_mask(seq_length(query), causal)  # (T, T)
            mask = masks_lib.merge_masks(pattern[None, None], mask)  # (B|1, 1, T, T)
            self._pattern_rows = dense_rows(mask)
            return scaled_dot_product_attention(
                query, key, value, mask=mask, dropout_rate=rate, training=bool(training),
                seed=self.seed_generator, return_weights=True,
            )
        output, self._pattern_rows = self._sparse_attention(query, key, value, mask,
                                                            causal, rate)
        return output, None

    def _pattern_mask(self, length, causal):
        if self.pattern == "strided":
            return masks_lib.strided_sparse_mask(length, self.block_size, causal)
        return masks_lib.fixed_sparse_mask(length, self.block_size, self.num_summary,
                                           causal)

    # ------------------------------------------------------------------ blocks
    def _sparse_attention(self, query, key, value, mask, causal, rate):
        b = ops.shape(query)[0]
        t = seq_length(query)
        n, k, h, v_dim = query.shape[2], key.shape[2], query.shape[3], value.shape[3]
        g, c = n // k, self.block_size
        r = (t + c - 1) // c  # R
        tp = r * c  # Tp
        key_valid, pairs = block_key_masks(mask, t, tp)

        scaled = query * ops.cast(1.0 / math.sqrt(h), query.dtype)
        q = ops.reshape(pad_sequence(scaled, tp, t), (b, r, c, k, g, h))  # (B, R, C, K, G, H)
        kb = ops.reshape(pad_sequence(key, tp, t), (b, r, c, k, h))  # (B, R, C, K, H)
        vb = ops.reshape(pad_sequence(value, tp, t), (b, r, c, k, v_dim))  # (B, R, C, K, V)
        xp = positions_module(t)
        query_pos = xp.reshape(xp.arange(tp, dtype="int32"), (r, c))  # (R, C)

        def valid_at(static, q_pos, k_pos):
            dynamic = gather_valid(key_valid, pairs, t, tp, q_pos, k_pos)
            return logical_and(static, dynamic)  # (B|1, R, C, L)

        if self.pattern == "strided":
            parts = self._strided_parts(q, kb, vb, query_pos, r, c, causal, valid_at, xp)
        else:
            parts = self._fixed_parts(q, kb, vb, query_pos, r, c, causal, valid_at, xp)
        out = attend_parts(parts, value.dtype, rate,
                           self.seed_generator)  # (B, R, C, K, G, V)
        out = ops.reshape(out, (b, tp, n, v_dim))[:, :t]  # (B, T, N, V)
        rows = parts_rows([p[1] for p in parts], b, t, r, c)  # (B, T)
        return ops.cast(out, query.dtype), rows

    @staticmethod
    def _local_blocks(q, kb, vb, query_pos, r, c, num_blocks, band, valid_at, xp):
        """Part (a) of the strided pattern: key blocks `r - 1 .. r - 2 + num_blocks`."""
        b, k, h, v_dim = ops.shape(kb)[0], kb.shape[3], kb.shape[4], vb.shape[4]
        span = num_blocks * c  # L
        blocks = xp.arange(r, dtype="int32")[:, None] + xp.arange(
            -1, num_blocks - 1, dtype="int32")[None, :]  # (R, nb)
        key_pos = blocks[:, :, None] * c + xp.arange(c, dtype="int32")  # (R, nb, C)
        key_pos = xp.reshape(key_pos, (r, 1, span))  # (R, 1, L)
        safe = xp.clip(blocks, 0, r - 1)
        lk = ops.reshape(ops.take(kb, safe, axis=1), (b, r, span, k, h))  # (B, R, L, K, H)
        lv = ops.reshape(ops.take(vb, safe, axis=1), (b, r, span, k, v_dim))  # (B, R, L, K, V)
        distance = query_pos[:, :, None] - key_pos  # (R, C, L)
        valid = valid_at(band(distance), query_pos[:, :, None], key_pos)  # (B|1, R, C, L)
        logits = ops.einsum("brqkgh,brlkh->bkgrql", q, lk)  # (B, K, G, R, C, L)

        def combine(p):
            return ops.einsum("bkgrql,brlkv->brqkgv", p, lv)  # (B, R, C, K, G, V)

        return ops.cast(logits, "float32"), valid, combine

    def _strided_parts(self, q, kb, vb, query_pos, r, c, causal, valid_at, xp):
        if causal:  # blocks r - 1 and r
            local = self._local_blocks(
                q, kb, vb, query_pos, r, c, 2, lambda d: xp.logical_and(d >= 0, d < c),
                valid_at, xp,
            )
        else:  # blocks r - 1, r and r + 1
            local = self._local_blocks(
                q, kb, vb, query_pos, r, c, 3, lambda d: xp.abs(d) < c, valid_at, xp,
            )
        # Part (b): query (r, o) attends keys (m, o), m = 0 .. R - 1: its residue class.
        sk = ops.transpose(kb, (0, 2, 1, 3, 4))  # (B, C, R, K, H)
        sv = ops.transpose(vb, (0, 2, 1, 3, 4))  # (B, C, R, K, V)
        query_block = xp.arange(r, dtype="int32")[:, None, None]  # (R, 1, 1)
        key_block = xp.arange(r, dtype="int32")[None, None, :]  # (1, 1, R)
        # m == r is the query itself, already in part (a); causal keeps m < r.
        static = key_block < query_block if causal else xp.not_equal(key_block, query_block)
        key_pos = key_block * c + xp.arange(c, dtype="int32")[None, :, None]  # (1, C, R)
        valid = valid_at(static, query_pos[:, :, None], key_pos)  # (B|1, R, C, R)
        logits = ops.einsum("brokgh,bomkh->bkgrom", q, sk)  # (B, K, G, R, C, R)

        def combine(p):
            return ops.einsum("bkgrom,bomkv->brokgv", p, sv)  # (B, R, C, K, G, V)

        return [local, (ops.cast(logits, "float32"), valid, combine)]

    def _fixed_parts(self, q, kb, vb, query_pos, r, c, causal, valid_at, xp):
        b, k, h, v_dim = ops.shape(kb)[0], kb.shape[3], kb.shape[4], vb.shape[4]
        # Part (a): the query's own block.
        key_pos = query_pos[:, None, :]  # (R, 1, C)
        static = key_pos <= query_pos[:, :, None] if causal else xp.ones((1, 1, c), "bool")
        valid = valid_at(static, query_pos[:, :, None], key_pos)  # (B|1, R, C, C)
        logits = ops.einsum("brqkgh,brskh->bkgrqs", q, kb)  # (B, K, G, R, C, C)

        def combine_local(p):
            return ops.einsum("bkgrqs,brskv->brqkgv", p, vb)  # (B, R, C, K, G, V)

        # Part (b): the last c positions of every block, the same keys for all queries.
        s = self.num_summary
        sk = ops.reshape(kb[:, :, c - s:], (b, r * s, k, h))  # (B, R * c, K, H)
        sv = ops.reshape(vb[:, :, c - s:], (b, r * s, k, v_dim))  # (B, R * c, K, V)
        summary_pos = xp.arange(r, dtype="int32")[:, None] * c + (c - s) + xp.arange(
            s, dtype="int32")[None, :]  # (R, c)
        summary_pos = xp.reshape(summary_pos, (1, 1, r * s))  # (1, 1, R * c)
        key_block = xp.floor_divide(summary_pos, c)
        query_block = xp.arange(r, dtype="int32")[:, None, None]  # (R, 1, 1)
        # Summary keys of the query's own block are in part (a); causal keeps earlier.
        static_s = key_block < query_block if causal else xp.not_equal(key_block, query_block)
        valid_s = valid_at(static_s, query_pos[:, :, None], summary_pos)  # (B|1, R, C, R*c)
        logits_s = ops.einsum("brqkgh,bskh->bkgrqs", q, sk)  # (B, K, G, R, C, R * c)

        def combine_summary(p):
            return ops.einsum("bkgrqs,bskv->brqkgv", p, sv)  # (B, R, C, K, G, V)

        return [
            (ops.cast(logits, "float32"), valid, combine_local),
            (ops.cast(logits_s, "float32"), valid_s, combine_summary),
        ]

    def get_config(self):
        config = super().get_config()
        for name in UNUSED_ARGUMENTS:
            config.pop(name)
        config.update(
            {
                "pattern": self.pattern,
                "block_size": self.block_size,
                "num_summary": self.num_summary,
                "causal": self.causal,
            }
        )
        return config
