"""Scaled dot-product attention on per-head tensors.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads (N % K == 0, G = N // K query heads per key/value head), H key head dim,
V value head dim.
"""

import math

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.ops.masked_softmax import masked_softmax
from keras_attention.utils.validation import (
    check_floating,
    check_not_text,
    check_rank,
    check_rate,
)

def convert_qkv(query, key, value):
    """The three inputs as tensors; arrays of text or objects raise a `TypeError`
    naming the argument instead of a backend's conversion error."""
    converted = []
    for name, x in (("query", query), ("key", key), ("value", value)):
        check_not_text(name, x)
        converted.append(ops.convert_to_tensor(x))
    return converted


def check_qkv(query, key, value):
    """Validate per-head query/key/value shapes; return (B, T, S, N, K, H, V)."""
    check_rank("query", query.shape, 4, "(batch, seq, heads, head_dim)")
    check_rank("key", key.shape, 4, "(batch, seq, heads, head_dim)")
    check_rank("value", value.shape, 4, "(batch, seq, heads, head_dim)")
    for name, x in (("query", query), ("key", key), ("value", value)):
        check_floating(name, x)
    b, t, n, h = query.shape
    _, s, k, hk = key.shape
    if hk is not None and h is not None and hk != h:
        raise ValueError(
            "`key` must have the same head_dim as `query`. "
            f"Received: query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
        )
    for axis, what in ((0, "batch size"), (1, "sequence length"), (2, "number of heads")):
        a, c = key.shape[axis], value.shape[axis]
        if a is not None and c is not None and a != c:
            raise ValueError(
                f"`value` must have the same {what} as `key`. "
                f"Received: key.shape={tuple(key.shape)}, value.shape={tuple(value.shape)}"
            )
    if b is not None and key.shape[0] is not None and b != key.shape[0]:
        raise ValueError(
            "`key` must have the same batch size as `query`. "
            f"Received: query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
        )
    if n is not None and k is not None and n % k != 0:
        raise ValueError(
            "The number of query heads must be a multiple of the number of key/value "
            f"heads. Received: query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
        )
    return b, t, s, n, k, h, value.shape[-1]


def check_broadcastable(name, x, target):
    """Raise unless `x` (rank <= 4) broadcasts to the static shape `target`."""
    shape = tuple(x.shape)
    if len(shape) > 4:
        raise ValueError(
            f"`{name}` must be broadcastable to (batch, heads, query_len, key_len) = "
            f"{target}. Received: shape={shape}"
        )
    padded = (1,) * (4 - len(shape)) + shape
    for got, want in zip(padded, target):
        if got is not None and want is not None and got not in (1, want):
            raise ValueError(
                f"`{name}` must be broadcastable to (batch, heads, query_len, key_len) = "
                f"{target}. Received: shape={shape}"
            )


def empty_attention(query, key, value):
    """Zeros `(B, T, N, V)` when a static batch, query or key size is 0, else None.

    A query with no key attends nothing, so its output is zeros; with no queries
    or no batch the output is empty. Block-wise computations cannot slice or
    reduce empty axes, so they return this instead.
    """
    b, t, n = query.shape[0], query.shape[1], query.shape[2]
    if 0 not in (b, t, key.shape[0], key.shape[1]):
        return None
    shape = (ops.shape(query)[0], ops.shape(query)[1], n, value.shape[-1])
    return ops.zeros(shape, dtype=query.dtype)


def empty_result(query, key, value, return_weights):
    """`(zeros (B, T, N, V), zero weights (B, N, T, S) or None)` when a static batch,
    query or key size is 0 (block-wise code cannot cut empty axes), else None."""
    output = empty_attention(query, key, value)
    if output is None:
        return None
    weights = None
    if return_weights:
        shape = (ops.shape(query)[0], query.shape[2], ops.shape(query)[1],
                 ops.shape(key)[1])
        weights = ops.zeros(shape, dtype="float32")
    return output, weights


