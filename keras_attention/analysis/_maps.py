"""Checks and conversions shared by the map analyses (rollout, flow, entropy).

Shape legend: L layers, B batch, N heads, T query length, S key length.
"""

import numpy as np
from keras import ops

from keras_attention.utils.validation import check_bool, check_choice

HEAD_FUSIONS = ("mean", "max", "min")


def to_numpy(x, name):
    """`x` (tensor or array-like) as a float64 NumPy array."""
    try:
        array = np.asarray(ops.convert_to_numpy(x), dtype="float64")
    except Exception as error:
        raise TypeError(
            f"`{name}` must be a tensor or array of numbers. Received: {name}={x!r}"
        ) from error
    return array


def check_weights(x, name):
    """One layer's weights as a `(B, N, T, S)` float64 array of non-negative values."""
    array = to_numpy(x, name)
    if array.ndim != 4:
        raise ValueError(
            f"`{name}` must have rank 4 (batch, heads, query_len, key_len). "
            f"Received: shape={array.shape}"
        )
    if np.any(array < 0) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"`{name}` must hold attention probabilities (finite, non-negative). "
            f"Received: values in [{array.min()}, {array.max()}]"
        )
    return array


def check_layer_list(weights):
    """The per-layer self-attention weights as a list of `(B, N, T, T)` arrays."""
    if not isinstance(weights, (list, tuple)) or not weights:
        shape = getattr(weights, "shape", None)
        raise ValueError(
            "`weights` must be a non-empty list of (batch, heads, seq, seq) arrays, one "
            "per layer, first layer first (wrap a single layer in a list). "
            f"Received: {type(weights).__name__}" + (f" with shape={tuple(shape)}"
                                                      if shape is not None else "")
        )
    arrays = [check_weights(w, f"weights[{i}]") for i, w in enumerate(weights)]
    b, _, t, _ = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape[2] != a.shape[3] or a.shape[0] != b or a.shape[2] != t:
            raise ValueError(
                "Every layer's weights must be self-attention maps (batch, heads, seq, seq) "
                f"with the same batch and seq as weights[0] {arrays[0].shape}. "
                f"Received: weights[{i}] with shape={a.shape}"
            )
    return arrays


def fused_layer_maps(weights, head_fusion, add_residual):
    """L x `(B, T, T)`: heads fused, optional `0.5 * A + 0.5 * I`, rows renormalised."""
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    check_bool("add_residual", add_residual)
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion]
    maps = []
    for w in check_layer_list(weights):
        a = fuse(w, axis=1)  # (B, T, T)
        if add_residual:
            a = 0.5 * a + 0.5 * np.eye(a.shape[-1])[None]
        rows = a.sum(axis=-1, keepdims=True)  # (B, T, 1)
        maps.append(np.divide(a, rows, out=np.zeros_like(a), where=rows > 0))
    return maps
