"""Boolean attention masks: True where attention is allowed.

Shapes: B batch, T query length, S key length. Every function returns a boolean
tensor; masks combine with `merge_masks` by logical AND, the rule used by
`keras.layers.MultiHeadAttention`.
"""

from keras import ops

from keras_attention.utils.validation import check_positive_int


def padding_mask(lengths_or_tokens, max_length=None, pad_value=0):
    """Padding mask `(B, S)` from lengths `(B,)` or token ids `(B, S)`.

    Args:
        lengths_or_tokens: either a rank-1 tensor of sequence lengths, or a rank-2
            tensor of token ids in which `pad_value` marks padding.
        max_length: length `S` of the mask when lengths are given. Defaults to the
            largest length.
        pad_value: the padding id when token ids are given.

    Returns:
        A boolean `(B, S)` tensor, True on real tokens.
    """
    x = ops.convert_to_tensor(lengths_or_tokens)
    if len(x.shape) == 2:
        return ops.not_equal(x, pad_value)
    if len(x.shape) != 1:
        raise ValueError(
            "`lengths_or_tokens` must have rank 1 (lengths) or 2 (token ids). "
            f"Received: shape={tuple(x.shape)}"
        )
    if max_length is None:
        max_length = ops.max(x)
    else:
        check_positive_int("max_length", max_length)
    positions = ops.arange(max_length, dtype=x.dtype)
    return ops.less(positions[None, :], x[:, None])


def _positions(query_length, key_length, query_start):
    """Integer query positions `(T, 1)` and key positions `(1, S)`."""
    if query_start is None:
        query_start = key_length - query_length  # bottom-right alignment
    q = ops.arange(query_length, dtype="int32") + ops.cast(query_start, "int32")
    k = ops.arange(key_length, dtype="int32")
    return q[:, None], k[None, :]


def causal_mask(query_length, key_length=None, query_start=None):
    """Causal mask `(T, S)`: query i attends keys j <= i + (S - T).

    The mask is aligned bottom-right, as when decoding with a cache: the last query
    sees every key. `query_start` overrides the position of the first query.
    """
    key_length = query_length if key_length is None else key_length
    q, k = _positions(query_length, key_length, query_start)
    return ops.less_equal(k, q)


def sliding_window_mask(query_length, window_size, key_length=None, causal=False,
                        query_start=None):
    """Band mask `(T, S)`: `|i - j| <= window_size`, or `0 <= i - j <= window_size`.

    Positions are aligned bottom-right as in `causal_mask`.
    """
    check_positive_int("window_size", window_size, allow_zero=True)
    key_length = query_length if key_length is None else key_length
    q, k = _positions(query_length, key_length, query_start)
    distance = q - k  # (T, S)
    if causal:
        return ops.logical_and(distance >= 0, distance <= window_size)
    return ops.abs(distance) <= window_size


def merge_masks(*masks):
    """Logical AND of boolean masks that broadcast together; None entries are skipped.

    Returns None when every mask is None.
    """
    result = None
    for mask in masks:
        if mask is None:
            continue
        mask = ops.cast(mask, "bool")
        result = mask if result is None else ops.logical_and(result, mask)
    return result


# --- patterns of the local and global layers ---


# --- patterns of the sparse layers ---