def zero_rows(output, rows):
    """Zero the rows of `output (B, T, ...)` where `rows (B|1, T)` is False (None:
    keep all)."""
    if rows is None:
        return output
    rows = rows[:, :, None]
    while len(rows.shape) < len(output.shape):
        rows = rows[..., None]
    return output * ops.cast(rows, output.dtype)


def batched_take(x, indices, batch_dims):
    """`x[p][indices[p]]` along axis `batch_dims`, for every index `p` of the leading
    `batch_dims` axes (shared by `x` and `indices`): `x (*P, L, *D)` and
    `indices (*P, *I)` give `(*P, *I, *D)`.

    One gather from the flattened rows. (`ops.take_along_axis` on TensorFlow moves
    the axis last with transposes of the data and the indices, and TensorFlow's
    oneDNN CPU kernels log an error the first time they transpose booleans or
    integers.)
    """
    shape = ops.shape(x)
    count = 1
    for size in shape[:batch_dims]:
        count = count * size
    length = shape[batch_dims]
    offsets = ops.arange(count, dtype=indices.dtype) * ops.cast(length, indices.dtype)
    offsets = ops.reshape(
        offsets, tuple(shape[:batch_dims]) + (1,) * (len(indices.shape) - batch_dims)
    )
    rows = ops.reshape(x, (-1,) + tuple(shape[batch_dims + 1:]))  # (P * L, *D)
    return ops.take(rows, indices + offsets, axis=0)


def with_gradient(forward, backward, *inputs):
    """`forward(*inputs)` with a hand-written gradient.

    `forward` returns `(output, residuals)`; `backward(upstream, residuals)`
    returns the gradients of all `inputs`, in order. Only what `forward` keeps in
    `residuals` stays alive for the backward pass, which is how the block-wise
    ops keep their memory linear in the sequence length.
    """

    @ops.custom_gradient
    def call(*args):
        output, residuals = forward(*args)

        def grad(*upstream_args, upstream=None):
            upstream = upstream_args[0] if upstream is None else upstream
            return backward(upstream, residuals)

        return output, grad

    return call(*inputs)


def prepare_mask(mask, causal, query_length, key_length, target):
    """Combine a user mask with the causal mask into one boolean rank-4 mask or None."""
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        check_broadcastable("mask", mask, target)
        mask = ops.cast(mask, "bool")
        while len(mask.shape) < 4:
            mask = ops.expand_dims(mask, 0)
    if causal:
        c = masks_lib.causal_mask(query_length, key_length)[None, None]
        mask = masks_lib.merge_masks(mask, c)
    return mask


def repeat_kv_heads(x, groups):
    """(B, S, K, H) -> (B, S, K * groups, H), each key/value head repeated in place."""
    if groups == 1:
        return x
    return ops.repeat(x, groups, axis=2)


