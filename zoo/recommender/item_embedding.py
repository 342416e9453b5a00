"""Item embedding with optional fixed item features, usable in reverse for scores.

Shape legend: B batch, T sequence length, D hidden size, V items (with padding),
G item features.
"""

import keras
from keras import ops

from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class ItemEmbedding(keras.layers.Layer):
    """Item id embedding, plus a projection of fixed item features, with tied
    output scores.

    The representation of item `i` is `E[i] + F[i] @ W`, where `E` is a trainable
    `(V, D)` table, `F` a fixed `(V, G)` feature table (e.g. multi-hot genres, as
    the item side features of the Behavior Sequence Transformer, Chen et al.
    2019) stored as a non-trainable weight, and `W` a trainable `(G, D)`
    projection. With `num_features=0` it is a plain embedding (SASRec, Kang &
    McAuley 2018). Called with `reverse=True` on hidden states it returns the dot
    product of each state with every item representation: the item scores, with
    the input and output item embeddings shared as in SASRec.

    Args:
        num_items: rows of the table V, including the padding row 0.
        hidden_dim: embedding size D.
        num_features: item feature columns G (0 for none). Set the values with
            `set_features` after building; they are saved with the weights.
        embeddings_initializer: initializer of `E`.
        features_initializer: initializer of `W`; zeros by default, so that the
            features start as a no-op instead of swamping the id embeddings
            (a multi-hot row sums several projections).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: int item indices `(B, T)`, or hidden states `(B, ..., D)` when
            `reverse=True`.
        reverse: compute scores against every item instead of looking items up.

    Returns:
        `(B, T, D)` item representations, or `(B, ..., V)` scores with
        `reverse=True`.

    Example:

    >>> layer = ItemEmbedding(num_items=101, hidden_dim=32)
    >>> h = layer(keras.ops.ones((2, 5), "int32"))   # (2, 5, 32)
    >>> layer(h, reverse=True).shape
    (2, 5, 101)
    """

    def __init__(self, num_items, hidden_dim, num_features=0,
                 embeddings_initializer="glorot_uniform", features_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_items = check_positive_int("num_items", num_items)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.num_features = check_positive_int("num_features", num_features, allow_zero=True)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.features_initializer = keras.initializers.get(features_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_items, self.hidden_dim),
            initializer=self.embeddings_initializer,
        )
        if self.num_features:
            self.features = self.add_weight(
                name="features", shape=(self.num_items, self.num_features),
                initializer="zeros", trainable=False,
            )
            self.feature_kernel = self.add_weight(
                name="feature_kernel", shape=(self.num_features, self.hidden_dim),
                initializer=self.features_initializer,
            )
        self.built = True

    def set_features(self, table):
        """Stores the `(num_items, num_features)` feature table."""
        shape = tuple(getattr(table, "shape", ()))
        if not self.num_features or shape != (self.num_items, self.num_features):
            raise ValueError(
                f"`table` must have shape {(self.num_items, self.num_features)}. "
                f"Received: shape={shape}"
            )
        if not self.built:
            self.build()
        self.features.assign(ops.cast(table, self.features.dtype))

    def table(self):
        """`(V, D)` representations of every item."""
        table = ops.cast(self.embeddings, self.compute_dtype)
        if self.num_features:
            features = ops.cast(self.features, self.compute_dtype)  # (V, G)
            table = table + ops.matmul(features, ops.cast(self.feature_kernel,
                                                          self.compute_dtype))
        return table  # (V, D)

    def call(self, inputs, reverse=False):
        table = self.table()  # (V, D)
        if reverse:
            return ops.matmul(inputs, ops.transpose(table))  # (B, ..., V)
        return ops.take(table, ops.cast(inputs, "int32"), axis=0)  # (B, T, D)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_items": self.num_items,
            "hidden_dim": self.hidden_dim,
            "num_features": self.num_features,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer),
            "features_initializer": keras.initializers.serialize(
                self.features_initializer),
        })
        return config
