"""The decoder's memory of a retrieval-augmented captioner: image patches
followed by the words of the retrieved captions.

Shape legend: B batch, P patches, K neighbours, L caption length, D hidden size.
"""

import keras
from keras import ops

from zoo.captioner.vocabulary import Vocabulary

# Upper edges of the similarity buckets (the last bucket is >= 0.999).
SIMILARITY_EDGES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


@keras.saving.register_keras_serializable(package="keras_attention_zoo")
class CaptionMemory(keras.layers.Layer):
    """Joins patch features and embedded neighbour captions into one memory.

    Each retrieved word gets, on top of its word embedding, a learned
    embedding of its position in its caption, one of its neighbour's rank,
    a linear function of its neighbour's cosine similarity to the query, and
    a learned embedding of the similarity's bucket (`SIMILARITY_EDGES`), so
    the layers that read the memory know which caption a word comes from and
    how close that caption's image is. The buckets matter: a neighbour at
    0.999 or above is nearly always a copy of the image with the same caption,
    one at 0.95 rarely is, and a linear term cannot draw that line. `[PAD]`
    words are masked out.

    Args:
        num_neighbours: K.
        caption_length: L.

    Call arguments:
        patches: `(B, P, D)` image features.
        words: `(B, K, L, D)` embedded neighbour captions.
        ids: `(B, K, L)` their token ids.
        similarity: `(B, K)` cosine similarity of each neighbour.

    Returns:
        `(memory, mask)`: `(B, P + K * L, D)` and `(B, P + K * L)` bool, True
        on patches and real words.

    Example:

    >>> memory, mask = CaptionMemory(num_neighbours=4, caption_length=16)(
    ...     patches, words, ids, similarity)
    """

    def __init__(self, num_neighbours, caption_length, **kwargs):
        super().__init__(**kwargs)
        self.num_neighbours = int(num_neighbours)
        self.caption_length = int(caption_length)

    def build(self, patches_shape, words_shape, ids_shape, similarity_shape):
        k, length, dim = self.num_neighbours, self.caption_length, patches_shape[-1]
        if tuple(words_shape[1:]) != (k, length, dim) or tuple(ids_shape[1:]) != (k, length) \
                or tuple(similarity_shape[1:]) != (k,):
            raise ValueError(
                f"Expected words (B, {k}, {length}, {dim}), ids (B, {k}, {length}) and "
                f"similarity (B, {k}). Received: words={words_shape}, ids={ids_shape}, "
                f"similarity={similarity_shape}"
            )
        self.word_position = self.add_weight(shape=(length, dim), initializer="zeros",
                                             name="word_position")
        self.rank = self.add_weight(shape=(k, dim), initializer="zeros", name="rank")
        self.similarity_kernel = self.add_weight(shape=(dim,), initializer="zeros",
                                                 name="similarity_kernel")
        self.similarity_buckets = self.add_weight(shape=(len(SIMILARITY_EDGES) + 1, dim),
                                                  initializer="zeros",
                                                  name="similarity_buckets")

    def call(self, patches, words, ids, similarity):
        similarity = ops.cast(similarity, "float32")
        bucket = ops.sum(ops.cast(similarity[..., None] >= ops.convert_to_tensor(
            SIMILARITY_EDGES, "float32"), "int32"), axis=-1)  # (B, K)
        similarity = ops.cast(similarity, self.compute_dtype)
        words = (words + self.word_position[None, None]
                 + self.rank[None, :, None]
                 + similarity[:, :, None, None] * self.similarity_kernel
                 + ops.take(self.similarity_buckets, bucket, axis=0)[:, :, None])  # (B,K,L,D)
        batch, dim = ops.shape(patches)[0], patches.shape[-1]
        words = ops.reshape(ops.cast(words, patches.dtype),
                            (batch, self.num_neighbours * self.caption_length, dim))
        word_mask = ops.reshape(ops.not_equal(ids, Vocabulary.pad_id),
                                (batch, self.num_neighbours * self.caption_length))
        patch_mask = ops.ones(ops.shape(patches)[:2], dtype="bool")
        return (ops.concatenate([patches, words], axis=1),
                ops.concatenate([patch_mask, word_mask], axis=1))

    def compute_output_spec(self, patches, words, ids, similarity):
        batch, p, dim = patches.shape
        length = None if p is None else p + self.num_neighbours * self.caption_length
        return (keras.KerasTensor((batch, length, dim), patches.dtype),
                keras.KerasTensor((batch, length), "bool"))

    def get_config(self):
        config = super().get_config()
        config.update(num_neighbours=self.num_neighbours, caption_length=self.caption_length)
        return config
