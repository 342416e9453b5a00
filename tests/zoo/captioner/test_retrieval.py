"""CaptionRetrieval and CaptionMemory: the retrieval half of the captioner."""

import numpy as np
import pytest
from keras import ops

from zoo.captioner import baselines
from zoo.captioner.caption_memory import CaptionMemory
from zoo.captioner.retrieval import CaptionRetrieval


def _datastore(count=9, side=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    ids = rng.integers(4, 20, size=(count, 5)).astype("int32")
    return images, ids


def _retrieval(images, ids, neighbours=3):
    layer = CaptionRetrieval(len(images), ids.shape[1], neighbours, pool_size=16)
    layer.set_datastore(images, ids)
    return layer


def test_ranks_by_centred_cosine_like_the_baseline():
    images, ids = _datastore()
    layer = _retrieval(images, ids)
    queries = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    got_ids, got_sim = layer(queries.astype("float32") / 255.0, np.full((4,), -1, "int32"))
    train = baselines.pixel_features(images).astype("float64")
    query = baselines.pixel_features(queries).astype("float64")
    mean = train.mean(axis=0)

    def unit(x):
        x = x - mean
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    similarity = unit(query) @ unit(train).T  # (4, 9)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :3]
    np.testing.assert_allclose(ops.convert_to_numpy(got_sim),
                               np.take_along_axis(similarity, order, axis=1), atol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(got_ids), ids[order])
    # The first neighbour is the baseline's nearest neighbour.
    np.testing.assert_array_equal(order[:, 0], baselines.nearest_neighbours(train, query))


def test_exclude_leaves_out_the_images_own_row():
    images, ids = _datastore()
    layer = _retrieval(images, ids, neighbours=2)
    pixels = images[:3].astype("float32") / 255.0
    kept_ids, kept_sim = layer(pixels, np.full((3,), -1, "int32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(kept_ids)[:, 0], ids[:3])
    np.testing.assert_allclose(ops.convert_to_numpy(kept_sim)[:, 0], 1.0, atol=1e-5)
    left_ids, left_sim = layer(pixels, np.array([0, 1, -1], "int32"))
    left_ids = ops.convert_to_numpy(left_ids)
    # Rows 0 and 1 move up their second neighbour; row 2 keeps itself.
    np.testing.assert_array_equal(left_ids[:2, 0], ops.convert_to_numpy(kept_ids)[:2, 1])
    np.testing.assert_array_equal(left_ids[2, 0], ids[2])
    assert np.all(ops.convert_to_numpy(left_sim)[:2, 0] < 1.0 - 1e-4)


def test_ties_go_to_the_lowest_row():
    images, ids = _datastore(count=4)
    images[2] = images[1]
    layer = _retrieval(images, ids, neighbours=2)
    got, _ = layer(images[1:2].astype("float32") / 255.0, np.array([-1], "int32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(got)[0], ids[[1, 2]])


def test_datastore_travels_with_the_weights(tmp_path):
    import keras

    images, ids = _datastore()
    layer = _retrieval(images, ids)
    inputs = keras.Input((32, 32, 3))
    exclude = keras.Input((), dtype="int32")
    model = keras.Model([inputs, exclude], layer(inputs, exclude))
    model.save_weights(tmp_path / "r.weights.h5")
    fresh = CaptionRetrieval(len(images), ids.shape[1], 3, pool_size=16)
    clone = keras.Model([inputs, exclude], fresh(inputs, exclude))
    clone.load_weights(tmp_path / "r.weights.h5")
    query = images[:2].astype("float32") / 255.0
    minus = np.full((2,), -1, "int32")
    for a, b in zip(model([query, minus]), clone([query, minus])):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_retrieval_errors():
    with pytest.raises(ValueError, match="num_neighbours=4, datastore_size=4"):
        CaptionRetrieval(4, 5, 4)
    with pytest.raises(ValueError, match="datastore_size=0"):
        CaptionRetrieval(0, 5, 1)
    layer = CaptionRetrieval(3, 5, 1, pool_size=16)
    with pytest.raises(ValueError, match="caption ids of shape \\(2, 5\\)"):
        layer.set_datastore(np.zeros((3, 32, 32, 3), "uint8"), np.zeros((2, 5), "int32"))
    with pytest.raises(ValueError, match="multiple of pool_size=16"):
        layer(np.zeros((1, 24, 24, 3), "float32"), np.array([-1], "int32"))
    with pytest.raises(ValueError, match="side, side, 3"):
        CaptionRetrieval(3, 5, 1)(np.zeros((1, 32, 32), "float32"), np.array([-1], "int32"))


def test_caption_memory_joins_patches_and_words():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(2, 4, 8)).astype("float32")
    words = rng.normal(size=(2, 3, 5, 8)).astype("float32")
    ids = np.array([[[5, 6, 3, 0, 0]] * 3, [[7, 3, 0, 0, 0]] * 3], "int32")
    similarity = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]], "float32")
    layer = CaptionMemory(num_neighbours=3, caption_length=5)
    memory, mask = layer(patches, words, ids, similarity)
    memory, mask = ops.convert_to_numpy(memory), ops.convert_to_numpy(mask)
    assert memory.shape == (2, 4 + 15, 8) and mask.shape == (2, 19)
    np.testing.assert_array_equal(memory[:, :4], patches)
    np.testing.assert_array_equal(mask[:, :4], True)
    np.testing.assert_array_equal(mask[:, 4:], (ids != 0).reshape(2, 15))
    # Hand-set weights: word = embedding + position + rank + similarity * kernel.
    layer.word_position.assign(np.arange(5 * 8, dtype="float32").reshape(5, 8))
    layer.rank.assign(np.full((3, 8), 100.0, "float32"))
    layer.similarity_kernel.assign(np.ones((8,), "float32"))
    # Bucket b adds 1000 * b: similarities 0.9, 0.5, 0.1 / 0.8, 0.7, 0.6 fall in
    # buckets 4, 1, 0 / 3, 2, 1 (edges 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999).
    layer.similarity_buckets.assign(np.repeat(1000.0 * np.arange(8, dtype="float32")[:, None],
                                              8, axis=1))
    memory = ops.convert_to_numpy(layer(patches, words, ids, similarity)[0])
    buckets = np.array([[4, 1, 0], [3, 2, 1]], "float32")
    expected = (words + np.arange(40, dtype="float32").reshape(1, 1, 5, 8) + 100.0
                + similarity[:, :, None, None] + 1000.0 * buckets[:, :, None, None])
    np.testing.assert_allclose(memory[:, 4:], expected.reshape(2, 15, 8), rtol=1e-6)


def test_caption_memory_checks_shapes():
    layer = CaptionMemory(num_neighbours=2, caption_length=5)
    with pytest.raises(ValueError, match="words \\(B, 2, 5, 8\\)"):
        layer(np.zeros((1, 4, 8)), np.zeros((1, 3, 5, 8)), np.zeros((1, 3, 5), "int32"),
              np.zeros((1, 3)))
