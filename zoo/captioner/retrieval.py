"""Caption retrieval inside the captioner: the training captions of the images
that look most like the query.

Shape legend: B batch, S image side, F = 3 * pool_size**2 pixel features,
M images in the datastore, K neighbours, L caption length.
"""

import keras
import numpy as np
from keras import ops

from keras_attention.utils.validation import check_positive_int

_NEG = -1e9


@keras.saving.register_keras_serializable(package="keras_attention_zoo")
class CaptionRetrieval(keras.layers.Layer):
    """The K nearest training images of each query image, and their captions.

    Images are compared as in the nearest-neighbour baseline
    (`zoo.captioner.baselines.pixel_features`): average-pooled to
    `pool_size x pool_size` RGB, centred on the datastore mean, and ranked by
    cosine similarity. The datastore (unit key rows, their mean, and one
    caption of token ids per image) is held in non-trainable weights, so it is
    saved with the model's weights and travels into an exported SavedModel.
    Fill it with `set_datastore` before use.

    This is the retrieval half of a retrieval-augmented captioner (as in
    Sarto et al. 2022, "Retrieval-Augmented Transformer for Image
    Captioning", and Ramos et al. 2023, "SmallCap"): the decoder attends to
    the retrieved captions beside the image patches, so it can copy a
    neighbour's words when the neighbour is close and describe the image
    itself when it is not.

    Args:
        datastore_size: M, images in the datastore.
        caption_length: L, token ids stored per caption.
        num_neighbours: K, neighbours returned per query (at most M, or M - 1
            when an index is excluded).
        pool_size: side of the pooled image; the image side must be a
            multiple of it.

    Call arguments:
        images: `(B, S, S, 3)` float in [0, 1].
        exclude: `(B,)` int, a datastore row each query must not retrieve
            (its own row while training), or -1 for none.

    Returns:
        `(captions, similarity)`: `(B, K, L)` int32 token ids of the
        neighbours' captions, most similar first, and `(B, K)` float32 cosine
        similarities.

    Example:

    >>> retrieval = CaptionRetrieval(datastore_size=3, caption_length=4, num_neighbours=2)
    >>> retrieval.set_datastore(train_pixels, train_caption_ids)   # (3, S, S, 3), (3, 4)
    >>> ids, similarity = retrieval(images, ops.full((len(images),), -1))
    """

    def __init__(self, datastore_size, caption_length, num_neighbours, pool_size=16,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.datastore_size = check_positive_int("datastore_size", datastore_size)
        self.caption_length = check_positive_int("caption_length", caption_length)
        self.num_neighbours = check_positive_int("num_neighbours", num_neighbours)
        self.pool_size = check_positive_int("pool_size", pool_size)
        if self.num_neighbours >= self.datastore_size:
            raise ValueError(
                "`num_neighbours` must be below `datastore_size` (one row may be excluded). "
                f"Received: num_neighbours={num_neighbours}, datastore_size={datastore_size}"
            )
        self.feature_dim = 3 * self.pool_size ** 2
        self.keys = self.add_weight(shape=(self.datastore_size, self.feature_dim),
                                    initializer="zeros", trainable=False, name="keys")
        self.mean = self.add_weight(shape=(self.feature_dim,), initializer="zeros",
                                    trainable=False, name="mean")
        self.captions = self.add_weight(shape=(self.datastore_size, self.caption_length),
                                        initializer="zeros", dtype="int32", trainable=False,
                                        name="captions")

    def build(self, images_shape, exclude_shape=None):
        if len(images_shape) != 4 or images_shape[-1] != 3:
            raise ValueError(f"`images` must be (batch, side, side, 3). "
                             f"Received: shape={images_shape}")
        side = images_shape[1]
        if side is None or side != images_shape[2] or side % self.pool_size:
            raise ValueError(f"The image side must be fixed, square and a multiple of "
                             f"pool_size={self.pool_size}. Received: shape={images_shape}")
        self.built = True

    def pooled(self, images):
        """`(B, S, S, 3)` -> pooled pixel features `(B, F)` float32."""
        images = ops.cast(images, "float32")
        side, p = images.shape[1], self.pool_size
        x = ops.reshape(images, (-1, p, side // p, p, side // p, 3))
        return ops.reshape(ops.mean(x, axis=(2, 4)), (-1, self.feature_dim))

    def set_datastore(self, images, caption_ids):
        """Fills the datastore from `(M, S, S, 3)` images (uint8, or float in
        [0, 1]) and `(M, L)` caption token ids."""
        images = np.asarray(images)
        caption_ids = np.asarray(caption_ids)
        if len(images) != self.datastore_size or caption_ids.shape != (
                self.datastore_size, self.caption_length):
            raise ValueError(
                f"The datastore needs {self.datastore_size} images and caption ids of shape "
                f"({self.datastore_size}, {self.caption_length}). Received: "
                f"{len(images)} images, caption ids of shape {caption_ids.shape}"
            )
        pixels = images.astype("float32") / (255.0 if images.dtype == np.uint8 else 1.0)
        features = ops.convert_to_numpy(self.pooled(pixels)).astype("float64")
        mean = features.mean(axis=0)
        centred = features - mean
        keys = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        self.keys.assign(keys.astype("float32"))
        self.mean.assign(mean.astype("float32"))
        self.captions.assign(caption_ids.astype("int32"))

    def call(self, images, exclude):
        query = self.pooled(images) - self.mean  # (B, F)
        query = query / ops.maximum(ops.norm(query, axis=-1, keepdims=True), 1e-12)
        similarity = ops.matmul(query, ops.transpose(self.keys))  # (B, M)
        rows = ops.arange(self.datastore_size, dtype="int32")
        excluded = ops.equal(rows[None, :], ops.cast(exclude, "int32")[:, None])
        similarity = ops.where(excluded, _NEG, similarity)
        # K rounds of argmax rather than `top_k`: K is small, ties go to the
        # lowest row as in the baseline, and XLA on CPU compiles `top_k` next
        # to dropout's random numbers into a step about 20 times slower.
        index, top = [], []
        for _ in range(self.num_neighbours):
            best = ops.cast(ops.argmax(similarity, axis=-1), "int32")  # (B,)
            index.append(best)
            top.append(ops.max(similarity, axis=-1))
            similarity = ops.where(ops.equal(rows[None, :], best[:, None]), _NEG, similarity)
        index = ops.stack(index, axis=1)  # (B, K)
        return ops.take(self.captions, index, axis=0), ops.stack(top, axis=1)

    def compute_output_spec(self, images, exclude):
        batch = images.shape[0]
        return (keras.KerasTensor((batch, self.num_neighbours, self.caption_length), "int32"),
                keras.KerasTensor((batch, self.num_neighbours), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(datastore_size=self.datastore_size, caption_length=self.caption_length,
                      num_neighbours=self.num_neighbours, pool_size=self.pool_size)
        return config
