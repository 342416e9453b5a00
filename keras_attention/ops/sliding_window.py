"""Exact sliding-window (band) attention computed block by block.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads (N % K == 0, G = N // K), H key head dim, V value head dim, W window size,
C block size, R number of query blocks (T padded to R * C), L keys per block
(C + 2W, or C + W when causal).
"""

import math

from keras import ops

from keras_attention.ops.attention import MASK_VALUE, check_qkv, empty_attention
from keras_attention.utils.validation import check_positive_int

# Default smallest block: tiny blocks make many tiny matrix products.
_MIN_DEFAULT_BLOCK = 16


def sliding_window_attention(
    query,
    key,
    value,
    *,
    window_size,
    causal=False,
    mask=None,
    scale=None,
    block_size=None,
):
    """Band attention: query i attends keys j with `|i - j| <= window_size`.

    With `causal=True` query i attends keys j with `0 <= i - j <= window_size`. This
    is the local attention of Longformer (Beltagy et al. 2020) and Mistral's sliding
    window, computed exactly: the queries are split into blocks of `block_size`, and
    each block attends only the `block_size + 2 * window_size` keys around it
    (`block_size + window_size` before it when causal), gathered once, with the band
    mask applied inside the block. Time and memory are O(T * (block_size +
    window_size)) instead of O(T * S); the result equals
    `scaled_dot_product_attention` with `masks.sliding_window_mask`. When T != S,
    query i sits at key position `i + (S - T)` (bottom-right, as in `causal_mask`).

    Args:
        query: `(B, T, N, H)`.
        key: `(B, S, K, H)` with `N % K == 0`.
        value: `(B, S, K, V)`.
        window_size: non-negative int W, the largest allowed distance `|i - j|`.
        causal: if True, only keys at or before the query (at most W back).
        mask: optional key padding mask, `(B, S)` or `(B, 1, 1, S)` (or broadcastable
            to it), True on real keys.
        scale: logit scale, default `1 / sqrt(H)`.
        block_size: queries per block; default `max(window_size, 16)` capped at T.

    Returns:
        `(B, T, N, V)` in the query's dtype (softmax in float32). A query row with
        no allowed key gives zeros, never NaN.

    Example:

    >>> x = keras.random.normal((2, 4096, 4, 32))
    >>> sliding_window_attention(x, x, x, window_size=128, causal=True).shape
    (2, 4096, 4, 32)
    """
    query = ops.convert_to_tensor(query)
    key = ops.convert_to_tensor(key)
    value = ops.convert_to_tensor(value)
    b, t, s, n, k, h, v_dim = check_qkv(query, key, value)
    window_size = check_positive_int("window_size", window_size, allow_zero=True)
    block_size = check_positive_int("block_size", block_size, allow_none=True)
    scale = 1.0 / math.sqrt(h) if scale is None else float(scale)
    b_dyn, t_dyn, s_dyn = ops.shape(query)[0], ops.shape(query)[1], ops.shape(key)[1]
    key_mask = None if mask is None else key_padding_mask(mask, b, s, s_dyn)
    empty = empty_attention(query, key, value)
    if empty is not None:  # no batch, query or key: no block to gather
        return empty
    if block_size is None:
        block_size = max(window_size, _MIN_DEFAULT_BLOCK)
    if isinstance(t, int):
        block_size = max(1, min(block_size, t))
    c, w, g = block_size, window_size, n // k
    num_blocks = (t_dyn + c - 1) // c  # R
    span = c + w if causal else c + 2 * w  # L
    offset = s_dyn - t_dyn  # query i sits at key position i + offset

    # Key positions of each block's window, (R, L); out-of-range ones are masked.
    block_start = ops.arange(num_blocks, dtype="int32") * c + offset - w  # (R,)
    key_pos = block_start[:, None] + ops.arange(span, dtype="int32")[None, :]  # (R, L)
    in_range = ops.logical_and(key_pos >= 0, key_pos < s_dyn)  # (R, L)
    gather_pos = ops.clip(key_pos, 0, s_dyn - 1)
    # Heads first, so that (B, K, R) are the leading batch axes of both products and
    # XLA multiplies contiguous blocks without transposing the large operands.
    key_blocks = ops.take(ops.transpose(key, (0, 2, 1, 3)), gather_pos, axis=2)  # (B, K, R, L, H)
    value_blocks = ops.take(ops.transpose(value, (0, 2, 1, 3)), gather_pos,
                            axis=2)  # (B, K, R, L, V)

    query_pos = ops.arange(num_blocks * c, dtype="int32") + offset  # (R * C,)
    query_pos = ops.reshape(query_pos, (num_blocks, c))  # (R, C)
    distance = query_pos[:, :, None] - key_pos[:, None, :]  # (R, C, L)
    if causal:
        band = ops.logical_and(distance >= 0, distance <= w)
    else:
        band = ops.abs(distance) <= w
    valid = ops.logical_and(band, in_range[:, None, :])[None]  # (1, R, C, L)
    if key_mask is not None:
        mask_blocks = ops.take(key_mask, gather_pos, axis=1)  # (B|1, R, L)
        valid = ops.logical_and(valid, mask_blocks[:, :, None, :])  # (B, R, C, L)
    bias = ops.where(valid, 0.0, MASK_VALUE)[:, None, :, None]  # (B|1, 1, R, 1, C, L)

    q = ops.pad(query * ops.cast(scale, query.dtype),
                [[0, 0], [0, num_blocks * c - t_dyn], [0, 0], [0, 0]])  # (B, R*C, N, H)
    q = ops.reshape(q, (b_dyn, num_blocks, c, k, g, h))
    q = ops.transpose(q, (0, 3, 1, 4, 2, 5))  # (B, K, R, G, C, H)
    q = ops.reshape(q, (b_dyn, k, num_blocks, g * c, h))
    logits = ops.einsum("bkrqh,bkrlh->bkrql", q, key_blocks)  # (B, K, R, G*C, L)
    logits = ops.reshape(ops.cast(logits, "float32"),
                         (b_dyn, k, num_blocks, g, c, span)) + bias  # (B, K, R, G, C, L)
    # Softmax by hand (TensorFlow's kernel takes rank <= 5), normalised after the
    # value product: the division touches (C, V) per block instead of (C, L).
    logits = logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    weights = ops.exp(logits)  # masked keys underflow to exactly 0
    total = ops.sum(weights, axis=-1)  # (B, K, R, G, C)
    weights = ops.reshape(ops.cast(weights, value.dtype), (b_dyn, k, num_blocks, g * c, span))
    out = ops.einsum("bkrql,bkrlv->bkrqv", weights, value_blocks)  # (B, K, R, G*C, V)
    out = ops.reshape(out, (b_dyn, k, num_blocks, g, c, v_dim))
    # A row with no allowed key (its weights are all exp(0)) gives zeros.
    has_key = ops.any(valid, axis=-1)[:, None, :, None]  # (B|1, 1, R, 1, C)
    inverse = ops.where(has_key, 1.0 / total, 0.0)
    out = out * ops.cast(inverse[..., None], out.dtype)
    out = ops.transpose(out, (0, 2, 4, 1, 3, 5))  # (B, R, C, K, G, V)
    out = ops.reshape(out, (b_dyn, num_blocks * c, n, v_dim))[:, :t_dyn]  # (B, T, N, V)
    return ops.cast(out, query.dtype)


