"""The mask value and the masked softmax shared by every attention computation.

Shape legend: `...` any leading axes, L the axis normalised over (keys).
"""

from keras import ops

# Maxima of the float types that cannot hold -1e30 (float32, bfloat16 and float64
# all reach beyond 3e38).
_SMALL_FLOAT_MAX = {"float16": 65504.0}


def mask_value(dtype="float32"):
    """The logit given to masked entries in `dtype`: -1e30, or half the most
    negative finite number where that is larger (-32752 in float16).

    Finite, not -inf: a row whose every entry is masked then gives
    `exp(x - max(x)) = 1` instead of NaN (and is zeroed by the caller), and its
    gradient stays finite. -1e30 lies so far below any real logit (ALiBi or
    distance biases on million-token sequences included) that `exp(mask - x)` is
    exactly 0 in float32 and bfloat16, and it can be added to itself or to any
    logit without overflowing. float16 tops out at 65504, where -1e30 would
    overflow to -inf; half its minimum stays finite when two masked terms are
    added. Every kernel here computes its logits in float32, so they all use
    `MASK_VALUE`; the dtype argument is for callers that keep half-precision logits.
    """
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))
    top = _SMALL_FLOAT_MAX.get(name)
    return -1e30 if top is None else -0.5 * top


#: Logit of masked entries in the float32 logits of every kernel of the package.
MASK_VALUE = mask_value("float32")


def softmax(logits, axis=-1):
    """`keras.ops.softmax`, also over an axis of static size 1 (attention over one
    key, as in the first step of cached decoding), where `keras.ops.softmax` warns
    that the axis has size 1. There the softmax is `exp(x - x)`: every weight is 1,
    with a zero gradient (not a missing one)."""
    if logits.shape[axis] == 1:
        return ops.exp(logits - logits)
    return ops.softmax(logits, axis=axis)


def masked_softmax(logits, mask=None):
    """Float32 softmax over the last axis restricted to `mask`; rows with no allowed
    entry give zeros, never NaN.

    Args:
        logits: `(..., L)` tensor (any float dtype; computed in float32), or a list
            of tensors `(..., L_i)` that are the parts of one row: they share one
            softmax, as if concatenated along the last axis, without forming the
            concatenation.
        mask: boolean tensor broadcastable to `logits` (True where allowed), or
            None; for a list of logits, a list of such masks (entries may be None).

    Returns:
        float32 weights shaped like `logits` (a list for a list). Masked entries
        are 0.
    """
    if isinstance(logits, (list, tuple)):
        masks = [None] * len(logits) if mask is None else list(mask)
        return _joint_softmax([ops.cast(x, "float32") for x in logits], masks)
    logits = ops.cast(logits, "float32")
    if len(logits.shape) > 5:  # TensorFlow's softmax kernel takes rank <= 5
        return _joint_softmax([logits], [mask])[0]
    if mask is None:
        return softmax(logits, axis=-1)
    weights = softmax(ops.where(mask, logits, MASK_VALUE), axis=-1)
    return ops.where(mask, weights, 0.0)  # fully masked rows -> zeros


def _joint_softmax(logits, masks):
    """Softmax by hand over the last axes of several parts of each row."""
    logits = [x if m is None else ops.where(m, x, MASK_VALUE)
              for x, m in zip(logits, masks)]
    row_max = None
    for x in logits:
        part_max = ops.max(x, axis=-1, keepdims=True)
        row_max = part_max if row_max is None else ops.maximum(row_max, part_max)
    row_max = ops.stop_gradient(row_max)
    exps = [ops.exp(x - row_max) for x in logits]
    exps = [e if m is None else ops.where(m, e, 0.0) for e, m in zip(exps, masks)]
    total = None
    for e in exps:
        part = ops.sum(e, axis=-1, keepdims=True)
        total = part if total is None else total + part
    total = ops.where(total > 0.0, total, 1.0)  # empty rows -> zeros
    return [e / total for e in exps]
