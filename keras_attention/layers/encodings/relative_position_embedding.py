"""Relative position representations of Shaw et al. 2018.

Shape legend: B batch, T query length, S key length, F features, N query heads,
H key head dim, V value head dim, R = 2 * max_distance + 1 table rows.
"""

import keras
from keras import ops

from keras_attention.layers.encodings._utils import (
    check_length,
    check_position,
    relative_positions,
)
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class RelativePositionEmbedding(AttentionPositionEncoding):
    """Learned relative position representations, "Self-Attention with Relative
    Position Representations" (Shaw et al. 2018).

    Query `i` and key `j` are linked by the clipped distance
    `clip(j - i, -max_distance, max_distance)`, which picks a row of two
    trainable tables of `2 * max_distance + 1` rows: `a^K` (key head dim wide) and
    `a^V` (value head dim wide). Inside an attention layer the logits become
    `(q_i . k_j + q_i . a^K_ij) * scale` and the output gains
    `sum_j w_ij a^V_ij`; the tables are shared by all heads, as in the paper.

    Pass the layer to an attention layer through `position_encoding=`. The
    attention layer sizes the tables from its own key and value head dims by
    calling `check_attention_shapes`; `key_dim` and `value_dim` given here must
    then match them. Because the value term needs the full weight matrix, the
    attention computes it explicitly (`requires_weights = True`).

    Called on its own on `(batch, seq, features)`, the layer returns the key-side
    embeddings `compute_embeddings(seq, seq)`; the table depth is then `key_dim`,
    or `features` when `key_dim` is None.

    Args:
        max_distance: the largest distance told apart, a positive int.
        key_dim: depth of the key table; defaults to the attention layer's key
            head dim (or the input features when called on its own).
        value_dim: depth of the value table; defaults to the attention layer's
            value head dim (or to `key_dim` when called on its own).
        initializer: initializer of both tables. Defaults to `"glorot_uniform"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, seq, features)`; only its shape is used.

    Returns:
        `(seq, seq, key_depth)` key-side embeddings in the compute dtype.

    Example:

    >>> from keras_attention.layers import MultiHeadAttention
    >>> mha = MultiHeadAttention(num_heads=2, key_dim=8,
    ...                          position_encoding=RelativePositionEmbedding(4))
    >>> x = keras.random.normal((2, 6, 16))
    >>> tuple(mha(x, x).shape)
    (2, 6, 16)
    """

    requires_weights = True

    def __init__(self, max_distance, key_dim=None, value_dim=None,
                 initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_distance = check_positive_int("max_distance", max_distance)
        self.key_dim = check_positive_int("key_dim", key_dim, allow_none=True)
        self.value_dim = check_positive_int("value_dim", value_dim, allow_none=True)
        self.initializer = keras.initializers.get(initializer)

    # ------------------------------------------------------------------ state
    @staticmethod
    def _check_shape(shape):
        if shape is None or len(shape) not in (3, 4):
            got = None if shape is None else tuple(shape)
            raise ValueError(
                "`inputs` must have rank 3 (batch, seq, features) or 4 "
                f"(batch, seq, heads, head_dim). Received: shape={got}"
            )

    def build(self, input_shape):
        self._check_shape(input_shape)
        key_depth = self.key_dim or input_shape[-1]
        if key_depth is None:
            raise ValueError(
                "`inputs` must have a known last axis when `key_dim` is None. "
                f"Received: shape={tuple(input_shape)}"
            )
        self._create_tables(key_depth, self.value_dim or key_depth)

    def _create_tables(self, key_depth, value_depth):
        rows = 2 * self.max_distance + 1
        self.key_embeddings = self.add_weight(
            name="key_embeddings", shape=(rows, key_depth), initializer=self.initializer
        )
        self.value_embeddings = self.add_weight(
            name="value_embeddings", shape=(rows, value_depth), initializer=self.initializer
        )

    def check_attention_shapes(self, num_heads, key_dim, value_dim):
        """Check `key_dim`/`value_dim` against the attention layer's and create
        the tables at those sizes if the layer is not built yet."""
        for name, own, got in (("key_dim", self.key_dim, key_dim),
                               ("value_dim", self.value_dim, value_dim)):
            if own is not None and own != got:
                raise ValueError(
                    f"RelativePositionEmbedding `{name}` ({own}) must match the "
                    f"attention layer's {name}. Received: {name}={got}"
                )
        if self.built:
            for name, table, got in (("key_dim", self.key_embeddings, key_dim),
                                     ("value_dim", self.value_embeddings, value_dim)):
                if table.shape[-1] != got:
                    raise ValueError(
                        f"RelativePositionEmbedding was built with {name} "
                        f"{table.shape[-1]}, which does not match the attention "
                        f"layer's. Received: {name}={got}"
                    )
            return
        with keras.name_scope(self.name, caller=self):
            self._create_tables(key_dim, value_dim)
        self.built = True

    # ------------------------------------------------------------------ maths
    def _ensure_built(self):
        if self.built:
            return
        if self.key_dim is None:
            raise ValueError(
                "RelativePositionEmbedding has no tables yet: pass `key_dim` to the "
                "constructor, call the layer, or use it in an attention layer first. "
                "Received: key_dim=None"
            )
        self.build((None, None, self.key_dim))

    def _rows(self, table, query_length, key_length, query_start):
        """Table rows for every (query, key) pair: `(T, S, D)` float32."""
        rel = relative_positions(query_length, key_length, query_start)  # (T, S)
        index = ops.clip(rel, -self.max_distance, self.max_distance) + self.max_distance
        return ops.take(ops.cast(table, "float32"), index, axis=0)  # (T, S, D)

    def compute_embeddings(self, query_length, key_length, query_start=None):
        """Key-side embeddings `a^K`, `(T, S, key_depth)` float32.

        Args:
            query_length: `T`, an int or scalar tensor.
            key_length: `S`, keys at positions `0 .. S - 1`.
            query_start: position of the first query; None aligns the last query
                with the last key (`S - T`, as in decoding with a cache).
        """
        check_length("query_length", query_length)
        check_length("key_length", key_length)
        if query_start is not None:
            check_position("query_start", query_start)
        self._ensure_built()
        return self._rows(self.key_embeddings, query_length, key_length, query_start)

    def compute_value_embeddings(self, query_length, key_length, query_start=None):
        """Value-side embeddings `a^V`, `(T, S, value_depth)` float32; arguments as
        in `compute_embeddings`."""
        check_length("query_length", query_length)
        check_length("key_length", key_length)
        if query_start is not None:
            check_position("query_start", query_start)
        self._ensure_built()
        return self._rows(self.value_embeddings, query_length, key_length, query_start)

    def attention_bias(self, query, key_length, query_start, scale):
        t = ops.shape(query)[1]
        rows = self._rows(self.key_embeddings, t, key_length, query_start)  # (T, S, H)
        bias = ops.einsum("btnh,tsh->bnts", ops.cast(query, "float32"), rows)  # (B, N, T, S)
        return bias * scale

    def value_term(self, weights, query_start):
        t, s = ops.shape(weights)[2], ops.shape(weights)[3]
        rows = self._rows(self.value_embeddings, t, s, query_start)  # (T, S, V)
        rows = ops.cast(rows, weights.dtype)
        return ops.einsum("bnts,tsv->btnv", weights, rows)  # (B, T, N, V)

    def call(self, inputs):
        self._check_shape(inputs.shape)
        t = ops.shape(inputs)[1]
        rows = self._rows(self.key_embeddings, t, t, 0)  # (T, T, H)
        return ops.cast(rows, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_distance": self.max_distance,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "initializer": keras.initializers.serialize(self.initializer),
        })
        return config
