"""The decoder's memory of a retrieval-augmented captioner: image patches
followed by the words of the retrieved captions.

Shape legend: B batch, P patches, K neighbours, L caption length, D hidden size.
"""

import keras
from keras import ops

from zoo.captioner.vocabulary import Vocabulary


@keras.saving.register_keras_serializable(package="keras_attention_zoo")
class CaptionMemory(keras.layers.Layer):
    """Joins patch features and embedded neighbour captions into one memory.

    Each retrieved word gets, on top of its word embedding, a learned
    embedding of its position in its caption, one of its neighbour's rank,
    and a linear function of its neighbour's similarity to the query, so
    the layers that read the memory know which caption a word comes from and
    how far that caption's image is. `[PAD]` words are masked out.

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

    def call(self, patches, words, ids, similarity):
        similarity = ops.cast(similarity, self.compute_dtype)
        words = (words + self.word_position[None, None]
                 + self.rank[None, :, None]
                 + similarity[:, :, None, None] * self.similarity_kernel)  # (B, K, L, D)
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
