"""Hypothesis strategies, NumPy references and comparison helpers of the property tests.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads, H key head dim, V value head dim, F features.

Arrays are drawn from a seeded NumPy generator (the seed is drawn by Hypothesis), so
an example is a handful of integers and shrinks quickly.
"""

import dataclasses

import keras
import numpy as np
from hypothesis import strategies as st

DTYPES = ("float32", "float16", "bfloat16")
# Absolute and relative tolerance against a float64 reference on the same (rounded)
# inputs, per input dtype.
TOLERANCE = {"float32": (2e-5, 2e-5), "float16": (1e-2, 1e-2), "bfloat16": (6e-2, 4e-2)}
MASK_KINDS = ("none", "keys", "full")


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


def as_dtype(x, dtype):
    """A backend tensor of `x` in `dtype` (bfloat16 has no NumPy dtype)."""
    return keras.ops.cast(keras.ops.convert_to_tensor(x, dtype="float32"), dtype)


def rounded(x, dtype):
    """`x` rounded to `dtype`, as float64: the input a low-precision op really sees."""
    return to_numpy(as_dtype(x, dtype)).astype("float64")


# ---------------------------------------------------------------------- cases
@dataclasses.dataclass(frozen=True)
class OpCase:
    """One draw of per-head attention inputs (arrays come from `arrays()`)."""

    batch: int
    query_length: int
    key_length: int
    kv_heads: int
    groups: int
    head_dim: int
    value_dim: int
    mask_kind: str
    causal: bool
    dtype: str
    seed: int

    @property
    def heads(self):
        return self.kv_heads * self.groups

    def arrays(self, scale=1.0):
        """`q (B, T, N, H)`, `k (B, S, K, H)`, `v (B, S, K, V)` float32 and a boolean
        mask broadcastable to `(B, N, T, S)` (or None)."""
        rng = np.random.default_rng(self.seed)
        b, t, s = self.batch, self.query_length, self.key_length
        q = rng.normal(size=(b, t, self.heads, self.head_dim)).astype("float32") * scale
        k = rng.normal(size=(b, s, self.kv_heads, self.head_dim)).astype("float32")
        v = rng.normal(size=(b, s, self.kv_heads, self.value_dim)).astype("float32")
        return q, k, v, random_mask(rng, self.mask_kind, b, t, s)


def random_mask(rng, kind, b, t, s):
    """None, a key padding mask `(B, 1, 1, S)` or a full mask `(B, 1, T, S)`.

    Padding lengths are uniform in [0, S], so fully padded sequences occur; the
    full mask has random density and some rows forced empty.
    """
    if kind == "none":
        return None
    if kind == "keys":
        lengths = rng.integers(0, s + 1, size=b)
        return (np.arange(s)[None, :] < lengths[:, None])[:, None, None, :]
    density = rng.uniform(0.2, 0.9)
    mask = rng.random((b, t, s)) < density
    mask[rng.random((b, t)) < 0.2] = False  # empty rows
    return mask[:, None]