def scaled_dot_product_attention(
    query,
    key,
    value,
    *,
    mask=None,
    bias=None,
    causal=False,
    scale=None,
    dropout_rate=0.0,
    training=False,
    seed=None,
    return_weights=False,
):
    """Scaled dot-product attention, `softmax(q k^T * scale + bias) v`.

    Args:
        query: `(B, T, N, H)`.
        key: `(B, S, K, H)` with `N % K == 0`; `K < N` is grouped-query attention.
        value: `(B, S, K, V)`.
        mask: optional boolean mask broadcastable to `(B, N, T, S)`, True where
            attention is allowed.
        bias: optional additive logits bias broadcastable to `(B, N, T, S)`.
        causal: if True, query i attends keys `j <= i + (S - T)` (bottom-right).
        scale: logit scale, default `1 / sqrt(H)`.
        dropout_rate: dropout on the attention weights when `training` is True.
        training: whether dropout is applied.
        seed: int or `keras.random.SeedGenerator` for the dropout.
        return_weights: also return the `(B, N, T, S)` weights.

    Returns:
        `(B, T, N, V)` output in the query's dtype, or `(output, weights)`. A query
        row with no allowed key gives zeros (output and weights), never NaN.
    """
    query, key, value = convert_qkv(query, key, value)
    dropout_rate = check_rate("dropout_rate", dropout_rate)
    b, t, s, n, k, h, _ = check_qkv(query, key, value)
    target = (b, n, t, s)
    if bias is not None:
        bias = ops.convert_to_tensor(bias)
        check_broadcastable("bias", bias, target)
    scale = 1.0 / math.sqrt(h) if scale is None else float(scale)
    t_dyn, s_dyn = ops.shape(query)[1], ops.shape(key)[1]
    use_dropout = dropout_rate > 0.0 and bool(training)

    if mask is not None:
        check_broadcastable("mask", ops.convert_to_tensor(mask), target)
    empty = empty_result(query, key, value, return_weights)
    if empty is not None:  # TensorFlow's einsum rejects some zero-size operands
        return empty if return_weights else empty[0]
    # keras.ops.dot_product_attention needs equal key and value head dims (JAX).
    if not return_weights and not use_dropout and value.shape[-1] == h:
        return _fast_attention(query, key, value, mask, bias, causal, scale, n // k,
                               t_dyn, s_dyn, target)
    mask = prepare_mask(mask, causal, t_dyn, s_dyn, target)
    output, weights = _einsum_attention(
        query, key, value, mask, bias, scale, dropout_rate if use_dropout else 0.0, seed
    )
    return (output, weights) if return_weights else output


def _fast_attention(query, key, value, mask, bias, causal, scale, groups, t, s, target):
    """`keras.ops.dot_product_attention`, with zeros for fully masked query rows."""
    native_causal = causal and mask is None and query.shape[1] == key.shape[1] \
        and query.shape[1] is not None
    mask = None if native_causal else prepare_mask(mask, causal, t, s, target)
    key = repeat_kv_heads(key, groups)
    value = repeat_kv_heads(value, groups)
    if bias is not None:
        bias = ops.cast(bias, "float32")
    # Scale the queries before the logits matmul (as the einsum path does): in
    # float16 the unscaled products can overflow where the scaled logits do not.
    output = ops.dot_product_attention(
        query * ops.cast(scale, query.dtype), key, value, bias=bias, mask=mask, scale=1.0,
        is_causal=native_causal,
    )
    if mask is not None:
        row_valid = ops.any(mask, axis=-1)  # (B|1, N|1, T)
        row_valid = masks_lib.transpose_mask(row_valid, (0, 2, 1))  # (B|1, T, N|1)
        output = output * ops.cast(row_valid[..., None], output.dtype)
    return ops.cast(output, query.dtype)


def _einsum_attention(query, key, value, mask, bias, scale, dropout_rate, seed):
    """Explicit einsum path: returns output (B, T, N, V) and weights (B, N, T, S)."""
    b, t, n, h = ops.shape(query)
    s = ops.shape(key)[1]  # explicit sizes, not -1: T or S may be 0
    k = key.shape[2]
    g = query.shape[2] // k
    q = ops.reshape(query * ops.cast(scale, query.dtype), (b, t, k, g, h))
    logits = ops.einsum("btkgh,bskh->bkgts", q, key)  # (B, K, G, T, S)
    logits = ops.reshape(ops.cast(logits, "float32"), (b, n, t, s))  # (B, N, T, S)
    if bias is not None:
        logits = logits + ops.cast(bias, "float32")
    weights = masked_softmax(logits, mask)  # fully masked rows -> zeros
    if dropout_rate > 0.0:
        weights = keras.random.dropout(weights, dropout_rate, seed=seed)
    probs = ops.reshape(ops.cast(weights, value.dtype), (b, k, g, t, s))
    output = ops.einsum("bkgts,bskv->btkgv", probs, value)  # (B, T, K, G, V)
    output = ops.reshape(output, (b, t, n, value.shape[-1]))
    return ops.cast(output, query.dtype), weights
