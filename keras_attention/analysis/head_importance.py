"""Head importance by ablation (Michel et al. 2019)."""

import warnings

import keras
import numpy as np
from keras import ops

from keras_attention.analysis._model_layers import select_layers
from keras_attention.analysis.head_mask import mask_heads


def _batches(data):
    """`data` as a list of `(x, y)` batches: a tuple is one batch, anything else an
    iterable of batches (a list, a generator, a `tf.data.Dataset`)."""
    batches = [data] if isinstance(data, tuple) else list(data)
    if not batches:
        raise ValueError("`data` must hold at least one (x, y) batch. Received: no batch")
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                "`data` must be an (x, y) tuple or an iterable of (x, y) batches. "
                f"Received: a batch of type {type(batch).__name__}"
                + (f" with {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
            )
    return batches


def _mean_loss(model, loss_fn, batches):
    """The loss over all batches, each weighted by its number of samples."""
    total, count = 0.0, 0
    for x, y in batches:
        loss = ops.convert_to_numpy(loss_fn(y, model(x, training=False)))
        size = int(np.shape(keras.tree.flatten(y)[0])[0])
        total += float(np.mean(loss)) * size
        count += size
    return total / count


def head_importance(model, loss_fn, data, layer_names=None):
    """Importance of each attention head: the loss increase when it is masked.

    Following Michel et al. 2019 ("Are Sixteen Heads Really Better than One?"),
    each head of each chosen layer is masked in turn (its output zeroed before the
    layer's output projection, with `mask_heads`) and the loss on `data` is compared
    with the unmasked loss. A large increase marks an important head; values near
    zero (or below) mark heads the model does without. This is the exact ablation,
    not the paper's gradient estimate: it costs `1 + sum(num_heads)` eager passes
    over `data`, so use a few batches.

    Args:
        model: a Keras model; called as `model(x, training=False)`.
        loss_fn: `loss_fn(y_true, y_pred)` returning a scalar or per-sample loss,
            e.g. a `keras.losses.Loss`.
        data: one `(x, y)` batch as a tuple, or an iterable of `(x, y)` batches.
        layer_names: layer paths (or unique layer names) to score. By default every
            attention layer with heads that supports head masking (others are
            skipped with a warning).

    Returns:
        dict `{layer path: NumPy array (num_heads,)}` of
        `loss(head masked) - loss(no mask)`, layers in model order.

    Example:

    >>> scores = head_importance(model, keras.losses.SparseCategoricalCrossentropy(),
    ...                          (x, y))
    >>> scores["encoder_block/self_attention"]
    array([0.41, 0.02, 0.17, 0.09])
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable. Received: loss_fn={loss_fn!r}")
    batches = _batches(data)
    explicit = layer_names is not None
    layers = select_layers(model, layer_names)
    base = _mean_loss(model, loss_fn, batches)
    result = {}
    for path, layer in layers:
        num_heads = getattr(layer, "num_heads", None)
        if num_heads is None or not _supports_head_mask(model, path, layer, batches[0]):
            why = ("has no heads" if num_heads is None
                   else "combines its heads without the per-head output hook")
            if explicit:
                raise ValueError(
                    f"head_importance cannot mask the heads of layer '{path}' "
                    f"({type(layer).__name__}): it {why}. Received: layer_names="
                    f"{list(layer_names) if not isinstance(layer_names, str) else layer_names!r}"
                )
            warnings.warn(
                f"head_importance skips layer '{path}' ({type(layer).__name__}): it {why}.",
                stacklevel=2,
            )
            continue
        scores = np.zeros(num_heads)
        for head in range(num_heads):
            mask = np.ones(num_heads, dtype="float32")
            mask[head] = 0.0
            with mask_heads(model, {path: mask}):
                scores[head] = _mean_loss(model, loss_fn, batches) - base
        result[path] = scores
    return result


def _supports_head_mask(model, path, layer, batch):
    """Whether `layer` applies a head mask: one call with an all-ones mask tells."""
    try:
        with mask_heads(model, {path: np.ones(layer.num_heads, dtype="float32")}):
            model(batch[0], training=False)
    except ValueError:
        if layer.__dict__.get("_head_mask_applied") is False:
            return False
        raise
    return True
