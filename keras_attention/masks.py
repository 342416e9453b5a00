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


def transpose_mask(mask, axes):
    """`ops.transpose` of a boolean mask, done on float32 values.

    TensorFlow's oneDNN CPU kernels log an error ("oneDNN supports DT_BOOL only
    ...") the first time they transpose a boolean tensor (also int8, int32 or
    float16 ones), then fall back. The values come from `where`, not a cast: graph
    optimisation would move the cast after the transpose.
    """
    return ops.transpose(ops.where(mask, 1.0, 0.0), axes) > 0.5


# --- patterns of the local and global layers ---


def local_attention_mask(length, window_size, causal=False):
    """Pattern `(T, T)` of `LocalAttention`: `|i - j| <= window_size`, or
    `0 <= i - j <= window_size` when causal (`sliding_window_mask` of a
    self-attention).
    """
    check_positive_int("length", length)
    return sliding_window_mask(length, window_size, causal=causal)


def global_local_mask(length, window_size, global_tokens, causal=False):
    """Pattern of `GlobalLocalAttention` (Longformer): band OR global row OR global column.

    Query i attends key j when `|i - j| <= window_size`, or when i or j is a
    global token; with `causal=True` the band is causal and every pair also
    needs `j <= i`.

    Args:
        length: sequence length T.
        window_size: the band's half width W.
        global_tokens: an int, the number of leading global tokens, or a boolean
            `(T,)` / `(B, T)` mask, True on global tokens.
        causal: causal band and `j <= i` everywhere.

    Returns:
        A boolean `(T, T)` tensor, or `(B, T, T)` for a `(B, T)` global mask.
    """
    check_positive_int("length", length)
    shape = getattr(global_tokens, "shape", None)
    if isinstance(global_tokens, (list, tuple)) or (shape is not None and len(shape) > 0):
        is_global = ops.cast(ops.convert_to_tensor(global_tokens), "bool")
        shape = tuple(is_global.shape)
        if len(shape) not in (1, 2) or shape[-1] not in (None, length):
            raise ValueError(
                "`global_tokens` must be an int or a boolean mask of shape (length,) or "
                f"(batch, length) with length={length}. Received: shape={shape}"
            )
    else:
        count = check_positive_int("global_tokens", global_tokens, allow_zero=True)
        is_global = ops.arange(length) < count  # (T,)
    band = sliding_window_mask(length, window_size, causal=causal)  # (T, T)
    pattern = ops.logical_or(band, ops.logical_or(is_global[..., :, None],
                                                  is_global[..., None, :]))
    if causal:
        pattern = ops.logical_and(pattern, causal_mask(length))
    return pattern  # (T, T) or (B, T, T)


# --- patterns of the sparse layers ---


def _sparse_positions(length):
    """Query positions `(T, 1)` and key positions `(1, T)` of a self-attention."""
    if not ops.is_tensor(length):
        check_positive_int("length", length)
    positions = ops.arange(length, dtype="int32")
    return positions[:, None], positions[None, :]


def strided_sparse_mask(length, block_size, causal=True):
    """Strided pattern of `SparseAttention` (Child et al. 2019), `(T, T)`.

    With stride `l = block_size`, query i attends key j when
    `0 <= i - j < l` (the previous `l` positions) or when `i - j` is a non-negative
    multiple of `l` (every `l`-th position before it). Without `causal`, the
    symmetric pattern: `|i - j| < l` or `(i - j) mod l == 0` (either direction).

    Args:
        length: sequence length T (an int, or a scalar tensor).
        block_size: the stride l.
        causal: keep only keys `j <= i`.

    Returns:
        A boolean `(T, T)` tensor, True where attention is allowed.
    """
    check_positive_int("block_size", block_size)
    q, k = _sparse_positions(length)
    distance = q - k  # (T, T)
    same_residue = ops.equal(ops.mod(q, block_size), ops.mod(k, block_size))  # (T, T)
    if causal:
        local = ops.logical_and(distance >= 0, distance < block_size)
        return ops.logical_or(local, ops.logical_and(same_residue, distance >= 0))
    return ops.logical_or(ops.abs(distance) < block_size, same_residue)


