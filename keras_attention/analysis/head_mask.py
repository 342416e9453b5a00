"""Masking attention heads of a model for ablation studies."""

import contextlib

import numpy as np

from keras_attention.analysis._model_layers import layer_hook, select_layers


@contextlib.contextmanager
def mask_heads(model, head_masks):
    """Scale (or zero) the outputs of chosen attention heads inside a `with` block.

    Each mask multiplies the per-head outputs of a layer just before its output
    projection combines the heads, as in the head ablations of Michel et al. 2019
    ("Are Sixteen Heads Really Better than One?"): a 0 removes the head's
    contribution, a 1 keeps it. Supported by `MultiHeadAttention` and the layers that
    share its head combination (`TalkingHeadsAttention`, `LocalAttention`,
    `AdaptiveSpanAttention`, `SparseAttention`, `BlockSparseAttention`, and the
    inner layers of `CrossModalAttention` and `AttentionPooling`); a layer that
    combines its heads on its own path raises a `ValueError` when called with a
    mask. The masks act on eager and traced calls alike (they are fixed when a
    function is traced).

    Args:
        model: a Keras model or layer.
        head_masks: dict `{layer path or unique layer name: mask}`, each mask a
            sequence of `num_heads` numbers.

    Returns:
        A context manager; the masks are removed when the block exits.

    Example:

    >>> with mask_heads(model, {"encoder_block/self_attention": [1, 0, 1, 1]}):
    ...     y = model(x)  # head 1 of that layer removed
    """
    if not isinstance(head_masks, dict):
        raise TypeError(
            "`head_masks` must be a dict {layer path: mask}. "
            f"Received: head_masks={head_masks!r}"
        )
    layers, masks = [], []
    for name, mask in head_masks.items():
        (path, layer), = select_layers(model, [name], argument="head_masks")
        num_heads = getattr(layer, "num_heads", None)
        if num_heads is None:
            raise ValueError(
                f"Layer '{path}' ({type(layer).__name__}) has no heads to mask. "
                f"Received: head_masks key {name!r}"
            )
        mask = np.asarray(mask, dtype="float32")
        if mask.shape != (num_heads,):
            raise ValueError(
                f"The mask of layer '{path}' must have shape ({num_heads},), one entry per "
                f"head. Received: shape={mask.shape}"
            )
        layers.append(layer)
        masks.append(mask)
    with layer_hook(layers, "_head_mask", masks):
        yield
