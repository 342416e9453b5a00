import numpy as np
import pytest

from keras_attention.analysis import attention_flow, attention_rollout


def test_single_layer_flow_is_the_edge_capacity():
    a = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])
    np.testing.assert_allclose(attention_flow([a], add_residual=False)[0],
                               [[1.0, 0.0], [0.5, 0.5]])


def test_two_layer_graph_hand_computed():
    # Paths j -> k -> i use distinct edges, so flow(i, j) = sum_k min(A1[k, j], A2[i, k]):
    # (0,0): min(1, .5) + min(.5, .5) = 1; (0,1): min(0, .5) + min(.5, .5) = .5;
    # (1,0): min(1, 0) + min(.5, 1) = .5;  (1,1): min(0, 0) + min(.5, 1) = .5.
    a1 = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])
    a2 = np.array([[[[0.5, 0.5], [0.0, 1.0]]]])
    flow = attention_flow([a1, a2], add_residual=False)
    np.testing.assert_allclose(flow[0], [[1.0, 0.5], [0.5, 0.5]])
    # Rollout multiplies instead: [[.75, .25], [.5, .5]].
    np.testing.assert_allclose(attention_rollout([a1, a2], add_residual=False)[0],
                               [[0.75, 0.25], [0.5, 0.5]])


def test_two_layers_match_sum_of_minima_with_residual_and_heads():
    rng = np.random.default_rng(0)
    maps = [rng.dirichlet(np.ones(3), size=(2, 2, 3)) for _ in range(2)]  # (B, N, T, T)
    flow = attention_flow(maps)
    fused = []
    for w in maps:
        a = 0.5 * w.mean(axis=1) + 0.5 * np.eye(3)
        fused.append(a / a.sum(-1, keepdims=True))
    a1, a2 = fused
    # flow[b, i, j] = sum_k min(a1[b, k, j], a2[b, i, k])
    expected = np.array([[[sum(min(a1[b, k, j], a2[b, i, k]) for k in range(3))
                           for j in range(3)] for i in range(3)] for b in range(2)])
    assert flow.shape == (2, 3, 3)
    np.testing.assert_allclose(flow, expected, atol=3 * 3e-6)


def test_errors():
    a = np.ones((1, 1, 2, 2)) / 2
    with pytest.raises(ValueError, match="capacity_scale"):
        attention_flow([a], capacity_scale=0)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        attention_flow([a], capacity_scale=2**30)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_flow([a], head_fusion="sum")
