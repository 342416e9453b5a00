import keras
import numpy as np
import pytest

from keras_attention.analysis import attention_rollout

# Two layers of two heads on two tokens, (B=1, N=2, T=2, T=2) each.
LAYER_1 = np.array([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])
LAYER_2 = np.array([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]]])


def test_single_layer_adds_half_identity():
    a = np.array([[[[0.5, 0.5], [0.0, 1.0]]]])
    np.testing.assert_allclose(attention_rollout([a])[0], [[0.75, 0.25], [0.0, 1.0]])


def test_two_layers_mean_fusion_hand_computed():
    # Layer 1: mean [[.5, .5], [.5, .5]] -> residual [[.75, .25], [.25, .75]].
    # Layer 2: mean [[1, 0], [1, 0]] -> residual [[1, 0], [.5, .5]].
    # Rollout = A2 @ A1.
    result = attention_rollout([LAYER_1, LAYER_2])
    assert result.shape == (1, 2, 2)
    np.testing.assert_allclose(result[0], [[0.75, 0.25], [0.5, 0.5]])


def test_max_and_min_fusion():
    # max: [[1, 1], [1, 1]] -> .5 A + .5 I = [[1, .5], [.5, 1]] -> rows / 1.5.
    np.testing.assert_allclose(
        attention_rollout([LAYER_1], head_fusion="max")[0], [[2 / 3, 1 / 3], [1 / 3, 2 / 3]]
    )
    # min: zeros -> .5 I -> renormalised to I.
    np.testing.assert_allclose(attention_rollout([LAYER_1], head_fusion="min")[0], np.eye(2))


def test_without_residual_rows_renormalised_and_masked_rows_zero():
    a = np.array([[[[2.0, 2.0], [0.0, 0.0]]]])
    np.testing.assert_allclose(
        attention_rollout([a], add_residual=False)[0], [[0.5, 0.5], [0.0, 0.0]]
    )


def test_rows_sum_to_one_and_tensor_input():
    rng = np.random.default_rng(0)
    maps = [keras.ops.softmax(rng.normal(size=(2, 3, 5, 5)), axis=-1) for _ in range(3)]
    result = attention_rollout(maps)
    assert result.shape == (2, 5, 5)
    np.testing.assert_allclose(result.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "weights, kwargs, match",
    [
        (np.ones((1, 1, 2, 2)), {}, "non-empty list"),
        ([], {}, "non-empty list"),
        ([np.ones((1, 2, 2))], {}, "rank 4"),
        ([np.ones((1, 1, 2, 3))], {}, "self-attention maps"),
        ([np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))], {}, r"weights\[1\]"),
        ([-np.ones((1, 1, 2, 2))], {}, "non-negative"),
        ([np.ones((1, 1, 2, 2))], {"head_fusion": "median"}, "head_fusion"),
    ],
)
def test_errors(weights, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_rollout(weights, **kwargs)


def test_add_residual_must_be_bool():
    with pytest.raises(TypeError, match="add_residual"):
        attention_rollout([np.ones((1, 1, 2, 2))], add_residual=1)