def key_padding_mask(mask, batch, key_length, key_length_dyn):
    """`(B, S)`, or anything broadcastable to `(B, 1, 1, S)` -> boolean `(B|1, S)`.

    `batch` and `key_length` are the static sizes (or None) used in the checks,
    `key_length_dyn` the size the result is broadcast to.
    """
    mask = ops.convert_to_tensor(mask)
    shape = tuple(mask.shape)
    if len(shape) == 2:
        mask = mask[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
    elif len(shape) in (1, 3):
        mask = ops.reshape(mask, (1,) * (4 - len(shape)) + shape)
    full = tuple(mask.shape)
    ok = len(full) == 4 and full[1] in (1, None) and full[2] in (1, None)
    if ok:
        for got, want in ((full[0], batch), (full[3], key_length)):
            ok = ok and (got in (1, None) or want is None or got == want)
    if not ok:
        raise ValueError(
            "`mask` must be a key padding mask of shape (batch, key_len) or "
            f"broadcastable to (batch, 1, 1, key_len) = ({batch}, 1, 1, {key_length}). "
            f"Received: shape={shape}"
        )
    mask = ops.cast(mask[:, 0, 0, :], "bool")  # (B|1, S|1)
    return ops.broadcast_to(mask, (ops.shape(mask)[0], key_length_dyn))
