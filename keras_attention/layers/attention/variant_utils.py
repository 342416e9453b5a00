"""Helpers shared by the MultiHeadAttention variants that never form (T, S) logits.

Shape legend: B batch, T query length, O output features.
"""

from keras import ops

from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)

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


def checked_query_mask(layer, query, value, key, query_mask):
    """Check the inputs' ranks and `query_mask (B, T)`; return it as bool or None."""
    layer._check_input_shapes(query.shape, value.shape, None if key is None else key.shape)
    if query_mask is None:
        return None
    query_mask = ops.convert_to_tensor(query_mask)
    layer._check_mask("query_mask", query_mask, tuple(query.shape[:2]))
    return ops.cast(query_mask, "bool")
