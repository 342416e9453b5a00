"""Attention rollout (Abnar & Zuidema 2020).

Shape legend: L layers, B batch, N heads, T sequence length.
"""

import numpy as np

from keras_attention.analysis._maps import fused_layer_maps


def attention_rollout(weights, head_fusion="mean", add_residual=True):
    """Attention rollout: how much each output position draws on each input token.

    From Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers". Each
    layer's heads are fused (mean, max or min over heads); with `add_residual` the
    residual connection is modelled as `0.5 * A + 0.5 * I`; rows are renormalised to
    sum to 1, and the layers are multiplied from the first up:
    `R = A_L @ ... @ A_2 @ A_1`. Rows that are all zero (fully masked queries without
    the residual term) stay zero.

    Args:
        weights: list of self-attention weights, one `(B, N, T, T)` array per layer,
            first layer first (e.g. from `capture_attention`); the number of heads
            may differ between layers. Tensors or NumPy arrays.
        head_fusion: `"mean"`, `"max"` or `"min"` over heads.
        add_residual: add the identity for the residual connection.

    Returns:
        NumPy array `(B, T, T)`: row i is output position i's attribution over the
        input tokens.

    Example:

    >>> a = np.array([[[[0.5, 0.5], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    >>> attention_rollout([a])[0]
    array([[0.75, 0.25],
           [0.  , 1.  ]])
    """
    maps = fused_layer_maps(weights, head_fusion, add_residual)  # L x (B, T, T)
    result = maps[0]
    for layer_map in maps[1:]:
        result = np.matmul(layer_map, result)  # (B, T, T)
    return result