def fixed_sparse_mask(length, block_size, num_summary=1, causal=True):
    """Fixed pattern of `SparseAttention` (Child et al. 2019), `(T, T)`.

    With block length `l = block_size` and `c = num_summary`, query i attends key j
    when both are in the same block (`j // l == i // l`) or when j is a summary
    position, one of the last `c` of its block (`j mod l >= l - c`). With `causal`,
    only keys `j <= i`; without it, every summary position of the sequence.

    Args:
        length: sequence length T (an int, or a scalar tensor).
        block_size: the block length l.
        num_summary: summary positions per block c, `1 <= c <= l`.
        causal: keep only keys `j <= i`.

    Returns:
        A boolean `(T, T)` tensor, True where attention is allowed.
    """
    check_positive_int("block_size", block_size)
    check_positive_int("num_summary", num_summary)
    if num_summary > block_size:
        raise ValueError(
            "`num_summary` must be at most `block_size` (it counts positions of a "
            f"block). Received: num_summary={num_summary}, block_size={block_size}"
        )
    q, k = _sparse_positions(length)
    same_block = ops.equal(ops.floor_divide(q, block_size), ops.floor_divide(k, block_size))
    summary = ops.mod(k, block_size) >= block_size - num_summary  # (1, T)
    allowed = ops.logical_or(same_block, summary)  # (T, T)
    if causal:
        allowed = ops.logical_and(allowed, k <= q)
    return allowed


def check_block_sparse_arguments(num_window_blocks, num_global_blocks, num_random_blocks,
                                 seed):
    """Check the block counts and seed of `BlockSparseAttention` and its pattern."""
    check_positive_int("num_window_blocks", num_window_blocks)
    if num_window_blocks % 2 == 0:
        raise ValueError(
            "`num_window_blocks` must be odd: the window is centred on the query's "
            f"block. Received: num_window_blocks={num_window_blocks}"
        )
    check_positive_int("num_global_blocks", num_global_blocks, allow_zero=True)
    check_positive_int("num_random_blocks", num_random_blocks, allow_zero=True)
    check_positive_int("seed", seed, allow_zero=True)


def block_sparse_random_blocks(num_blocks, num_window_blocks, num_global_blocks,
                               num_random_blocks, seed, causal=False):
    """The random key blocks of each query block in `BlockSparseAttention`.

    Query block r (not global, `r >= num_global_blocks`) draws `num_random_blocks`
    distinct key blocks, without replacement, among the blocks that are neither
    global nor in its window (`|b - r| > num_window_blocks // 2`), and with
    `causal` only among earlier blocks (`b < r`). The draw uses
    `numpy.random.default_rng(seed)`, rows in order, so it depends only on the
    arguments. When fewer candidates exist, the row is filled with -1.

    Returns:
        A NumPy int32 array `(num_blocks, num_random_blocks)` of block indices,
        each row sorted, -1 where there is no block (always on global rows).
    """
    import numpy as np

    check_positive_int("num_blocks", num_blocks)
    check_block_sparse_arguments(num_window_blocks, num_global_blocks,
                                  num_random_blocks, seed)
    rng = np.random.default_rng(seed)
    half = num_window_blocks // 2
    table = np.full((num_blocks, num_random_blocks), -1, dtype="int32")
    blocks = np.arange(num_global_blocks, num_blocks)  # the non-global key blocks
    for row in range(num_global_blocks, num_blocks):
        keep = np.abs(blocks - row) > half
        if causal:
            keep &= blocks < row
        candidates = blocks[keep]
        count = min(num_random_blocks, len(candidates))
        if count:
            table[row, :count] = np.sort(rng.choice(candidates, size=count, replace=False))
    return table


def block_sparse_mask(length, block_size, num_window_blocks, num_global_blocks,
                      num_random_blocks, seed, causal=False):
    """Pattern of `BlockSparseAttention` (BigBird, Zaheer et al. 2020), `(T, T)`.

    Positions are grouped in blocks of `block_size` (the last one may be short).
    Query block r attends the key blocks of its centred window
    (`|b - r| <= num_window_blocks // 2`), the first `num_global_blocks` blocks,
    and its random blocks from `block_sparse_random_blocks`; the global query
    blocks attend every key. With `causal`, only keys `j <= i` (the random blocks
    are then drawn among earlier blocks).

    Args:
        length: sequence length T (an int).
        block_size: positions per block.
        num_window_blocks: odd number of neighbouring blocks in the window.
        num_global_blocks: number of leading global blocks.
        num_random_blocks: random key blocks per query block.
        seed: seed of the random blocks.
        causal: keep only keys `j <= i`.

    Returns:
        A boolean `(T, T)` tensor, True where attention is allowed.
    """
    import numpy as np

    check_positive_int("length", length)
    check_positive_int("block_size", block_size)
    num_blocks = -(-length // block_size)
    table = block_sparse_random_blocks(num_blocks, num_window_blocks, num_global_blocks,
                                       num_random_blocks, seed, causal)
    rows = np.arange(num_blocks)
    blocks = np.abs(rows[:, None] - rows[None, :]) <= num_window_blocks // 2  # (R, R)
    blocks[:num_global_blocks] = True
    blocks[:, :num_global_blocks] = True
    row_index, col = np.nonzero(table >= 0)
    blocks[row_index, table[row_index, col]] = True
    allowed = np.repeat(np.repeat(blocks, block_size, 0), block_size, 1)[:length, :length]
    if causal:
        allowed &= np.tri(length, dtype=bool)
    return ops.convert_to_tensor(allowed)
