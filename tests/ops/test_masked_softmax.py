import numpy as np
import pytest
from keras import ops

from keras_attention.ops import MASK_VALUE, mask_value, masked_softmax
from tests.ops.backend_utils import jit, output_and_grads, to_numpy


def _reference(logits, mask):
    """NumPy softmax over the last axis restricted to `mask`; empty rows are zeros."""
    logits = np.where(mask, logits.astype("float64"), -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(mask, np.exp(logits - row_max), 0.0)
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total > 0.0, total, 1.0)


def _case(shape, seed=0):
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.normal(size=shape)).astype("float32")
    mask = rng.random(shape) < 0.6
    mask[..., 0, :] = False  # one fully masked row per leading index
    return logits, mask


def test_mask_value_is_finite_and_far_below_logits_in_every_float_type():
    assert MASK_VALUE == mask_value("float32") == -1e30
    assert mask_value("bfloat16") == -1e30
    for dtype in ("float16", "bfloat16", "float32"):
        value = ops.cast(ops.convert_to_tensor(mask_value(dtype)), dtype)
        for x in (value, value + value):  # held and doubled in `dtype`
            x = float(to_numpy(x))
            assert np.isfinite(x) and x < -3e4, dtype


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 4, 6), (1, 2, 2, 3, 4, 5)])
def test_golden_against_numpy(shape):
    logits, mask = _case(shape)
    got = to_numpy(masked_softmax(logits, mask))
    np.testing.assert_allclose(got, _reference(logits, mask), atol=1e-6)
    assert np.all(got[..., 0, :] == 0.0)  # fully masked rows are zeros


def test_no_mask_is_plain_softmax_in_float32():
    logits, _ = _case((2, 4, 5))
    got = masked_softmax(ops.cast(logits, "float16"))
    assert ops.convert_to_numpy(got).dtype == np.float32
    np.testing.assert_allclose(
        to_numpy(got), _reference(logits.astype("float16").astype("float32"),
                                  np.ones(logits.shape, bool)), atol=1e-6
    )


def test_axis_of_size_one_gives_ones_without_warning():
    got = to_numpy(masked_softmax(np.zeros((2, 3, 1), "float32")))
    np.testing.assert_array_equal(got, np.ones((2, 3, 1)))


def test_broadcast_mask():
    logits, _ = _case((2, 3, 4, 6))
    mask = np.random.default_rng(1).random((2, 1, 1, 6)) < 0.5
    got = to_numpy(masked_softmax(logits, mask))
    np.testing.assert_allclose(got, _reference(logits, np.broadcast_to(mask, logits.shape)),
                               atol=1e-6)


def test_parts_share_one_softmax():
    logits, mask = _case((2, 3, 4, 9))
    parts = masked_softmax([logits[..., :4], logits[..., 4:]], [mask[..., :4], None])
    full_mask = np.concatenate([mask[..., :4], np.ones_like(mask[..., 4:])], axis=-1)
    got = np.concatenate([to_numpy(p) for p in parts], axis=-1)
    np.testing.assert_allclose(got, _reference(logits, full_mask), atol=1e-6)


def test_gradients_are_finite_on_fully_masked_rows():
    logits, mask = _case((2, 4, 5))
    cotangent = np.random.default_rng(2).normal(size=logits.shape).astype("float32")
    out, (grad,) = output_and_grads(lambda x: masked_softmax(x, mask), [logits], cotangent)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[:, 0] == 0.0)  # a fully masked row has no gradient
    assert np.all(grad[~mask] == 0.0)
    # d softmax: p * (c - sum(p * c)) on the allowed entries.
    p = _reference(logits, mask)
    expected = p * (cotangent - np.sum(p * cotangent, axis=-1, keepdims=True))
    np.testing.assert_allclose(grad, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 2, 2, 3, 4, 5)])
def test_matches_under_xla(shape):
    logits, mask = _case(shape)
    eager = to_numpy(masked_softmax(logits, mask))
    compiled = to_numpy(jit(lambda x, m: masked_softmax(x, m))(logits, mask))
    np.testing.assert_allclose(compiled, eager, atol=1e-6)
