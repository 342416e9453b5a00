"""RandomShift: training-time shifts inside the captioner's image encoder."""

import numpy as np
import pytest
from keras import ops

from zoo.captioner.random_shift import RandomShift


def _offset_of(image, shifted, shift):
    """The (row, column) window of the white-padded image that equals `shifted`."""
    padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), constant_values=1.0)
    size = image.shape[0]
    return [(r, c) for r in range(2 * shift + 1) for c in range(2 * shift + 1)
            if np.array_equal(padded[r:r + size, c:c + size], shifted)]


@pytest.mark.parametrize("jit", [False, True])
def test_each_image_is_a_white_padded_crop(jit):
    import keras

    images = np.random.default_rng(0).uniform(size=(6, 8, 8, 3)).astype("float32")
    layer = RandomShift(2, seed=3)
    if jit:
        class AlwaysTraining(keras.Model):
            def __init__(self):
                super().__init__()
                self.shift = layer

            def call(self, x):
                return self.shift(x, training=True)

        model = AlwaysTraining()
        model.compile(jit_compile=True)
        shifted = model.predict_on_batch(images)
    else:
        shifted = ops.convert_to_numpy(layer(images, training=True))
    offsets = [_offset_of(image, out, 2) for image, out in zip(images, shifted)]
    assert all(len(found) == 1 for found in offsets), offsets
    assert len({found[0] for found in offsets}) > 1  # images get their own offsets


def test_identity_at_inference_and_when_off():
    images = np.random.default_rng(1).uniform(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(RandomShift(2)(images)), images)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(RandomShift(0)(images, training=True)), images)


def test_config_and_errors():
    layer = RandomShift(3, fill_value=0.0, seed=5)
    assert RandomShift.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="max_shift=-1"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="fixed height and width"):
        RandomShift(1)(np.zeros((2, 8, 3), "float32"))
