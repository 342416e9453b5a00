import numpy as np
import pytest

from keras_attention.ops import GlobalKeys, blocked_band_attention
from keras_attention.ops.band import PaddingMasks, dense_pattern, rows_with_keys, split_masks
from tests.ops.backend_utils import jit, quick_output_and_grads, to_numpy


def _inputs(t, s, n=4, k=2, h=8, v=6, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, t, n, h)).astype("float32")
    key = rng.normal(size=(2, s, k, h)).astype("float32")
    value = rng.normal(size=(2, s, k, v)).astype("float32")
    return q, key, value, rng


def _allowed(t, s, window, causal, key_valid=None, mask=None, global_positions=()):
    """Dense `(B|1, T, S)` pattern of the band kernel, in NumPy."""
    i = np.arange(t)[:, None] + (s - t)  # query i sits at key position i + S - T
    j = np.arange(s)[None, :]
    band = (0 <= i - j) & (i - j <= window) if causal else np.abs(i - j) <= window
    is_global = np.isin(j, global_positions)
    allowed = band | (is_global & (j <= i) if causal else is_global)
    allowed = allowed[None]
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, :]
    if mask is not None:
        allowed = allowed & mask
    return allowed


def _reference(q, k, v, allowed, factors=None):
    """NumPy attention with `allowed (B|1, T, S)` and optional factors `(N, T, S)`
    that multiply the unnormalised weights; rows with no allowed key are zeros."""
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k).astype("float64") / np.sqrt(q.shape[-1])
    allowed = np.broadcast_to(allowed[:, None], logits.shape)
    if factors is not None:
        allowed = allowed & (factors[None] > 0)
        logits = logits + np.log(np.maximum(factors[None], 1e-30))
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    e = np.where(allowed, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    total = np.sum(e, axis=-1, keepdims=True)
    weights = e / np.where(total > 0.0, total, 1.0)
    return np.einsum("bnts,bsnv->btnv", weights, v), np.any(allowed, axis=(1, -1))


CASES = {
    "bidirectional": dict(t=13, s=13, window=2, causal=False, block=4),
    "causal_default_block": dict(t=13, s=13, window=3, causal=True, block=None),
    "t_lt_s": dict(t=9, s=13, window=2, causal=True, block=4),
    "t_gt_s": dict(t=13, s=9, window=3, causal=False, block=5),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_globals", [False, True])
def test_golden_against_numpy_with_masks_and_global_keys(name, with_globals):
    case = CASES[name]
    t, s, w, causal = case["t"], case["s"], case["window"], case["causal"]
    q, k, v, rng = _inputs(t, s)
    key_valid = rng.random((2, s)) < 0.8
    mask = rng.random((2, t, s)) < 0.85
    mask[0, 2] = False  # a fully masked row
    positions = (0, s - 2) if with_globals else ()
    global_keys = None
    if with_globals:
        is_global = np.isin(np.arange(s), positions)[None]
        global_keys = GlobalKeys(np.array([positions], "int32"), np.ones((1, 2), bool),
                                 is_global)
    out, rows = blocked_band_attention(
        q, k, v, window_size=w, causal=causal, key_valid=key_valid, mask=mask,
        global_keys=global_keys, block_size=case["block"],
    )
    allowed = _allowed(t, s, w, causal, key_valid, mask, positions)
    expected, expected_rows = _reference(q, k, v, allowed)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    np.testing.assert_array_equal(np.broadcast_to(to_numpy(rows), (2, t)) > 0, expected_rows)
    assert np.all(to_numpy(out)[0, 2] == 0.0)  # fully masked rows are zeros


def test_soft_mask_scales_the_band_weights():
    t, w = 11, 3
    q, k, v, _ = _inputs(t, t)
    n = q.shape[2]
    scale = np.linspace(0.2, 1.0, n, dtype="float32")

    def soft_mask(distance):  # zero beyond distance 2, a per-head ramp inside
        d = np.abs(np.asarray(distance, "float32"))
        return np.where(d <= 2, scale[:, None, None, None] * (3.0 - d) / 3.0, 0.0)

    out, _ = blocked_band_attention(q, k, v, window_size=w, block_size=4,
                                    soft_mask=lambda d: soft_mask(to_numpy(d)))
    distance = np.arange(t)[:, None] - np.arange(t)[None, :]
    factors = soft_mask(distance[None])[:, 0]  # (N, T, S)
    expected, _ = _reference(q, k, v, _allowed(t, t, w, False), factors)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)


def test_soft_mask_is_not_combined_with_global_keys():
    q = np.zeros((1, 4, 2, 3), "float32")
    keys = GlobalKeys(np.zeros((1, 1), "int32"), np.ones((1, 1), bool), np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match="soft_mask"):
        blocked_band_attention(q, q, q, window_size=1, global_keys=keys,
                               soft_mask=lambda distance: 1.0)


def test_empty_inputs_give_zeros():
    q, k, v, _ = _inputs(5, 0)
    out, rows = blocked_band_attention(q, k, v, window_size=2)
    assert to_numpy(out).shape == (2, 5, 4, 6) and not np.any(to_numpy(out))
    assert not np.any(to_numpy(rows))


@pytest.mark.parametrize("causal", [False, True])
def test_matches_under_xla_with_gradients(causal):
    t, w = 12, 2
    q, k, v, rng = _inputs(t, t)
    key_valid = rng.random((2, t)) < 0.8
    keys = GlobalKeys(np.array([[1]], "int32"), np.ones((1, 1), bool),
                      (np.arange(t) == 1)[None])

    def fn(q, k, v):
        return blocked_band_attention(q, k, v, window_size=w, causal=causal,
                                      key_valid=key_valid, global_keys=keys, block_size=5)[0]

    eager = to_numpy(fn(q, k, v))
    np.testing.assert_allclose(to_numpy(jit(fn)(q, k, v)), eager, atol=1e-5)
    cotangent = rng.normal(size=eager.shape).astype("float32")
    out, grads = quick_output_and_grads(fn, [q, k, v], cotangent)
    np.testing.assert_allclose(out, eager, atol=1e-5)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 2])
def test_rows_with_keys_against_numpy(causal, window):
    t, s = 7, 10
    key_valid = np.zeros((2, s), bool)
    key_valid[0, [0, 9]] = True
    key_valid[1, 4] = True
    got = to_numpy(rows_with_keys(key_valid, t, s, window, causal)) > 0
    w = s if window is None else window
    expected = np.any(_allowed(t, s, w, causal, key_valid), axis=-1)
    np.testing.assert_array_equal(got, expected)


def test_split_masks_and_dense_pattern():
    checked = []

    def check_mask(name, mask, expected):
        checked.append((name, tuple(mask.shape), expected))

    q, k = np.zeros((2, 3, 1, 1), "float32"), np.zeros((2, 4, 1, 1), "float32")
    masks = split_masks(check_mask, q, k, np.ones((2, 3)), np.ones((2, 4)),
                        np.array([[1, 1, 0, 1]] * 2), None)
    assert [c[0] for c in checked] == ["query_mask", "value_mask", "key_mask"]
    assert masks.full is None
    np.testing.assert_array_equal(to_numpy(masks.key), [[1, 1, 0, 1]] * 2)
    dense = dense_pattern(np.ones((1, 3, 4), bool), masks)
    np.testing.assert_array_equal(to_numpy(dense), np.broadcast_to([1, 1, 0, 1], (2, 3, 4)))
    empty = dense_pattern(np.eye(3, 4, dtype=bool)[None], PaddingMasks(None, None, None))
    np.testing.assert_array_equal(to_numpy(empty), np.eye(3, 4)[None])
