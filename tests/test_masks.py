import keras
import numpy as np
import pytest

from keras_attention import masks


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_padding_mask_from_lengths_and_tokens():
    np.testing.assert_array_equal(
        _np(masks.padding_mask(np.array([2, 0, 3]))),
        [[True, True, False], [False, False, False], [True, True, True]],
    )
    np.testing.assert_array_equal(_np(masks.padding_mask(np.array([1]), max_length=3)),
                                  [[True, False, False]])
    np.testing.assert_array_equal(_np(masks.padding_mask(np.array([[5, 3, 0, 0]]))),
                                  [[True, True, False, False]])
    with pytest.raises(ValueError, match="lengths_or_tokens"):
        masks.padding_mask(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="max_length"):
        masks.padding_mask(np.array([1]), max_length=0)


def test_causal_mask_square_and_bottom_right():
    np.testing.assert_array_equal(_np(masks.causal_mask(3)), np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(
        _np(masks.causal_mask(2, 4)), [[True, True, True, False], [True, True, True, True]]
    )
    np.testing.assert_array_equal(_np(masks.causal_mask(1, 4, query_start=1)),
                                  [[True, True, False, False]])


def test_sliding_window_mask():
    i, j = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    np.testing.assert_array_equal(_np(masks.sliding_window_mask(6, 2)), np.abs(i - j) <= 2)
    np.testing.assert_array_equal(_np(masks.sliding_window_mask(6, 2, causal=True)),
                                  (i - j >= 0) & (i - j <= 2))
    with pytest.raises(ValueError, match="window_size"):
        masks.sliding_window_mask(6, -1)


def test_merge_masks():
    a = np.array([[True, False, True]])
    b = np.array([[True], [False]])
    np.testing.assert_array_equal(_np(masks.merge_masks(a, None, b)), a & b)
    assert masks.merge_masks(None, None) is None
