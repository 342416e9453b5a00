"""Training-time image shifts inside the captioner network."""

import keras
from keras import ops

from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention_zoo")
class RandomShift(keras.layers.Layer):
    """Shifts each image by a random whole number of pixels, filling with white.

    Active only with `training=True`; otherwise the identity. Each image of
    the batch gets its own vertical and horizontal offset, uniform in
    `[-max_shift, max_shift]`. Written with `keras.ops` (a pad and two
    index gathers) so it compiles with XLA. It sits inside the network rather
    than the input pipeline so that caption retrieval, which runs on the
    network's input, compares the unshifted image with the datastore, as it
    does at inference.

    Args:
        max_shift: largest shift in pixels (0 turns the layer off).
        fill_value: value of the uncovered pixels (1.0 is white for images
            in [0, 1]).
        seed: optional int seed.

    Call arguments:
        images: `(B, H, W, C)`.
        training: shift only when True.

    Returns:
        `(B, H, W, C)`, the same shape and dtype.

    Example:

    >>> shifted = RandomShift(max_shift=4)(images, training=True)
    """

    def __init__(self, max_shift, fill_value=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.max_shift = check_positive_int("max_shift", max_shift, allow_zero=True)
        self.fill_value = float(fill_value)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, images_shape):
        if len(images_shape) != 4 or images_shape[1] is None or images_shape[2] is None:
            raise ValueError(f"`images` must be (batch, height, width, channels) with a "
                             f"fixed height and width. Received: shape={images_shape}")
        self.built = True

    def call(self, images, training=None):
        if not training or not self.max_shift:
            return images
        s = self.max_shift
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        padded = ops.pad(images, [[0, 0], [s, s], [s, s], [0, 0]],
                         constant_values=self.fill_value)  # (B, H + 2s, W + 2s, C)
        offsets = keras.random.randint((batch, 2), 0, 2 * s + 1, dtype="int32",
                                       seed=self.seed_generator)  # (B, 2)
        rows = offsets[:, :1] + ops.arange(height, dtype="int32")[None]  # (B, H)
        cols = offsets[:, 1:] + ops.arange(width, dtype="int32")[None]  # (B, W)
        out = ops.take_along_axis(padded, rows[:, :, None, None], axis=1)  # (B, H, W+2s, C)
        return ops.take_along_axis(out, cols[:, None, :, None], axis=2)  # (B, H, W, C)

    def compute_output_shape(self, images_shape):
        return images_shape

    def get_config(self):
        config = super().get_config()
        config.update(max_shift=self.max_shift, fill_value=self.fill_value, seed=self.seed)
        return config
