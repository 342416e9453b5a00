import numpy as np
import pytest

from zoo.captioner import baselines


def test_most_frequent_caption_counts_normalised_text():
    captions = [["A cat."], ["a cat"], ["A dog.", "A CAT!"], ["A dog."]]
    assert baselines.most_frequent_caption(captions) == "A cat."


def test_most_frequent_caption_tie_goes_to_alphabetical():
    assert baselines.most_frequent_caption([["Zebra."], ["Apple."]]) == "Apple."


def test_most_frequent_caption_needs_words():
    with pytest.raises(ValueError, match="no caption with a word"):
        baselines.most_frequent_caption([["..."]])


def test_pixel_features_average_pool():
    images = np.zeros((1, 4, 4, 3), dtype="uint8")
    images[0, :2, :2] = 255
    features = baselines.pixel_features(images, size=2)
    assert features.shape == (1, 12)
    np.testing.assert_allclose(features.reshape(2, 2, 3)[:, :, 0], [[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="size=3"):
        baselines.pixel_features(images, size=3)


def test_nearest_neighbours_cosine_after_centring():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # mean 0
    query = np.array([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.9]])
    np.testing.assert_array_equal(baselines.nearest_neighbours(train, query), [0, 1, 2])
    captions = [["east"], ["north", "up"], ["south west"]]
    assert baselines.nearest_neighbour_captions(train, captions, query) == \
        ["east", "north", "south west"]


def test_nearest_neighbour_errors():
    with pytest.raises(ValueError, match="same number of columns"):
        baselines.nearest_neighbours(np.zeros((2, 3)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="2 captions for 3 rows"):
        baselines.nearest_neighbour_captions(np.zeros((3, 2)), [["a"], ["b"]], np.zeros((1, 2)))
