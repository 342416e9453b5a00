"""Entropy of attention distributions.

Shape legend: B batch, N heads, T query length, S key length.
"""

import numpy as np

from keras_attention.analysis._maps import check_weights


def attention_entropy(weights):
    """Entropy, in nats, of each query row's attention distribution.

    `H = -sum_j p_j * log(p_j)` over the keys, with `0 * log 0 = 0`: masked keys
    (zero weight) do not count, and a fully masked row (all zeros) has entropy 0.
    Low entropy means a focused head, `log(S)` a uniform one. Rows are taken as given
    (not renormalised).

    Args:
        weights: attention weights `(B, N, T, S)`, tensor or NumPy array.

    Returns:
        NumPy array `(B, N, T)`.

    Example:

    >>> attention_entropy(np.full((1, 1, 1, 4), 0.25))  # log(4)
    array([[[1.38629436]]])
    """
    p = check_weights(weights, "weights")  # (B, N, T, S)
    logs = np.log(np.where(p > 0, p, 1.0))  # log p, 0 where p == 0
    return -np.sum(p * logs, axis=-1)  # (B, N, T)
