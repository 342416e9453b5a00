"""Helpers shared by the MultiHeadAttention variants that never form (T, S) logits.

Shape legend: B batch, T query length, O output features.
"""

from keras import ops

from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.ops.attention import empty_attention

# MultiHeadAttention arguments about its dense implementations, unused by variants.
UNUSED_ARGUMENTS = ("implementation", "query_chunk_size", "key_chunk_size",
                    "sliding_window", "flash_attention")


def reject_arguments(layer_name, kwargs, names):
    """Raise for `MultiHeadAttention` arguments that a variant has no use for."""
    for name in names:
        if name in kwargs:
            raise TypeError(
                f"{layer_name} does not take `{name}` (it does not apply to this "
                f"attention). Received: {name}={kwargs[name]!r}"
            )


def check_no_logits_bias(layer_name, encoding, received):
    """Raise unless `encoding` only transforms queries and keys (rotary)."""
    if encoding is None:
        return
    adds_bias = type(encoding).attention_bias is not AttentionPositionEncoding.attention_bias
    if adds_bias or encoding.requires_weights:
        raise ValueError(
            f"{layer_name} never forms the (T, S) attention logits, so it cannot use a "
            "position encoding that adds a logits bias (ALiBi, T5, Shaw); use "
            f"'rotary'. Received: position_encoding={received!r}"
        )


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


def checked_query_mask(layer, query, value, key, query_mask):
    """Check the inputs' ranks and `query_mask (B, T)`; return it as bool or None."""
    layer._check_input_shapes(query.shape, value.shape, None if key is None else key.shape)
    if query_mask is None:
        return None
    query_mask = ops.convert_to_tensor(query_mask)
    layer._check_mask("query_mask", query_mask, tuple(query.shape[:2]))
    return ops.cast(query_mask, "bool")


def apply_query_mask(output, query_mask):
    """Zero the output rows `(B, T, O)` of padded queries."""
    if query_mask is None:
        return output
    return output * ops.cast(query_mask[:, :, None], output.dtype)


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