@st.composite
def op_cases(draw, max_length=9, mask_kinds=MASK_KINDS, dtypes=DTYPES, min_length=1,
             equal_dims=False):
    """Per-head attention inputs: MHA, GQA and MQA head layouts, T != S, masks."""
    kv_heads = draw(st.integers(1, 2))
    head_dim = draw(st.sampled_from((1, 2, 4, 8)))
    value_dim = head_dim if equal_dims else draw(st.sampled_from((head_dim, 3)))
    return OpCase(
        batch=draw(st.integers(1, 3)),
        query_length=draw(st.integers(min_length, max_length)),
        key_length=draw(st.integers(min_length, max_length)),
        kv_heads=kv_heads,
        groups=draw(st.integers(1, 3)),
        head_dim=head_dim,
        value_dim=value_dim,
        mask_kind=draw(st.sampled_from(mask_kinds)),
        causal=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@st.composite
def zero_size_shapes(draw, batch_with_length=True):
    """`(B, T, S)` with at least one zero; `batch_with_length=False` never makes B
    and T zero together (Keras' `EinsumDense` maps `(0, 0, F)` to batch 1)."""
    b, t, s = draw(st.integers(1, 2)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    zero = draw(st.sampled_from(("b", "t", "s", "ts")))
    if zero == "b" and not batch_with_length:
        t = max(t, 1)
    if zero == "b":
        b = 0
    if "t" in zero:
        t = 0
    if "s" in zero:
        s = 0
    return b, t, s


# ---------------------------------------------------------------------- references
def allowed_pairs(b, n, t, s, mask=None, causal=False, window=None):
    """Boolean `(B, N, T, S)`: the (query, key) pairs that may attend.

    `causal` is bottom-right (`j <= i + S - T`); `window` adds `|i + S - T - j| <= w`
    (or `0 <= ... <= w` with `causal`).
    """
    allowed = np.ones((b, n, t, s), bool)
    if mask is not None:
        allowed &= np.broadcast_to(np.asarray(mask, bool), allowed.shape)
    distance = (np.arange(t)[:, None] + (s - t)) - np.arange(s)[None, :]  # (T, S)
    if causal:
        allowed &= distance >= 0
    if window is not None:
        allowed &= (distance <= window) if causal else (np.abs(distance) <= window)
    return allowed


def numpy_attention(q, k, v, allowed, scale=None, bias=None):
    """Softmax attention in float64: `(B, T, N, V)` output and `(B, N, T, S)` weights.

    `allowed (B, N, T, S)`; rows with no allowed key give zeros.
    """
    q, k, v = (np.asarray(a, "float64") for a in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + bias
    return _normalised(np.where(allowed, logits, -np.inf), allowed, v)


def _normalised(logits, allowed, v):
    if logits.shape[-1] == 0:
        weights = np.zeros(logits.shape)
    else:
        top = np.max(logits, axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        weights = np.where(allowed, np.exp(logits - top), 0.0)
        total = weights.sum(-1, keepdims=True)
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.einsum("bnts,bsnv->btnv", weights, v), weights


def numpy_linear_attention(q, k, v, allowed, feature_map, projection=None):
    """Kernel attention `sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)` over
    the allowed pairs, in float64; zero denominators give zero rows."""
    q, k, v = (np.asarray(a, "float64") for a in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)

    def phi(x):
        if feature_map == "elu":
            return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
        if feature_map == "relu":
            return np.maximum(x, 0.0)
        h, m = projection.shape
        x = x * h ** -0.25
        return np.exp(x @ projection - 0.5 * np.sum(x * x, -1, keepdims=True)) / np.sqrt(m)

    scores = np.einsum("btnm,bsnm->bnts", phi(q), phi(k)) * allowed
    den = scores.sum(-1, keepdims=True)
    weights = np.divide(scores, den, out=np.zeros_like(scores), where=den > 0)
    return np.einsum("bnts,bsnv->btnv", weights, v)


# ---------------------------------------------------------------------- checks
def assert_finite(x, what):
    x = to_numpy(x)
    assert np.all(np.isfinite(x)), f"{what}: non-finite values"
    return x


def assert_close(actual, expected, dtype="float32", what="", scale=1.0):
    atol, rtol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy(actual), expected, atol=atol * scale, rtol=rtol,
                               err_msg=what)


def perturbed_keys(rng, k, v, positions):
    """Copies of `k (B, S, ...)`, `v (B, S, ...)` with large changes at `positions
    (B, S)` (a boolean choice of key positions per sequence)."""
    k2, v2 = k.copy(), v.copy()
    k2[positions] += rng.normal(size=k2[positions].shape).astype("float32") * 10.0 + 5.0
    v2[positions] += rng.normal(size=v2[positions].shape).astype("float32") * 10.0 - 5.0
    return k2, v2


def untouched_rows(allowed, positions):
    """`(B, N, T)`: rows that allow none of the perturbed key `positions (B, S)`."""
    return ~np.any(allowed & positions[:, None, None, :], axis=-1)
