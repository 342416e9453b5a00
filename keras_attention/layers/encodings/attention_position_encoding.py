"""Base class of the position encodings that act inside attention.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads, H key head dim, V value head dim.

Attention layers accept any subclass through `position_encoding=` and call its
hooks on per-head tensors; each subclass overrides the hooks its maths needs:
rotary embeddings rotate queries and keys, ALiBi and T5 add a logits bias, Shaw
relative embeddings add a query-dependent bias and a term to the values.
"""

import keras


class AttentionPositionEncoding(keras.layers.Layer):
    """Hooks through which an attention layer applies a position encoding."""

    #: True when `value_term` needs the full `(B, N, T, S)` weight matrix.
    requires_weights = False

    def transform_query_key(self, query, key, query_start, key_start):
        """Return `(query, key)` after position-dependent transforms.

        Args:
            query: `(B, T, N, H)`; its first row is at position `query_start`.
            key: `(B, S, K, H)`; its first row is at position `key_start`.
        """
        return query, key

    def attention_bias(self, query, key_length, query_start, scale):
        """Return a float32 logits bias broadcastable to `(B, N, T, S)`, or None.

        Args:
            query: `(B, T, N, H)` projected queries (before scaling).
            key_length: `S`, keys at positions `0 .. S - 1`.
            query_start: position of the first query.
            scale: the logit scale the attention applies to `q . k`.
        """
        return None

    def value_term(self, weights, query_start):
        """Return a `(B, T, N, V)` term added to the attention output, or None.

        Args:
            weights: `(B, N, T, S)` attention weights.
            query_start: position of the first query.
        """
        return None

    def check_attention_shapes(self, num_heads, key_dim, value_dim):
        """Raise `ValueError` when the encoding cannot serve this attention layer."""
