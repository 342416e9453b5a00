"""Band attention with extra (global) keys, computed block by block, and the masks
kept as vectors that go with it (`LocalAttention`, `GlobalLocalAttention`,
`AdaptiveSpanAttention`, `LinearAttention`).

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads (G = N // K query heads per key/value head), H key head dim, V value head
dim, W window size, C block size, R number of query blocks (T padded to R * C),
L keys per block (C + 2W, or C + W when causal), J extra (global) keys per query.
"""

import collections
import math

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.ops.attention import batched_take, empty_attention
from keras_attention.ops.masked_softmax import masked_softmax
from keras_attention.ops.sliding_window import _MIN_DEFAULT_BLOCK

#: The masks of one call kept apart: `query (B, T)`, `key (B, S)` (value_mask AND
#: key_mask) and the user's `full (B, T, S)` attention mask; each boolean or None.
PaddingMasks = collections.namedtuple("PaddingMasks", ["query", "key", "full"])

#: Extra keys attended by every query of the band computation: `positions (B|1, J)`
#: int32 key positions, `valid (B|1, J)` for the slots in use and `is_global
#: (B|1, S)`, True on those keys (they are left out of the band, not counted twice).
GlobalKeys = collections.namedtuple("GlobalKeys", ["positions", "valid", "is_global"])


def split_masks(check_mask, query, key, query_mask, value_mask, key_mask, attention_mask,
                key_length=None):
    """The masks of a call as a `PaddingMasks` of booleans, without merging them.

    `check_mask(name, mask, expected_shape)` raises for a mask of the wrong static
    shape; `key_length` replaces the key's length S when given.
    """
    b, t = query.shape[0], query.shape[1]
    s = key.shape[1] if key_length is None else key_length
    query_valid = None
    if query_mask is not None:
        query_mask = ops.convert_to_tensor(query_mask)
        check_mask("query_mask", query_mask, (b, t))
        query_valid = ops.cast(query_mask, "bool")  # (B, T)
    key_valid = None
    for name, m in (("value_mask", value_mask), ("key_mask", key_mask)):
        if m is not None:
            m = ops.convert_to_tensor(m)
            check_mask(name, m, (b, s))
            key_valid = masks_lib.merge_masks(key_valid, m)  # (B, S)
    full = None
    if attention_mask is not None:
        attention_mask = ops.convert_to_tensor(attention_mask)
        check_mask("attention_mask", attention_mask, (b, t, s))
        full = ops.cast(attention_mask, "bool")  # (B, T, S)
    return PaddingMasks(query_valid, key_valid, full)


def dense_pattern(pattern, masks):
    """AND of a `(B|1, T, S)` pattern with the masks, as a dense `(B|1, T, S)` mask."""
    query = None if masks.query is None else masks.query[:, :, None]  # (B, T, 1)
    key = None if masks.key is None else masks.key[:, None, :]  # (B, 1, S)
    return masks_lib.merge_masks(pattern, masks.full, query, key)


def static_le(a, b):
    """True when both sizes are static Python ints and a <= b."""
    return isinstance(a, int) and isinstance(b, int) and a <= b


def rows_with_keys(key_valid, query_length, key_length, window_size=None, causal=False,
                   query_start=None):
    """`(B|1, T)`: True where query i has at least one valid key in its range.

    Query i sits at key position `p = i + query_start` (default `S - T`); its
    range is `|p - j| <= W`, or `0 <= p - j <= W` when causal; `window_size=None`
    is unbounded. Computed from a prefix count of the valid keys `(B|1, S)` (None:
    all valid): O(B * (T + S)), no `(T, S)` tensor.
    """
    start = key_length - query_length if query_start is None else query_start
    p = ops.arange(query_length, dtype="int32") + ops.cast(start, "int32")  # (T,)
    last = ops.cast(key_length, "int32") - 1
    lo = ops.zeros_like(p) if window_size is None else p - window_size
    if causal:
        hi = p
    else:
        hi = ops.full_like(p, last) if window_size is None else p + window_size
    lo, hi = ops.maximum(lo, 0), ops.minimum(hi, last)  # (T,)
    nonempty = (hi >= lo)[None]  # (1, T)
    if key_valid is None:
        return nonempty
    counts = ops.cumsum(ops.cast(key_valid, "int32"), axis=1)  # (B, S)
    counts = ops.pad(counts, [[0, 0], [1, 0]])  # (B, S + 1): valid keys before j
    upper = ops.take(counts, ops.clip(hi + 1, 0, last + 1), axis=1)  # (B, T)
    lower = ops.take(counts, ops.clip(lo, 0, last + 1), axis=1)  # (B, T)
    return ops.logical_and(nonempty, upper > lower)


