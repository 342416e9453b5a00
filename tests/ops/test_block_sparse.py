import numpy as np
import pytest
from keras import ops

from keras_attention.ops.block_sparse import (
    attend_parts,
    block_key_masks,
    check_same_length,
    gather_valid,
    pad_sequence,
    parts_rows,
)
from tests.ops.backend_utils import jit, to_numpy


def _parts(seed=0):
    """Two parts of a row over (B, K, G, R, C) = (2, 1, 2, 3, 4): 5 and 3 keys."""
    rng = np.random.default_rng(seed)
    logits = [rng.normal(size=(2, 1, 2, 3, 4, n)).astype("float32") for n in (5, 3)]
    valid = [rng.random((2, 3, 4, n)) < 0.6 for n in (5, 3)]
    valid[0][:, 0, 0] = False
    valid[1][:, 0, 0] = False  # query (block 0, row 0) has no allowed key
    values = [rng.normal(size=(2, 3, n, 1, 6)).astype("float32") for n in (5, 3)]
    return logits, valid, values


def _combine(values):
    def combine(p):  # (B, K, G, R, C, L) -> (B, R, C, K, G, V)
        return ops.einsum("bkgrql,brlkv->brqkgv", p, values)

    return combine


def _reference(logits, valid, values):
    x = np.concatenate(logits, axis=-1).astype("float64")
    m = np.concatenate(valid, axis=-1)[:, None, None]
    x = np.where(m, x, -np.inf)
    row_max = np.max(x, axis=-1, keepdims=True)
    e = np.where(m, np.exp(x - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    total = np.sum(e, axis=-1, keepdims=True)
    p = e / np.where(total > 0.0, total, 1.0)
    return np.einsum("bkgrql,brlkv->brqkgv", p, np.concatenate(values, axis=2))


def test_attend_parts_is_one_softmax_over_all_parts():
    logits, valid, values = _parts()
    parts = [(x, m, _combine(v)) for x, m, v in zip(logits, valid, values)]
    got = to_numpy(attend_parts(parts, "float32"))
    np.testing.assert_allclose(got, _reference(logits, valid, values), atol=1e-5)
    assert np.all(got[:, 0, 0] == 0.0)  # a row with no allowed key is zeros


def test_attend_parts_matches_under_xla():
    logits, valid, values = _parts(1)

    def fn(a, b):
        return attend_parts([(a, valid[0], _combine(values[0])),
                             (b, valid[1], _combine(values[1]))], "float32")

    np.testing.assert_allclose(to_numpy(jit(fn)(*logits)), to_numpy(fn(*logits)), atol=1e-5)


def test_parts_rows():
    _, valid, _ = _parts()
    rows = to_numpy(parts_rows(valid, 2, 10, 3, 4)) > 0
    expected = np.any(np.concatenate(valid, axis=-1), axis=-1).reshape(2, 12)[:, :10]
    np.testing.assert_array_equal(rows, expected)
    assert not rows[:, 0].any()


def test_block_key_masks_and_gather_valid():
    t, tp = 5, 8
    key_valid, pairs = block_key_masks(None, t, tp)
    np.testing.assert_array_equal(key_valid, [[1, 1, 1, 1, 1, 0, 0, 0]])
    assert pairs is None
    padding = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]], bool)[:, None, None, :]
    key_valid, pairs = block_key_masks(padding, t, tp)
    np.testing.assert_array_equal(to_numpy(key_valid),
                                  [[1, 1, 0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    full = np.random.default_rng(0).random((2, 1, t, t)) < 0.5
    key_valid, pairs = block_key_masks(full, t, tp)
    query_pos = np.arange(tp, dtype="int32")[:, None]
    key_pos = np.arange(-1, tp + 1, dtype="int32")[None, :]  # one out of range each side
    valid = to_numpy(gather_valid(key_valid, pairs, t, tp, query_pos, key_pos)) > 0
    expected = np.zeros((2, tp, tp + 2), bool)
    expected[:, :t, 1:t + 1] = full[:, 0]
    np.testing.assert_array_equal(valid[:, :t], expected[:, :t])
    assert not valid[:, :, 0].any() and not valid[:, :, -1].any()


def test_pad_sequence_and_same_length_check():
    x = np.ones((2, 3, 4), "float32")
    assert pad_sequence(x, 3, 3) is x
    np.testing.assert_array_equal(to_numpy(pad_sequence(x, 5, 3))[:, 3:], 0.0)
    check_same_length("Layer", (2, 3, 4), (2, None, 4))
    with pytest.raises(ValueError, match=r"Layer is self-attention.*Received: query.shape"):
        check_same_length("Layer", (2, 3, 4), (2, 5, 4))
