"""Helpers of the block-wise sparse self-attention kernels (`SparseAttention`,
`BlockSparseAttention`): padding to whole blocks, the validity of gathered
(query, key) pairs and one softmax over the parts of a sparse pattern.

Shape legend: B batch, T sequence length (queries and keys are the same positions),
Tp = R * C the length padded to whole blocks, K key/value heads, G query heads per
key/value head, C block size, R number of blocks, L_i keys of part i of the pattern
seen by a query.
"""

import keras
import numpy as np
from keras import ops

from keras_attention.ops.masked_softmax import masked_softmax


def check_same_length(layer_name, query_shape, value_shape):
    """Raise unless the (static) query and value lengths agree: self-attention."""
    t, s = query_shape[1], value_shape[1]
    if t is not None and s is not None and t != s:
        raise ValueError(
            f"{layer_name} is self-attention over one sequence: `value` must have the "
            f"query's sequence length. Received: query.shape={tuple(query_shape)}, "
            f"value.shape={tuple(value_shape)}"
        )


def seq_length(x):
    """Static length `x.shape[1]`, or a scalar tensor when it is unknown."""
    return x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]


def pad_sequence(x, padded_length, length):
    """Pad axis 1 of `x` with zeros from `length` to `padded_length`."""
    if isinstance(padded_length, int) and isinstance(length, int) and padded_length == length:
        return x
    widths = [[0, 0] for _ in x.shape]
    widths[1] = [0, padded_length - length]
    return ops.pad(x, widths)


def positions_module(length):
    """NumPy for a static length (position arithmetic folds into constants, with no
    op dispatch), `keras.ops` for a symbolic one; both spell these functions alike."""
    return np if isinstance(length, int) else ops


def block_key_masks(mask, length, padded_length):
    """A merged attention mask -> `(key_valid (B|1, Tp) int32, pairs or None)`.

    `mask` is None, a key padding mask `(B, 1, 1, T)` or a full `(B, 1, T, T)` mask.
    `key_valid` is 1 on real, unmasked key positions (0 on the block padding), a
    NumPy array when there is no mask and the length is static; `pairs` is the full
    mask flattened to `(B, T * T)` int32, for `gather_valid`.
    """
    xp = positions_module(length)
    positions = xp.arange(padded_length, dtype="int32")
    key_valid = (positions < length)[None, :]  # (1, Tp)
    key_valid = key_valid.astype("int32") if xp is np else ops.cast(key_valid, "int32")
    if mask is None:
        return key_valid, None
    mask = ops.cast(mask, "int32")
    if mask.shape[2] == 1:
        keys = pad_sequence(mask[:, 0, 0, :], padded_length, length)  # (B, Tp)
        return ops.multiply(key_valid, keys), None
    pairs = ops.reshape(mask[:, 0], (ops.shape(mask)[0], -1))  # (B, T * T)
    return key_valid, pairs


def gather_valid(key_valid, pairs, length, padded_length, query_pos, key_pos):
    """Boolean `(B|1, ...)`: the (query, key) position pairs that may attend.

    `query_pos` and `key_pos` are int32 arrays (NumPy for a static length) that
    broadcast together; a key is valid when it lies in `[0, T)`, is not masked, and
    (with `pairs`) the full mask allows the pair. Only the gathered entries are
    formed, never a `(T, T)` tensor.
    """
    xp = np if isinstance(key_pos, np.ndarray) else ops
    in_range = xp.logical_and(key_pos >= 0, key_pos < padded_length)
    safe_key = xp.clip(key_pos, 0, padded_length - 1)
    take = np.take if xp is np and isinstance(key_valid, np.ndarray) else ops.take
    valid = logical_and(in_range, take(key_valid, safe_key, axis=1) > 0)
    if pairs is not None:
        last = length - 1
        index = xp.clip(query_pos, 0, last) * length + xp.clip(key_pos, 0, last)
        valid = ops.logical_and(valid, ops.take(pairs, index, axis=1) > 0)
    return valid


def logical_and(a, b):
    """`a & b`, in NumPy when both are NumPy arrays."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.logical_and(a, b)
    return ops.logical_and(a, b)


def attend_parts(parts, value_dtype, dropout=0.0, seed=None):
    """Attention over the parts of a sparse pattern, with one softmax for all.

    Each part is `(logits, valid, combine)`: float32 `logits (B, K, G, ..., L_i)`,
    a boolean `valid (B|1, ..., L_i)` of its trailing axes and `combine(p)`, which
    maps the part's probabilities (in `value_dtype`) to its share of the output.
    The parts share one softmax per row, as if concatenated; rows with no valid
    entry give zeros. Returns the sum of the shares, with dropout (rate `dropout`,
    0 for none; `seed` a `keras.random.SeedGenerator`) on the probabilities.
    """
    probs = masked_softmax([logits for logits, _, _ in parts],
                           [valid[:, None, None] for _, valid, _ in parts])
    output = None
    for (_, _, combine), p in zip(parts, probs):
        if dropout > 0.0:
            p = keras.random.dropout(p, dropout, seed=seed)
        out = combine(ops.cast(p, value_dtype))
        output = out if output is None else output + out
    return output


def parts_rows(valids, batch, length, num_blocks, block_size):
    """`(B, T)`: True where a query has an allowed key in one of the parts' `valids`,
    boolean `(B|1, R, C|1, L_i)`."""
    rows = None
    for valid in valids:
        part = ops.any(valid, axis=-1)  # (B|1, R, C|1)
        rows = part if rows is None else ops.logical_or(rows, part)
    rows = ops.broadcast_to(rows, (batch, num_blocks, block_size))  # (B, R, C)
    return ops.reshape(rows, (batch, num_blocks * block_size))[:, :length]


def dense_rows(mask):
    """`(B|1, T)` rows with an allowed key in a merged `(B|1, 1, T, S)` mask."""
    return ops.any(mask[:, 0], axis=-1)


