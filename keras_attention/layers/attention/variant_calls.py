"""Call plumbing shared by the MultiHeadAttention variants that keep their masks
apart (as vectors, or as a block pattern) instead of merging them into `(T, S)`.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads, H key head dim, V value head dim, O output features.
"""

from keras import ops

from keras_attention.layers.attention.variant_utils import checked_query_mask
from keras_attention.ops.attention import zero_rows


def reject_cache(layer_name, cache):
    """Raise for a key/value cache given to a variant that has none."""
    if cache is not None:
        raise ValueError(
            f"{layer_name} does not support a key/value cache. Received: cache with "
            f"shape={tuple(cache.shape)}"
        )


def project_heads(layer, query, key, value):
    """Per-head projections `(B, T, N, H)`, `(B, S, K, H)`, `(B, S, K, V)`, rotated
    by the layer's position encoding (query i at key position `i + S - T`)."""
    q = layer._query_dense(query)  # (B, T, N, H)
    k = layer._key_dense(key)  # (B, S, K, H)
    v = layer._value_dense(value)  # (B, S, K, V)
    if layer.position_encoding is not None:
        t, s = ops.shape(q)[1], ops.shape(k)[1]
        q, k = layer.position_encoding.transform_query_key(q, k, s - t, 0)
    return q, k, v


def compute_with_pattern_rows(layer, compute):
    """Run `compute()`, MultiHeadAttention's `_compute_attention`, and zero the output
    rows `(B, T, O)` of queries with no allowed key under the pattern and the masks.

    The base class zeroes the rows that the masks leave empty, but not the rows
    that only the pattern empties; without this their output would be the output
    projection's bias. `_attend` records the rows in `layer._pattern_rows`.
    """
    layer._pattern_rows = None
    output, scores = compute()
    rows, layer._pattern_rows = layer._pattern_rows, None
    return zero_rows(output, rows), scores


def blockwise_call(layer, query, value, key, query_mask, value_mask, key_mask,
                   attention_mask, causal, return_attention_scores, training):
    """The body of `call` shared by the block-wise self-attention layers.

    `query_mask` stays out of the merged mask, which is then the `(B, 1, T)` key
    padding mask (or the user's `(B, T, T)` mask); causality is applied inside the
    blocks, so the base class builds no `(T, T)` causal mask either. Padded query
    rows are zeroed in the output and in the scores.
    """
    query_mask = checked_query_mask(layer, query, value, key, query_mask)
    result = layer._attention_call(
        query, value, key, None, value_mask, key_mask, attention_mask, False,
        return_attention_scores, training, causal=causal,
    )
    if return_attention_scores:
        output, scores = result
        if query_mask is not None:
            scores = scores * ops.cast(query_mask[:, None, :, None], scores.dtype)
        return zero_rows(output, query_mask), scores
    return zero_rows(result, query_mask)