def _is_one(size):
    return isinstance(size, int) and size == 1


def gather_rows(x, positions):
    """`x[b, positions[b, j]]`: `x (B|1, L, ...)`, `positions (B|1, J)` -> `(B, J, ...)`."""
    if _is_one(positions.shape[0]):
        return ops.take(x, positions[0], axis=1)
    if _is_one(x.shape[0]):
        shape = ops.shape(x)
        x = ops.broadcast_to(x, (ops.shape(positions)[0],) + tuple(shape[1:]))
    return batched_take(x, positions, 1)


def blocked_band_attention(
    query,
    key,
    value,
    *,
    window_size,
    causal=False,
    key_valid=None,
    mask=None,
    global_keys=None,
    block_size=None,
    dropout=0.0,
    seed=None,
    soft_mask=None,
):
    """Band attention computed block by block, with optional full mask, extra
    (global) keys, a per-head soft mask and dropout; the same band as
    `ops.sliding_window_attention`.

    Each block of C queries attends its L band keys plus the J keys of
    `global_keys` in one softmax over `L + J` logits (the global keys are left out
    of the band so none is counted twice). Memory is O(T * (L + J)) per head; a
    full `mask (B, T, S)` is gathered per block, never expanded.

    Args:
        query: `(B, T, N, H)`; key: `(B, S, K, H)`; value: `(B, S, K, V)`.
        window_size: W; causal: the causal band `0 <= i - j <= W`.
        key_valid: `(B|1, S)` boolean key padding mask or None.
        mask: `(B, T, S)` boolean mask or None.
        global_keys: a `GlobalKeys` or None.
        block_size: C; defaults to `max(W, 16)` capped at T.
        dropout: dropout rate on the weights (0 for none).
        seed: `keras.random.SeedGenerator` of the dropout.
        soft_mask: None, or a callable mapping the signed distances `(R, C, L)`
            int32 (query position minus key position) of the band keys to factors
            in [0, 1], broadcastable to `(N, R, C, L)`. The weight of a band key
            becomes `m * exp(s) / sum(m * exp(s))`; a factor of 0 leaves the key
            out. Not combined with `global_keys`.

    Returns:
        `output (B, T, N, V)` in the query's dtype (zeros on rows with no allowed
        key) and `rows (B|1, T)`, True where a query has an allowed key.
    """
    b_dyn, t_dyn, s_dyn = ops.shape(query)[0], ops.shape(query)[1], ops.shape(key)[1]
    empty = empty_attention(query, key, value)
    if empty is not None:  # B, T or S is 0: no block to gather
        return empty, ops.zeros((b_dyn, t_dyn), dtype="bool")
    if soft_mask is not None and global_keys is not None:
        raise ValueError("`soft_mask` applies to the band keys only; it cannot be "
                         "combined with `global_keys`.")
    t = query.shape[1]
    n, k, h, v_dim = query.shape[2], key.shape[2], query.shape[3], value.shape[3]
    g, w = n // k, window_size
    c = block_size or max(w, _MIN_DEFAULT_BLOCK)
    if isinstance(t, int):  # (not a JAX symbolic size)
        c = max(1, min(c, t))
    num_blocks = (t_dyn + c - 1) // c  # R
    span = c + w if causal else c + 2 * w  # L
    offset = s_dyn - t_dyn  # query i sits at key position i + offset

    block_start = ops.arange(num_blocks, dtype="int32") * c + offset - w  # (R,)
    key_pos = block_start[:, None] + ops.arange(span, dtype="int32")[None, :]  # (R, L)
    in_range = ops.logical_and(key_pos >= 0, key_pos < s_dyn)  # (R, L)
    gather_pos = ops.clip(key_pos, 0, s_dyn - 1)  # (R, L)
    key_blocks = ops.take(key, gather_pos, axis=1)  # (B, R, L, K, H)
    value_blocks = ops.take(value, gather_pos, axis=1)  # (B, R, L, K, V)
    query_pos = ops.reshape(
        ops.arange(num_blocks * c, dtype="int32") + offset, (num_blocks, c)
    )  # (R, C)
    distance = query_pos[:, :, None] - key_pos[:, None, :]  # (R, C, L)
    if causal:
        band = ops.logical_and(distance >= 0, distance <= w)
    else:
        band = ops.abs(distance) <= w
    valid = ops.logical_and(band, in_range[:, None, :])[None]  # (1, R, C, L)
    keep = key_valid
    if global_keys is not None:
        keep = masks_lib.merge_masks(keep, ops.logical_not(global_keys.is_global))
    if keep is not None:
        keep_blocks = ops.take(keep, gather_pos, axis=1)  # (B|1, R, L)
        valid = ops.logical_and(valid, keep_blocks[:, :, None, :])  # (B|1, R, C, L)
    if mask is not None:
        mask = ops.pad(ops.cast(mask, "int8"), [[0, 0], [0, num_blocks * c - t_dyn], [0, 0]])
        mask = ops.cast(mask, "bool")  # (B, R * C, S)
        mask_blocks = ops.reshape(mask, (b_dyn, num_blocks, c, s_dyn))  # (B, R, C, S)
        index = ops.broadcast_to(gather_pos[None, :, None, :], (b_dyn, num_blocks, c, span))
        valid = ops.logical_and(valid, ops.take_along_axis(mask_blocks, index, axis=3))

    scale = 1.0 / math.sqrt(h)
    q = ops.pad(query * ops.cast(scale, query.dtype),
                [[0, 0], [0, num_blocks * c - t_dyn], [0, 0], [0, 0]])  # (B, R*C, N, H)
    q = ops.reshape(q, (b_dyn, num_blocks, c, k, g, h))  # (B, R, C, K, G, H)
    logits = ops.einsum("brqkgh,brlkh->bkgrql", q, key_blocks)  # (B, K, G, R, C, L)
    logits = ops.cast(logits, "float32")

    if global_keys is not None:
        positions = global_keys.positions  # (B|1, J)
        key_global = gather_rows(key, positions)  # (B, J, K, H)
        value_global = gather_rows(value, positions)  # (B, J, K, V)
        global_valid = global_keys.valid  # (B|1, J)
        if key_valid is not None:
            global_valid = ops.logical_and(
                global_valid, gather_rows(key_valid, positions)
            )  # (B, J)
        global_valid = global_valid[:, None, None, :]  # (B|1, 1, 1, J)
        if causal:
            before = positions[:, None, None, :] <= query_pos[None, :, :, None]
            global_valid = ops.logical_and(global_valid, before)  # (B|1, R, C, J)
        if mask is not None:
            j = ops.shape(positions)[1]
            index = ops.broadcast_to(positions[:, None, :], (b_dyn, num_blocks * c, j))
            picked = ops.take_along_axis(mask, index, axis=2)  # (B, R * C, J)
            picked = ops.reshape(picked, (b_dyn, num_blocks, c, j))  # (B, R, C, J)
            global_valid = ops.logical_and(global_valid, picked)
        global_logits = ops.einsum("brqkgh,bjkh->bkgrqj", q, key_global)  # (B, K, G, R, C, J)
        logits = ops.concatenate([logits, ops.cast(global_logits, "float32")], axis=-1)
        j = ops.shape(positions)[1]
        valid = ops.concatenate(
            [
                ops.broadcast_to(valid, (b_dyn, num_blocks, c, span)),
                ops.broadcast_to(global_valid, (b_dyn, num_blocks, c, j)),
            ],
            axis=-1,
        )  # (B, R, C, L + J)

    # One softmax over the band and global logits; rows with no allowed key give zeros.
    allowed = valid[:, None, None]  # (B|1, 1, 1, R, C, L + J)
    if soft_mask is not None:
        factors = ops.cast(soft_mask(distance), "float32")
        factors = ops.broadcast_to(factors, (n, num_blocks, c, span))
        factors = ops.reshape(factors, (k, g, num_blocks, c, span))  # (K, G, R, C, L)
        # m * exp(s) = exp(s + log m); keys with m = 0 are left out instead.
        logits = logits + ops.log(ops.maximum(factors, 1e-30))
        allowed = ops.logical_and(allowed, (factors > 0.0)[None])  # (B|1, K, G, R, C, L)
    weights = masked_softmax(logits, allowed)  # (B, K, G, R, C, L + J)
    if dropout:
        weights = keras.random.dropout(weights, dropout, seed=seed)
    weights = ops.cast(weights, value.dtype)
    out = ops.einsum("bkgrql,brlkv->brqkgv", weights[..., :span], value_blocks)
    if global_keys is not None:
        out = out + ops.einsum("bkgrqj,bjkv->brqkgv", weights[..., span:], value_global)
    out = ops.reshape(out, (b_dyn, num_blocks * c, n, v_dim))[:, :t_dyn]  # (B, T, N, V)
    rows = ops.any(valid, axis=-1)  # (B|1, R, C)
    rows = ops.reshape(rows, (ops.shape(rows)[0], num_blocks * c))[:, :t_dyn]  # (B|1, T)
    return ops.cast(out, query.dtype), rows
