import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.learned_position_embedding import (
    LearnedPositionEmbedding,
)
from keras_attention.testing import run_layer_test


def test_layer_checks():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    run_layer_test(LearnedPositionEmbedding,
                   {"max_length": 8, "initializer": "random_normal"}, [x],
                   {"start_index": 3}, expected_output_shape=(1, 5, 3))


def test_golden_rows_of_the_table():
    layer = LearnedPositionEmbedding(max_length=7)
    x = np.zeros((2, 4, 3), "float32")
    layer(x)
    table = np.arange(21, dtype="float32").reshape(7, 3)
    layer.set_weights([table])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), table[None, :4])
    for start in (2, keras.ops.convert_to_tensor(3)):
        out = keras.ops.convert_to_numpy(layer(x, start_index=start))
        s = int(keras.ops.convert_to_numpy(start))
        np.testing.assert_array_equal(out, table[None, s:s + 4])


def test_gradient_reaches_only_used_rows():
    """A model adding the embedding learns it; rows past the sequence are untouched."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 2))
    layer = LearnedPositionEmbedding(max_length=5)
    model = keras.Model(inputs, keras.layers.Add()([inputs, layer(inputs)]))
    before = keras.ops.convert_to_numpy(layer.embeddings)
    x = np.zeros((4, 3, 2), "float32")
    y = np.ones((4, 3, 2), "float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = keras.ops.convert_to_numpy(layer.embeddings)
    assert not np.allclose(after[:3], before[:3])
    np.testing.assert_array_equal(after[3:], before[3:])


def test_dynamic_length_in_compiled_model():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, LearnedPositionEmbedding(max_length=6)(inputs))
    model.compile(jit_compile=True)
    for length in (3, 5):
        x = np.random.default_rng(length).normal(size=(2, length) + (4,)).astype("float32")
        np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="max_length=0"):
        LearnedPositionEmbedding(max_length=0)
    with pytest.raises(TypeError, match="max_length"):
        LearnedPositionEmbedding(max_length=8.0)
    with pytest.raises(ValueError, match="max_length=8"):
        LearnedPositionEmbedding(max_length=8)(np.zeros((2, 9, 4), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*rank 3.*Received: shape=\(2, 8\)"):
        LearnedPositionEmbedding(max_length=8)(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        LearnedPositionEmbedding(max_length=8).build((None, None, None))

    layer = LearnedPositionEmbedding(max_length=8)
    x = np.zeros((2, 6, 4), "float32")
    layer(x)
    # Past the table at call time: static start, tensor start, longer input.
    with pytest.raises(ValueError, match="start_index=3.*max_length=8"):
        layer(x, start_index=3)
    with pytest.raises(ValueError, match="max_length=8"):
        layer(x, start_index=keras.ops.convert_to_tensor(3))
    with pytest.raises(ValueError, match="max_length=8"):
        layer(np.zeros((2, 9, 4), "float32"))
    for start in (-1, keras.ops.convert_to_tensor(-1)):
        with pytest.raises(ValueError, match="start_index=-1"):
            layer(x, start_index=start)
    with pytest.raises(TypeError, match="start_index"):
        layer(x, start_index=2.0)
    with pytest.raises(ValueError, match=r"inputs.*4 features.*Received: shape=\(2, 6, 5\)"):
        layer(np.zeros((2, 6, 5), "float32"))
