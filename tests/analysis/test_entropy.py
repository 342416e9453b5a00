import numpy as np
import pytest

from keras_attention.analysis import attention_entropy


def test_hand_computed_rows():
    weights = np.array([[[
        [0.25, 0.25, 0.25, 0.25],  # log 4
        [1.0, 0.0, 0.0, 0.0],  # 0
        [0.5, 0.5, 0.0, 0.0],  # log 2, zeros ignored
        [0.0, 0.0, 0.0, 0.0],  # fully masked: 0
        [0.25, 0.75, 0.0, 0.0],  # -(.25 log .25 + .75 log .75)
    ]]])
    expected = [1.3862943611198906, 0.0, 0.6931471805599453, 0.0, 0.5623351446188083]
    result = attention_entropy(weights)
    assert result.shape == (1, 1, 5)
    np.testing.assert_allclose(result[0, 0], expected, rtol=1e-12, atol=1e-12)


def test_shape_batch_heads_queries():
    weights = np.full((2, 3, 4, 6), 1 / 6)
    result = attention_entropy(weights)
    assert result.shape == (2, 3, 4)
    np.testing.assert_allclose(result, np.log(6))


def test_errors():
    with pytest.raises(ValueError, match="rank 4"):
        attention_entropy(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        attention_entropy(-np.ones((1, 1, 2, 2)))
    with pytest.raises(TypeError, match="weights"):
        attention_entropy("not a map")
