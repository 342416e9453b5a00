"""Scores and masks of the sequence-to-sequence attention layers (Bahdanau, Luong,
monotonic).

Shape legend: B batch, T query (decoder) length, S key (encoder memory) length,
U units.
"""

from keras import ops

from keras_attention import masks as masks_lib


def merge_causal_mask(mask, use_causal_mask, query_length, key_length, query_start=None):
    """AND the bottom-right causal mask into `mask`: `(B|1, T, S)` boolean or None."""
    if not use_causal_mask:
        return mask
    causal = masks_lib.causal_mask(query_length, key_length, query_start)[None]  # (1, T, S)
    return masks_lib.merge_masks(mask, causal)


def additive_energy(query_proj, key_proj, v, bias=None):
    """`v^T tanh(query_proj[t] + key_proj[s] (+ bias))` for every pair `(t, s)`.

    Args:
        query_proj: `(B, T, U)`.
        key_proj: `(B, S, U)`.
        v: `(U,)` scoring vector.
        bias: optional `(U,)` bias inside the tanh.

    Returns:
        `(B, T, S)` energies in the inputs' dtype. The `(B, T, S, U)` intermediate
        is materialised.
    """
    hidden = query_proj[:, :, None, :] + key_proj[:, None, :, :]  # (B, T, S, U)
    if bias is not None:
        hidden = hidden + bias
    return ops.einsum("btsu,u->bts", ops.tanh(hidden), v)  # (B, T, S)


def weight_normalized(v, g):
    """`g * v / ||v||` (Salimans & Kingma 2016 weight normalisation)."""
    norm = ops.sqrt(ops.sum(ops.square(ops.cast(v, "float32"))) + 1e-12)
    return v * ops.cast(g / norm, v.dtype)
