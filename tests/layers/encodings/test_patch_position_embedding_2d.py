import keras
import numpy as np
import pytest

from keras_attention.layers.encodings.patch_position_embedding_2d import (
    PatchPositionEmbedding2D,
)
from keras_attention.testing import run_layer_test


def numpy_sinusoid(positions, depth, base=10000.0):
    table = np.zeros((len(positions), depth))
    for j in range(depth):
        angle = np.asarray(positions, "float64") / base ** (2 * (j // 2) / depth)
        table[:, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


def numpy_patch_sincos(rows, cols, features, base=10000.0):
    """Row-major patches; first half of the features encode the row, second the column."""
    half = features // 2
    row_table, col_table = numpy_sinusoid(range(rows), half, base), numpy_sinusoid(
        range(cols), half, base)
    out = [np.concatenate([row_table[r], col_table[c]]) for r in range(rows) for c in range(cols)]
    return np.stack(out)[None]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_layer_checks_sincos_square_grid():
    x = np.random.default_rng(0).normal(size=(2, 9, 8)).astype("float32")
    run_layer_test(PatchPositionEmbedding2D, {}, [x], expected_output_shape=(1, 9, 8))


def test_layer_checks_learned():
    x = np.random.default_rng(0).normal(size=(2, 6, 5)).astype("float32")
    run_layer_test(PatchPositionEmbedding2D, {"grid_size": (2, 3), "learned": True}, [x],
                   expected_output_shape=(1, 6, 5))


def test_sincos_golden_against_numpy():
    # (grid_size, rows, columns, features, base)
    for grid_size, rows, cols, features, base in [(None, 4, 4, 8, 10000),
                                                   ((2, 3), 2, 3, 12, 10000),
                                                   (3, 3, 3, 4, 100)]:
        x = np.zeros((2, rows * cols, features), "float32")
        out = _np(PatchPositionEmbedding2D(grid_size=grid_size, base=base)(x))
        np.testing.assert_allclose(out, numpy_patch_sincos(rows, cols, features, base),
                                   atol=1e-5, err_msg=f"grid_size={grid_size}")


def test_hand_values():
    # grid 1 x 2, 4 features: [sin r, cos r, sin c, cos c].
    out = _np(PatchPositionEmbedding2D(grid_size=(1, 2))(np.zeros((1, 2, 4), "float32")))
    np.testing.assert_allclose(out[0], [[0, 1, 0, 1], [0, 1, np.sin(1), np.cos(1)]], atol=1e-6)


def test_learned_table_is_returned():
    layer = PatchPositionEmbedding2D(grid_size=2, learned=True)
    x = np.zeros((2, 4, 3), "float32")
    layer(x)
    table = np.arange(12, dtype="float32").reshape(4, 3)
    layer.set_weights([table])
    np.testing.assert_array_equal(_np(layer(x)), table[None])


def test_grid_size_config_survives_json():
    layer = PatchPositionEmbedding2D(grid_size=[2, 3])
    assert layer.grid_size == (2, 3)
    assert PatchPositionEmbedding2D(grid_size=4).get_config()["grid_size"] == (4, 4)


def test_errors():
    for bad in ((0, 2), (2, 3, 4), "4", 2.0, (2, True)):
        with pytest.raises(ValueError, match="grid_size"):
            PatchPositionEmbedding2D(grid_size=bad)
    with pytest.raises(TypeError, match="learned"):
        PatchPositionEmbedding2D(learned="yes")
    with pytest.raises(ValueError, match="base"):
        PatchPositionEmbedding2D(base=0)
    with pytest.raises(ValueError, match=r"inputs.*rank 3.*Received: shape=\(2, 8\)"):
        PatchPositionEmbedding2D()(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*divisible by 4.*Received: shape=\(2, 9, 6\)"):
        PatchPositionEmbedding2D()(np.zeros((2, 9, 6), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*square.*Received: shape=\(2, 8, 4\)"):
        PatchPositionEmbedding2D()(np.zeros((2, 8, 4), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*6 patches.*Received: shape=\(2, 9, 4\)"):
        PatchPositionEmbedding2D(grid_size=(2, 3))(np.zeros((2, 9, 4), "float32"))
    with pytest.raises(ValueError, match="inputs.*grid_size"):
        PatchPositionEmbedding2D().build((None, None, 8))
    with pytest.raises(ValueError, match="inputs.*features"):
        PatchPositionEmbedding2D(grid_size=2).build((None, 4, None))
    layer = PatchPositionEmbedding2D(grid_size=(2, 2), learned=True)
    layer(np.zeros((1, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"inputs.*\(batch, 4, 3\).*Received: shape=\(1, 4, 5\)"):
        layer(np.zeros((1, 4, 5), "float32"))
