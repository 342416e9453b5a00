"""Attention flow (Abnar & Zuidema 2020).

Shape legend: L layers, B batch, N heads, T sequence length.
"""

import numpy as np

from keras_attention.analysis._maps import fused_layer_maps
from keras_attention.utils.validation import check_positive_int


def attention_flow(weights, head_fusion="mean", add_residual=True,
                   capacity_scale=1_000_000):
    """Attention flow: the maximum flow from each input token to each output position.

    From Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers". The
    layers form a graph with `L + 1` rows of T nodes; node j of row l links to node
    i of row l + 1 with capacity `A_l[i, j]`, the layer's attention with heads fused
    and the residual added and renormalised exactly as in `attention_rollout`. The
    flow value for (i, j) is the maximum flow from input token j (row 0) to output
    position i (row L). Where rollout multiplies the layers (every path counts),
    flow is limited by each path's narrowest edge.

    Cost: one max-flow problem per (batch item, i, j), `B * T**2` problems on a
    graph of `(L + 1) * T` nodes and `L * T**2` edges, solved with
    `scipy.sparse.csgraph.maximum_flow` (Dinic's algorithm). Meant for short
    sequences (T up to a few dozen).

    The solver needs integer capacities: they are `round(A * capacity_scale)` and
    the flows are divided by `capacity_scale` again. Each rounded capacity is off by
    at most `0.5 / capacity_scale`, so a flow value is off by at most that times the
    number of edges of a minimum cut (at most `L * T**2 / (2 * capacity_scale)`, in
    practice about `T / capacity_scale`).

    Args:
        weights: list of `(B, N, T, T)` self-attention weights, one per layer, first
            layer first.
        head_fusion: `"mean"`, `"max"` or `"min"` over heads.
        add_residual: add the identity for the residual connection.
        capacity_scale: positive int, the integer scaling of the capacities
            (`capacity_scale * T` must stay below 2**31).

    Returns:
        NumPy array `(B, T, T)`: `flow[b, i, j]` from input token j to output
        position i.

    Example:

    >>> a = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1, 1, 2, 2)
    >>> attention_flow([a], add_residual=False)[0]
    array([[1. , 0. ],
           [0.5, 0.5]])
    """
    try:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import maximum_flow
    except ImportError as error:  # pragma: no cover - scipy comes with scikit-learn
        raise ImportError("attention_flow needs scipy: `pip install scipy`.") from error
    capacity_scale = check_positive_int("capacity_scale", capacity_scale)
    maps = fused_layer_maps(weights, head_fusion, add_residual)  # L x (B, T, T)
    num_layers = len(maps)
    b, t, _ = maps[0].shape
    if capacity_scale * t >= 2**31:
        raise ValueError(
            "`capacity_scale * seq_len` must stay below 2**31 (int32 capacities). "
            f"Received: capacity_scale={capacity_scale}, seq_len={t}"
        )
    nodes = (num_layers + 1) * t
    flows = np.zeros((b, t, t))
    for item in range(b):
        capacity = np.zeros((nodes, nodes), dtype="int32")
        for layer, a in enumerate(maps):
            rows = slice(layer * t, (layer + 1) * t)  # node j of row `layer`
            cols = slice((layer + 1) * t, (layer + 2) * t)  # node i of the row above
            capacity[rows, cols] = np.rint(a[item].T * capacity_scale).astype("int32")
        graph = csr_matrix(capacity)
        for i in range(t):
            sink = num_layers * t + i
            for j in range(t):
                value = maximum_flow(graph, j, sink).flow_value
                flows[item, i, j] = value / capacity_scale
    return flows
