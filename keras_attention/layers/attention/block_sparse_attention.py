"""BigBird block-sparse attention: window, global and random key blocks.

Shape legend: B batch, T sequence length (queries and keys are the same positions),
Tp = R * C the length padded to whole blocks, F features, N query heads, K key/value
heads (G = N // K query heads per key/value head), H key head dim, V value head dim,
O output features, C block size, R number of blocks, Rg global query blocks,
Rn = R - Rg other query blocks, P key blocks per query block (window + global +
random), L = P * C keys per query block.
"""

import functools
import math

import keras
import numpy as np
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
)
from keras_attention.utils.validation import check_positive_int


@functools.lru_cache(maxsize=64)
def block_layout(length, block_size, num_window_blocks, num_global_blocks,
                 num_random_blocks, seed, causal):
    """Static block tables of the non-global query blocks, as NumPy arrays.

    Returns `(key_blocks (Rn, P) int32, block_valid (Rn, P) bool)`: row i describes
    query block `Rg + i`; its columns are the window blocks, the global blocks, then
    the random blocks (`masks.block_sparse_random_blocks`, the draw shared with
    `masks.block_sparse_mask`). Window blocks outside `[0, R)`, window blocks that
    are also global (the duplicate is the global column), future window blocks
    (causal) and missing random blocks are invalid; invalid entries point at block 0.
    """
    r = -(-length // block_size)
    rg = min(num_global_blocks, r)
    half = num_window_blocks // 2
    rows = np.arange(rg, r)[:, None]  # (Rn, 1)
    window = rows + np.arange(-half, half + 1)[None, :]  # (Rn, W)
    window_ok = (window >= rg) & (window < r)
    if causal:
        window_ok &= window <= rows
    globals_ = np.broadcast_to(np.arange(rg)[None, :], (r - rg, rg))  # (Rn, Rg)
    random = masks_lib.block_sparse_random_blocks(
        r, num_window_blocks, num_global_blocks, num_random_blocks, seed, causal
    )[rg:]  # (Rn, num_random_blocks), -1 where none
    blocks = np.concatenate([window, globals_, random], axis=1)
    valid = np.concatenate([window_ok, np.ones(globals_.shape, bool), random >= 0], axis=1)
    blocks = np.where(valid, blocks, 0).astype("int32")
    for table in (blocks, valid):
        table.setflags(write=False)  # shared by the cache
    return blocks, valid


@keras.saving.register_keras_serializable(package="keras_attention")
class BlockSparseAttention(MultiHeadAttention):
    """BigBird block-sparse attention (Zaheer et al. 2020, "Big Bird: Transformers
    for Longer Sequences"), the ITC variant: global blocks are sequence positions.

    The sequence is padded to a multiple of `block_size` and cut into blocks.
    Query block r attends the key blocks of:

    - its window: the `num_window_blocks` blocks centred on it (odd);
    - the global blocks: the first `num_global_blocks` blocks, which in turn
      attend every key (their query rows are computed densely);
    - `num_random_blocks` random blocks, drawn once per sequence length, without
      replacement, among the blocks that are neither global nor in the window.

    The random draw is `keras_attention.masks.block_sparse_random_blocks`, a NumPy
    generator seeded with `seed` and the number of blocks, so it is a fixed function
    of the (static) length and `seed`; `seed` is in the config, so a saved and
    reloaded model uses the same pattern. The full pattern is
    `keras_attention.masks.block_sparse_mask`; the layer equals
    `MultiHeadAttention` with that `attention_mask` and the same weights.

    Computation: each non-global query block gathers its `P = num_window_blocks +
    num_global_blocks + num_random_blocks` key blocks, so time and memory grow as
    `T * block_size * P` (plus `T * block_size * num_global_blocks` for the global
    rows) instead of `T^2`. A key block that appears in two parts (a window block
    that is also global) counts once: the duplicate is masked. Blocks outside the
    sequence (the window at the ends, too few random candidates in short
    sequences) are masked.

    The attention is bidirectional. `use_causal_mask=True` keeps only keys `j <= i`:
    future window blocks and the future part of the diagonal block are masked, and
    the random blocks are drawn among earlier blocks only (a different draw from
    the bidirectional one, `block_sparse_mask(..., causal=True)`).

    Masks: `query_mask` zeroes padded query rows; `value_mask`/`key_mask` (and Keras
    implicit masks) are gathered per block as key padding; a full
    `attention_mask (B, T, T)` (already quadratic) is gathered at the pattern's
    pairs. No `(T, T)` tensor is formed otherwise. `return_attention_scores=True`
    falls back to dense attention with the pattern mask (O(T^2) time and memory)
    and returns the exact `(B, N, T, T)` weights. The sequence length must be
    static (the pattern is built from it). Bias-type position encodings (ALiBi, T5,
    Shaw) raise a `ValueError`; rotary works. There is no KV cache.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        block_size: positions per block C.
        num_window_blocks: odd number of neighbouring key blocks, centred.
        num_global_blocks: number of leading global blocks.
        num_random_blocks: random key blocks per query block.
        seed: int seed of the random blocks (and of the attention dropout).
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`).
        dropout: dropout rate on the attention weights.
        use_bias: whether the dense projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: `None` or a rotary encoding (instance, config or
            `"rotary"`).
        kernel_initializer, bias_initializer: dense projection initializers.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, T, F)`, T static.
        value: `(B, T, F_v)`, usually the query itself (same length T).
        key: `(B, T, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` padding masks; filled
            from Keras implicit masks when not given.
        attention_mask: optional boolean `(B, T, T)`, True where allowed.
        use_causal_mask: keep only keys `j <= i` (see above).
        return_attention_scores: also return the `(B, N, T, T)` weights (computed
            densely).
        training: enables dropout.

    Returns:
        `output (B, T, O)`, or `(output, scores)`. Rows of padded queries and rows
        with no allowed key are zeros.

    Example:

    >>> x = keras.random.normal((2, 512, 32))
    >>> layer = BlockSparseAttention(num_heads=4, key_dim=8, block_size=32)
    >>> layer(x, x).shape
    (2, 512, 32)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        block_size=16,
        num_window_blocks=3,
        num_global_blocks=1,
        num_random_blocks=2,
        seed=0,
        value_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        position_encoding=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        reject_arguments(type(self).__name__, kwargs, UNUSED_ARGUMENTS)
        # Checked before the base class uses `seed` for the dropout generator.
        masks_lib.check_block_sparse_arguments(
            num_window_blocks, num_global_blocks, num_random_blocks, seed
        )
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
        self.block_size = check_positive_int("block_size", block_size)
        self.num_window_blocks = num_window_blocks
        self.num_global_blocks = num_global_blocks
        self.num_random_blocks = num_random_blocks
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)

    def _check_input_shapes(self, query_shape, value_shape, key_shape=None):
        super()._check_input_shapes(query_shape, value_shape, key_shape)
        check_same_length(type(self).__name__, query_shape, value_shape)
        if query_shape[1] is None:
            raise ValueError(
                "BlockSparseAttention builds its block pattern from the sequence length, "
                "which must be static. Received: query.shape="
                f"{tuple(query_shape)}"
            )

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
            bool(use_causal_mask), return_attention_scores, training,
        )

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, causal=False):
        return compute_with_pattern_rows(
            self, lambda: super(BlockSparseAttention, self)._compute_attention(
                query, key, value, mask, causal, training, return_attention_scores
            )
        )

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """`mask` is None, `(B, 1, 1, T)` or `(B, 1, T, T)`; returns `(B, T, N, V)`."""
        empty = empty_result(query, key, value, return_weights)
        if empty is not None:  # T == 0 or B == 0: no block
            return empty
        rate = self.dropout if training else 0.0
        t = query.shape[1]
        if return_weights:  # dense, with the pattern as the mask
            pattern = masks_lib.block_sparse_mask(
                t, self.block_size, self.num_window_blocks, self.num_global_blocks,
                self.num_random_blocks, self.seed, causal,
            )  # (T, T)
            mask = masks_lib.merge_masks(pattern[None, None], mask)  # (B|1, 1, T, T)
            self._pattern_rows = dense_rows(mask)
            return scaled_dot_product_attention(
                query, key, value, mask=mask, dropout_rate=rate, training=bool(training),
                seed=self.seed_generator, return_weights=True,
            )
        output, self._pattern_rows = self._block_sparse_attention(query, key, value, mask,
                                                                  causal, rate)
        return output, None

    # ------------------------------------------------------------------ blocks
    def _block_sparse_attention(self, query, key, value, mask, causal, rate):
        b, t = ops.shape(query)[0], query.shape[1]
        n, k, h, v_dim = query.shape[2], key.shape[2], query.shape[3], value.shape[3]
        g, c = n // k, self.block_size
        r = -(-t // c)  # R
        tp, rg = r * c, min(self.num_global_blocks, r)  # Tp, Rg
        key_valid, pairs = block_key_masks(mask, t, tp)
        scaled = query * ops.cast(1.0 / math.sqrt(h), query.dtype)
        q = pad_sequence(scaled, tp, t)  # (B, Tp, N, H)
        kp = pad_sequence(key, tp, t)  # (B, Tp, K, H)
        vp = pad_sequence(value, tp, t)  # (B, Tp, K, V)
        outputs, rows = [], []  # per part: (B, T_part, N, V) and (B, T_part)

        if rg:  # global query blocks: dense over every key
            qg = ops.reshape(q[:, : rg * c], (b, rg * c, k, g, h))  # (B, Rg*C, K, G, H)
            query_pos = np.arange(rg * c, dtype="int32")[:, None]  # (Rg*C, 1)
            key_pos = np.arange(tp, dtype="int32")[None, :]  # (1, Tp)
            static = key_pos <= query_pos if causal else np.ones((1, tp), bool)
            valid = logical_and(
                static, gather_valid(key_valid, pairs, t, tp, query_pos, key_pos)
            )  # (B|1, Rg*C, Tp)
            logits = ops.einsum("bqkgh,bskh->bkgqs", qg, kp)  # (B, K, G, Rg*C, Tp)

            def combine_global(p):
                return ops.einsum("bkgqs,bskv->bqkgv", p, vp)  # (B, Rg*C, K, G, V)

            parts = [(ops.cast(logits, "float32"), valid, combine_global)]
            out = attend_parts(parts, value.dtype, rate, self.seed_generator)
            outputs.append(ops.reshape(out, (b, rg * c, n, v_dim)))  # (B, Rg*C, N, V)
            rows.append(ops.broadcast_to(ops.any(valid, axis=-1), (b, rg * c)))

        if r > rg:  # the other query blocks: gathered key blocks
            rn = r - rg
            blocks, block_valid = block_layout(
                t, c, self.num_window_blocks, self.num_global_blocks,
                self.num_random_blocks, self.seed, causal,
            )  # (Rn, P)
            p_blocks = blocks.shape[1]
            span = p_blocks * c  # L
            qn = ops.reshape(q[:, rg * c:], (b, rn, c, k, g, h))  # (B, Rn, C, K, G, H)
            kb = ops.reshape(kp, (b, r, c, k, h))  # (B, R, C, K, H)
            vb = ops.reshape(vp, (b, r, c, k, v_dim))  # (B, R, C, K, V)
            index = ops.convert_to_tensor(blocks, dtype="int32")  # (Rn, P)
            kn = ops.reshape(ops.take(kb, index, axis=1), (b, rn, span, k, h))  # (B,Rn,L,K,H)
            vn = ops.reshape(ops.take(vb, index, axis=1), (b, rn, span, k, v_dim))
            key_pos = blocks[:, :, None] * c + np.arange(c)[None, None, :]  # (Rn, P, C)
            key_pos = key_pos.reshape(rn, 1, span).astype("int32")  # (Rn, 1, L)
            query_pos = np.arange(rg * c, tp).reshape(rn, c, 1).astype("int32")  # (Rn, C, 1)
            static = np.repeat(block_valid, c, axis=1)[:, None, :]  # (Rn, 1, L)
            if causal:
                static = static & (key_pos <= query_pos)  # (Rn, C, L)
            valid = logical_and(
                static, gather_valid(key_valid, pairs, t, tp, query_pos, key_pos)
            )  # (B|1, Rn, C, L)
            logits = ops.einsum("brqkgh,brlkh->bkgrql", qn, kn)  # (B, K, G, Rn, C, L)

            def combine_blocks(p):
                return ops.einsum("bkgrql,brlkv->brqkgv", p, vn)  # (B, Rn, C, K, G, V)

            parts = [(ops.cast(logits, "float32"), valid, combine_blocks)]
            out = attend_parts(parts, value.dtype, rate, self.seed_generator)
            outputs.append(ops.reshape(out, (b, rn * c, n, v_dim)))  # (B, Rn*C, N, V)
            part = ops.broadcast_to(ops.any(valid, axis=-1), (b, rn, c))  # (B, Rn, C)
            rows.append(ops.reshape(part, (b, rn * c)))

        out = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=1)
        rows = rows[0] if len(rows) == 1 else ops.concatenate(rows, axis=1)  # (B, Tp)
        return ops.cast(out[:, :t], query.dtype), rows[:, :t]  # (B, T, N, V), (B, T)

    def get_config(self):
        config = super().get_config()
        for name in UNUSED_ARGUMENTS:
            config.pop(name)
        config.update(
            {
                "block_size": self.block_size,
                "num_window_blocks": self.num_window_blocks,
                "num_global_blocks": self.num_global_blocks,
                "num_random_blocks": self.num_random_blocks,
            }
        )
        return config
