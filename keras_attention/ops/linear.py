"""Linear (kernelised) attention: elu + 1, ReLU and Performer FAVOR+ feature maps.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads (N % K == 0, G = N // K), H key head dim, V value head dim, M feature dim
(H for "elu"/"relu", the number of random features for "favor+"), C chunk size,
R number of chunks.
"""

import math
import numbers

import keras
from keras import ops

from keras_attention.ops.attention import (
    check_qkv,
    convert_qkv,
    empty_attention,
    with_gradient,
)
from keras_attention.ops.masked_softmax import MASK_VALUE
from keras_attention.ops.sliding_window import key_padding_mask
from keras_attention.utils.validation import check_choice, check_positive_int

FEATURE_MAPS = ("elu", "relu", "favor+")


def favor_random_features(head_dim, num_random_features, seed=None):
    """Random projection `(H, M)` for Performer's FAVOR+ (Choromanski et al. 2021).

    The `M` projection vectors are block-orthogonal: each block of `H` vectors is
    the orthonormal Q factor of a Gaussian matrix, so vectors within a block are
    exactly orthogonal, and each vector is rescaled to the norm of an independent
    `H`-dimensional Gaussian vector (chi-distributed), so that marginally every
    column is a standard Gaussian vector, as unbiased positive random features need.

    Args:
        head_dim: H, the query/key head size.
        num_random_features: M, the number of random features.
        seed: int, `keras.random.SeedGenerator` or None.

    Returns:
        A float32 `(H, M)` tensor; pass it as `random_features=` to
        `linear_attention` (a layer keeps it as a non-trainable weight).

    Example:

    >>> w = favor_random_features(64, 256, seed=0)
    >>> w.shape
    (64, 256)
    """
    head_dim = check_positive_int("head_dim", head_dim)
    num_random_features = check_positive_int("num_random_features", num_random_features)
    if seed is not None and not isinstance(seed, (numbers.Integral, keras.random.SeedGenerator)):
        raise TypeError(
            "`seed` must be an int, a keras.random.SeedGenerator or None. "
            f"Received: seed={seed!r}"
        )
    num_blocks = -(-num_random_features // head_dim)
    gaussian = keras.random.normal((num_blocks, head_dim, head_dim), dtype="float32",
                                  seed=seed)
    q, r = ops.qr(gaussian)  # (blocks, H, H), orthonormal columns
    # Fix the QR sign ambiguity (sign of R's diagonal) so q is Haar-distributed.
    q = q * ops.sign(ops.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    rows = ops.reshape(ops.transpose(q, (0, 2, 1)), (num_blocks * head_dim, head_dim))
    rows = rows[:num_random_features]  # (M, H), orthonormal within each block
    norm_seed = seed + 1 if isinstance(seed, numbers.Integral) else seed
    norms = ops.norm(keras.random.normal((num_random_features, head_dim), dtype="float32",
                                         seed=norm_seed), axis=-1)  # (M,), chi_H
    return ops.transpose(rows * norms[:, None])  # (H, M)


def linear_attention(
    query,
    key,
    value,
    *,
    feature_map="elu",
    causal=False,
    mask=None,
    num_random_features=None,
    seed=None,
    random_features=None,
    chunk_size=128,
    eps=0.0,
):
    """Linear attention `phi(q) (sum_j phi(k_j) v_j^T) / (phi(q) . sum_j phi(k_j))`.

    Katharopoulos et al. 2020, "Transformers are RNNs": replacing `exp(q . k)` by a
    kernel `phi(q) . phi(k)` lets the key/value sums be formed once, so cost is
    linear in length. Feature maps: `"elu"` is `elu(x) + 1`, `"relu"` is `relu(x)`,
    and `"favor+"` is Performer's positive orthogonal random features
    (Choromanski et al. 2021), `exp(w^T x - |x|^2 / 2) / sqrt(M)` with `q` and `k`
    scaled by `H^-1/4`, so that `phi(q) . phi(k)` estimates `exp(q . k / sqrt(H))`,
    i.e. the result approximates softmax attention. With `causal=True` the sums are
    prefix sums, computed in chunks: a masked `(C, C)` product inside each chunk
    plus the running key/value state of the earlier chunks; nothing is `(T, S)`.
    Without `causal`, sequences longer than 8192 (static length) are processed
    in blocks of 1024 keys, then of queries, so that each block stays in cache:
    each key block's features get their own shift and the key/value sums are
    rescaled to the largest as they merge, which gives the same result as one
    pass. Its gradient is hand-written (a custom gradient, also in blocks, memory
    O(T + S)), not autodiff through the loops. Shorter sequences, or ones of
    unknown length, take one pass differentiated by autodiff.

    Args:
        query: `(B, T, N, H)`.
        key: `(B, S, K, H)` with `N % K == 0`.
        value: `(B, S, K, V)`.
        feature_map: `"elu"`, `"relu"` or `"favor+"`.
        causal: if True, query i attends keys `j <= i + (S - T)` (bottom-right).
        mask: optional key padding mask `(B, S)` or broadcastable to
            `(B, 1, 1, S)`, True on real keys; padded keys have no influence.
        num_random_features: M for `"favor+"` when `random_features` is not given;
            default `round(H * ln(H))` (at least H).
        seed: seed for drawing the FAVOR+ projection when `random_features` is not
            given (then each call draws a new one unless the seed is an int).
        random_features: a fixed `(H, M)` FAVOR+ projection, e.g. from
            `favor_random_features`; it is differentiable like the inputs.
        chunk_size: chunk length C of the causal prefix sums (the non-causal
            blocks have a fixed size).
        eps: added to the denominator. The default 0 keeps the result invariant
            to the shared shift that stabilises the FAVOR+ key features (a max over
            the keys), so with `causal=True` later keys cannot change earlier
            outputs except through float32 underflow (key features more than
            about e^80 apart); zero denominators give zero outputs.

    Returns:
        `(B, T, N, V)` in the query's dtype; computed in float32. A query with no
        allowed key gives zeros.

    Example:

    >>> x = keras.random.normal((2, 1024, 4, 32))
    >>> linear_attention(x, x, x, feature_map="elu", causal=True).shape
    (2, 1024, 4, 32)
    """
    query, key, value = convert_qkv(query, key, value)
    b, t, s, n, k, h, v_dim = check_qkv(query, key, value)
    check_choice("feature_map", feature_map, FEATURE_MAPS)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or eps < 0:
        raise ValueError(f"`eps` must be a non-negative float. Received: eps={eps!r}")
    if feature_map == "favor+":
        random_features = _favor_projection(h, num_random_features, seed, random_features)
    elif random_features is not None or num_random_features is not None:
        raise ValueError(
            "`random_features` and `num_random_features` only apply to "
            f"feature_map='favor+'. Received: feature_map={feature_map!r}"
        )
    key_mask = None if mask is None else key_padding_mask(mask, b, s, ops.shape(key)[1])
    empty = empty_attention(query, key, value)
    if empty is not None:  # no batch, query or key (FAVOR+ maxima need one)
        return empty

    g = n // k
    b_dyn, t_dyn = ops.shape(query)[0], ops.shape(query)[1]
    qf = ops.cast(query, "float32")  # (B, T, N, H)
    kf = ops.cast(key, "float32")  # (B, S, K, H)
    v = ops.cast(value, "float32")  # (B, S, K, V)
    rescale = eps == 0  # per-row feature scales cancel only without eps

    if not causal and any(isinstance(x, int) and x > _ONE_BLOCK_MAX for x in (t, s)):
        plan = _NonCausal(feature_map, random_features, key_mask, eps)
        return ops.cast(plan.attend(qf, kf, v), query.dtype)  # (B, T, N, V)
    q = ops.reshape(qf, (b_dyn, t_dyn, k, g, h))  # (B, T, K, G, H)
    phi_q = _features(q, feature_map, random_features, is_query=True,
                      rescale=rescale)  # (B, T, K, G, M)
    phi_k = _features(kf, feature_map, random_features, is_query=False,
                      key_mask=key_mask, rescale=rescale)  # (B, S, K, M)
    if key_mask is not None:
        phi_k = phi_k * ops.cast(key_mask, "float32")[:, :, None, None]
    if causal:
        num, den = _causal_sums(phi_q, phi_k, v, chunk_size, t, s)
    else:  # short (or of unknown length): in one piece, differentiated by autodiff
        kv = ops.einsum("bskm,bskv->bkmv", phi_k, v)  # (B, K, M, V)
        z = ops.sum(phi_k, axis=1)  # (B, K, M)
        num = ops.einsum("btkgm,bkmv->btkgv", phi_q, kv)  # (B, T, K, G, V)
        den = ops.einsum("btkgm,bkm->btkg", phi_q, z)  # (B, T, K, G)
    den = den[..., None] + eps
    out = num / ops.where(den > 0.0, den, 1.0)  # (B, T, K, G, V); zeros if no key
    return ops.cast(ops.reshape(out, (b_dyn, t_dyn, n, v_dim)), query.dtype)


def _favor_projection(head_dim, num_random_features, seed, random_features):
    if random_features is None:
        if num_random_features is None:
            num_random_features = max(head_dim, int(round(head_dim * math.log(head_dim))))
        return favor_random_features(head_dim, num_random_features, seed)
    random_features = ops.cast(ops.convert_to_tensor(random_features), "float32")
    shape = tuple(random_features.shape)
    if len(shape) != 2 or shape[0] != head_dim:
        raise ValueError(
            f"`random_features` must have shape (head_dim, num_random_features) with "
            f"head_dim={head_dim}. Received: shape={shape}"
        )
    if num_random_features is not None and shape[1] != num_random_features:
        raise ValueError(
            "`random_features` has a different number of features than "
            f"`num_random_features`. Received: shape={shape}, "
            f"num_random_features={num_random_features}"
        )
    return random_features


def _features(x, feature_map, projection, is_query, key_mask=None, rescale=True):
    """Non-negative features phi(x) `(..., M)` of float32 `x (..., H)`.

    With `rescale` (the ratio is invariant: `eps == 0`), the features are divided by
    a positive constant per query, and by one constant shared by all keys of a
    (batch, head): both cancel between numerator and denominator, and they keep
    the largest feature at 1, so that large inputs (e.g. logits times 100) do not
    underflow every feature of a row to 0. Masked keys are left out of the key
    constant; their features are zeroed by the caller.
    """
    if feature_map == "relu":
        return ops.relu(x)
    masked = key_mask is not None and not is_query
    if feature_map == "elu":
        if not rescale:
            return ops.elu(x) + 1.0
        # elu(x) + 1 = exp(x) for x <= 0: the shift max(x) only matters (is < 0)
        # when every entry is negative, so positive entries keep x + 1.
        shift = ops.minimum(_shared_max(x, is_query, key_mask), 0.0)
        if masked:  # zeroed later; keep their exponent finite meanwhile
            x = ops.where(key_mask[:, :, None, None], x, shift)
        return ops.where(x > 0.0, x + 1.0, ops.exp(ops.minimum(x, 0.0) - shift))
    h, m = projection.shape
    x = x * (float(h) ** -0.25)
    wx = ops.einsum("...h,hm->...m", x, projection)  # (..., M)
    sq = 0.5 * ops.sum(x * x, axis=-1, keepdims=True)  # (..., 1)
    exponent = wx - sq if rescale else wx  # the shift comes from this
    shift = _shared_max(exponent, is_query, key_mask)
    if masked:  # zeroed later; keep their exponent finite meanwhile
        exponent = ops.where(key_mask[:, :, None, None], exponent, shift)
    if rescale:
        return ops.exp(exponent - shift) / math.sqrt(m)
    return ops.exp(exponent - sq - shift) / math.sqrt(m)


def _shared_max(x, is_query, key_mask):
    """Per-query max over the last axis, or for keys `(B, S, K, M)` the max over
    (S, M) per (B, K) among the unmasked keys (0 when all are masked); no gradient."""
    if is_query:
        shift = ops.max(x, axis=-1, keepdims=True)
    elif key_mask is None:
        shift = ops.max(x, axis=(1, 3), keepdims=True)  # (B, 1, K, 1)
    else:
        real = key_mask[:, :, None, None]  # (B|1, S, 1, 1)
        shift = ops.max(ops.where(real, x, MASK_VALUE), axis=(1, 3), keepdims=True)
        shift = ops.where(shift > 0.5 * MASK_VALUE, shift, 0.0)  # every key masked
    return ops.stop_gradient(shift)


def _causal_sums(phi_q, phi_k, v, chunk, t, s):
    """Causal numerator `(B, T, K, G, V)` and denominator `(B, T, K, G)` by chunks.

    Computed heads-first, `(B, K, ...)`, so that the batch axes of every product
    lead and XLA multiplies contiguous chunks without transposing them.
    """
    b = ops.shape(phi_q)[0]
    t_dyn, s_dyn = ops.shape(phi_q)[1], ops.shape(phi_k)[1]
    kv_heads, g = phi_q.shape[2], phi_q.shape[3]
    v_dim = v.shape[-1]
    offset = s_dyn - t_dyn  # query i sees keys j <= i + offset
    # Keys before the first query's position form an initial state; queries before
    # the first key see nothing. The rest is aligned: query i <-> key i + offset.
    static = isinstance(offset, int)
    prefix = max(offset, 0) if static else ops.maximum(offset, 0)
    skip = max(-offset, 0) if static else ops.maximum(-offset, 0)
    phi_q = ops.transpose(phi_q, (0, 2, 3, 1, 4))  # (B, K, G, T, M)
    phi_k = ops.transpose(phi_k, (0, 2, 1, 3))  # (B, K, S, M)
    v = ops.transpose(v, (0, 2, 1, 3))  # (B, K, S, V)
    state0 = ops.einsum("bksm,bksv->bkmv", phi_k[:, :, :prefix], v[:, :, :prefix])
    z0 = ops.sum(phi_k[:, :, :prefix], axis=2)  # (B, K, M)
    phi_q, phi_k, v = phi_q[:, :, :, skip:], phi_k[:, :, prefix:], v[:, :, prefix:]
    length = t_dyn - skip  # aligned length, == s_dyn - prefix
    if isinstance(t, int) and isinstance(s, int):
        chunk = max(1, min(chunk, min(t, s)))
    num_chunks = (length + chunk - 1) // chunk  # R
    pad = num_chunks * chunk - length

    def chunks(x, axis):
        widths = [[0, 0]] * len(x.shape)
        widths[axis] = [0, pad]
        x = ops.pad(x, widths)
        return ops.reshape(x, tuple(ops.shape(x)[:axis]) + (num_chunks, chunk)
                           + tuple(x.shape[axis + 1:]))

    qc = chunks(phi_q, 3)  # (B, K, G, R, C, M)
    kc = chunks(phi_k, 2)  # (B, K, R, C, M)
    vc = chunks(v, 2)  # (B, K, R, C, V)
    # Inside each chunk: a masked (C, C) product.
    scores = ops.einsum("bkgrqm,bkrsm->bkgrqs", qc, kc)  # (B, K, G, R, C, C)
    scores = scores * ops.tril(ops.ones((chunk, chunk), dtype="float32"))
    num = ops.einsum("bkgrqs,bkrsv->bkgrqv", scores, vc)  # (B, K, G, R, C, V)
    den = ops.sum(scores, axis=-1)  # (B, K, G, R, C)
    # Across chunks: the state of all earlier chunks (exclusive prefix sum).
    chunk_kv = ops.einsum("bkrsm,bkrsv->bkrmv", kc, vc)  # (B, K, R, M, V)
    chunk_z = ops.sum(kc, axis=3)  # (B, K, R, M)
    prev_kv = ops.cumsum(chunk_kv, axis=2) - chunk_kv + state0[:, :, None]
    prev_z = ops.cumsum(chunk_z, axis=2) - chunk_z + z0[:, :, None]
    num = num + ops.einsum("bkgrqm,bkrmv->bkgrqv", qc, prev_kv)
    den = den + ops.einsum("bkgrqm,bkrm->bkgrq", qc, prev_z)
    num = ops.reshape(num, (b, kv_heads, g, num_chunks * chunk, v_dim))[:, :, :, :length]
    den = ops.reshape(den, (b, kv_heads, g, num_chunks * chunk))[:, :, :, :length]
    num = ops.transpose(num, (0, 3, 1, 2, 4))  # (B, T', K, G, V)
    den = ops.transpose(den, (0, 3, 1, 2))  # (B, T', K, G)
    # Queries that precede every key: zeros.
    num = ops.pad(num, [[0, 0], [skip, 0], [0, 0], [0, 0], [0, 0]])
    den = ops.pad(den, [[0, 0], [skip, 0], [0, 0], [0, 0]])
    return num, den


# The non-causal op works in blocks of `_BLOCK_ROWS` keys or queries once a
# sequence is longer than `_ONE_BLOCK_MAX`: a block of 1024 rows of 4 heads of 64
# (1 MB per array) and what is computed from it stays in cache, where whole
# (S, K, M) arrays do not; shorter sequences are as fast in one piece (measured
# on 2 cores, elu, 4 heads of 64, XLA: equal at 8192; blocks 5-10% faster at
# 16384, 15-22% at 32768-65536, and a training step 14-17% faster at 65536+).
_BLOCK_ROWS = 1024
_ONE_BLOCK_MAX = 8192


def _dim(x, axis):
    """Static size of `x.shape[axis]`, or a scalar tensor when it is unknown."""
    size = x.shape[axis]
    return size if size is not None else ops.shape(x)[axis]


class _Blocks:
    """Blocks of axis 1 (the sequence): `count` blocks of `rows`, then a shorter
    `tail`; or the whole axis as one block when its length is at most
    `_ONE_BLOCK_MAX` or unknown (blocks need static shapes)."""

    def __init__(self, length):
        self.whole = not isinstance(length, int) or length <= _ONE_BLOCK_MAX
        if not self.whole:
            self.rows = _BLOCK_ROWS
            self.count, self.tail = divmod(length, self.rows)

    def take(self, x, start, size):
        """Rows `start:start + size` of `x` along axis 1; `start` may be traced."""
        if self.whole:
            return x
        starts = [0] * len(x.shape)
        starts[1] = start
        shape = [_dim(x, i) for i in range(len(x.shape))]
        shape[1] = size
        return ops.slice(x, starts, shape)

    def buffer(self, shape):
        """Zeros to `write` the blocks of a result into (None when whole)."""
        return None if self.whole else ops.zeros(shape, dtype="float32")

    def write(self, buffer, start, block):
        if self.whole:
            return block
        return ops.slice_update(buffer, [0, start] + [0] * (len(buffer.shape) - 2),
                                block)

    def run(self, step, carry):
        """`carry = step(start, size, carry)` for every block, in order."""
        if self.whole:
            return step(0, None, carry)
        carry = ops.fori_loop(0, self.count,
                              lambda i, c: step(i * self.rows, self.rows, c), carry)
        if self.tail:
            carry = step(self.count * self.rows, self.tail, carry)
        return carry


class _NonCausal:
    """Non-causal linear attention in blocks, forward and (custom) backward.

    Forward: a loop over blocks of keys accumulates `kv = sum_j phi(k_j) v_j^T`
    `(B, K, M, V)` and `z = sum_j phi(k_j)` `(B, K, M)`. Each block's key features
    use the block's own shift `c_r` (the max in `_features`); the running sums are
    rescaled to the larger shift as they merge, `kv <- kv e^(c - c') + kv_r
    e^(c_r - c')` with `c' = max(c, c_r)`, as an online softmax merges row maxima,
    so the result equals that of one shift shared by all keys. Then a loop over
    blocks of queries writes `phi(q) kv / (phi(q) . z + eps)`. Each block is read
    from memory once, and what is computed from it stays in cache.

    Backward (a custom gradient; autodiff through the loops would be slow): with
    `out = num / den`, `num = phi(q) kv`, `den = phi(q) . z + eps`, per block of
    queries `d num = d out / den`, `d den = -(d out . out) / den`,
    `d phi(q) = d num kv^T + d den z`, and the sums `d kv = phi(q)^T d num`,
    `d z = phi(q)^T d den`; then per block of keys `d phi(k) = v d kv^T + d z`,
    `d v = phi(k) d kv`. The feature maps are differentiated by hand with their
    shifts held constant, as `_features` does. Memory is O(T + S).
    """

    def __init__(self, feature_map, projection, key_mask, eps):
        self.feature_map = feature_map
        self.projection = projection  # (H, M) for "favor+", else None
        self.key_mask = key_mask  # (B|1, S) bool or None
        self.eps = float(eps)
        self.rescale = eps == 0
        # Maps with a shift shared by the keys: elu + 1 when rescaled, FAVOR+.
        self.shifted = feature_map == "favor+" or (feature_map == "elu" and self.rescale)

    def attend(self, query, key, value):
        """query `(B, T, N, H)`, key `(B, S, K, H)`, value `(B, S, K, V)`, float32;
        returns `(B, T, N, V)`."""
        if self.projection is None:
            return with_gradient(lambda q, k, v: self.forward(q, k, v, None), self.backward,
                                 query, key, value)
        return with_gradient(self.forward, self.backward, query, key, value, self.projection)

    # ------------------------------------------------------------ feature maps
    def _exponent(self, x, w):
        """What the shift is the max of, `(..., M)`, and `|x|^2 / 2` for FAVOR+."""
        if self.feature_map != "favor+":
            return x, None
        x = x * (float(w.shape[0]) ** -0.25)
        wx = ops.einsum("...h,hm->...m", x, w)  # (..., M)
        sq = 0.5 * ops.sum(x * x, axis=-1, keepdims=True)  # (..., 1)
        return (wx - sq if self.rescale else wx), sq

    def _phi(self, e, sq, shift, w):
        """Features from the exponent `e` and the shift, as `_features` forms them."""
        if self.feature_map == "relu":
            return ops.relu(e)
        if self.feature_map == "elu":
            if not self.rescale:
                return ops.elu(e) + 1.0
            return ops.where(e > 0.0, e + 1.0, ops.exp(ops.minimum(e, 0.0) - shift))
        m = w.shape[1]
        if self.rescale:
            return ops.exp(e - shift) / math.sqrt(m)
        return ops.exp(e - sq - shift) / math.sqrt(m)

    def _query_features(self, x, w):
        """phi(q) `(B, C, K, G, M)` of `x (B, C, K, G, H)`, a shift per query."""
        e, sq = self._exponent(x, w)
        shift = None
        if self.shifted:
            shift = ops.max(e, axis=-1, keepdims=True,
                            initial=MASK_VALUE)  # (B, C, K, G, 1)
            if self.feature_map == "elu":
                shift = ops.minimum(shift, 0.0)
        return self._phi(e, sq, shift, w)

    def _key_features(self, x, valid, w, shift=None):
        """phi(k) `(B, C, K, M)` of `x (B, C, K, H)`, zeros on invalid keys, and
        the shift `(B, 1, K, 1)`: the one given, else the max over the valid keys
        (`MASK_VALUE` if none; their features are zeros anyway)."""
        e, sq = self._exponent(x, w)
        real = None if valid is None else valid[:, :, None, None]  # (B|1, C, 1, 1)
        if self.shifted:
            if shift is None:
                masked = e if real is None else ops.where(real, e, MASK_VALUE)
                shift = ops.max(masked, axis=(1, 3), keepdims=True,
                                initial=MASK_VALUE)  # (B, 1, K, 1)
                if self.feature_map == "elu":
                    shift = ops.minimum(shift, 0.0)
            if real is not None:  # zeroed below; keep their exponent finite meanwhile
                e = ops.where(real, e, shift)
        elif shift is None:
            shift = ops.zeros((_dim(x, 0), 1, x.shape[2], 1), dtype="float32")
        phi = self._phi(e, sq, shift, w)
        if real is not None:
            phi = phi * ops.cast(real, "float32")
        return phi, shift

    def _chain(self, x, phi, dphi, w):
        """d x `(..., H)` from d phi `(..., M)`, and d w `(H, M)` for FAVOR+."""
        if self.feature_map == "relu":
            return ops.where(x > 0.0, dphi, 0.0), None
        if self.feature_map == "elu":  # d(elu(x) + 1) = 1, or exp(x - shift) = phi
            return dphi * ops.where(x > 0.0, 1.0, phi), None
        # d exp(w^T xs - |xs|^2 / 2 - shift) = phi (w - xs), with xs = x H^-1/4
        h, m = w.shape
        scale = float(h) ** -0.25
        xs = x * scale
        de = dphi * phi  # (..., M)
        dxs = ops.einsum("...m,hm->...h", de, w) - xs * ops.sum(de, axis=-1, keepdims=True)
        dw = ops.matmul(ops.transpose(ops.reshape(xs, (-1, h))), ops.reshape(de, (-1, m)))
        return dxs * scale, dw  # (..., H), (H, M)

    @staticmethod
    def _split_heads(x, kv_heads):
        """`(B, C, N, D)` -> `(B, C, K, G, D)`."""
        shape = [_dim(x, 0), _dim(x, 1), kv_heads, x.shape[2] // kv_heads, x.shape[3]]
        return ops.reshape(x, shape)

    @staticmethod
    def _merge_heads(x):
        """`(B, C, K, G, D)` -> `(B, C, N, D)`."""
        return ops.reshape(x, [_dim(x, 0), _dim(x, 1), x.shape[2] * x.shape[3], x.shape[4]])

    # ------------------------------------------------------------ forward
    def forward(self, query, key, value, w):
        b, kv_heads, v_dim = _dim(key, 0), key.shape[2], value.shape[3]
        m = key.shape[3] if w is None else w.shape[1]
        keys, valid = _Blocks(key.shape[1]), self.key_mask

        def key_step(start, size, carry):
            kv, z, c = carry
            phi, c_r = self._key_features(
                keys.take(key, start, size),
                None if valid is None else keys.take(valid, start, size), w)  # (B, C, K, M)
            vb = keys.take(value, start, size)  # (B, C, K, V)
            kv_r = ops.einsum("bskm,bskv->bkmv", phi, vb)  # (B, K, M, V)
            z_r = ops.sum(phi, axis=1)  # (B, K, M)
            c_new = ops.maximum(c, c_r)  # (B, 1, K, 1)
            a, a_r = ops.exp(c - c_new)[:, 0], ops.exp(c_r - c_new)[:, 0]  # (B, K, 1)
            return kv * a[..., None] + kv_r * a_r[..., None], z * a + z_r * a_r, c_new

        init = (ops.zeros((b, kv_heads, m, v_dim), dtype="float32"),
                ops.zeros((b, kv_heads, m), dtype="float32"),
                ops.full((b, 1, kv_heads, 1), MASK_VALUE if self.shifted else 0.0,
                         dtype="float32"))
        kv, z, c = keys.run(key_step, init)
        c = ops.where(c > 0.5 * MASK_VALUE, c, 0.0)  # 0 when every key is masked

        queries = _Blocks(query.shape[1])

        def query_step(start, size, out):
            q = self._split_heads(queries.take(query, start, size), kv_heads)  # (B, C, K, G, H)
            phi = self._query_features(q, w)  # (B, C, K, G, M)
            num = ops.einsum("btkgm,bkmv->btkgv", phi, kv)  # (B, C, K, G, V)
            den = ops.einsum("btkgm,bkm->btkg", phi, z)[..., None] + self.eps
            block = num / ops.where(den > 0.0, den, 1.0)  # zeros where no key is seen
            return queries.write(out, start, self._merge_heads(block))  # (B, C, N, V)

        out = queries.buffer(tuple(_dim(query, i) for i in range(3)) + (v_dim,))
        out = queries.run(query_step, out)  # (B, T, N, V)
        return out, (query, key, value, w, kv, z, c, out)

    # ------------------------------------------------------------ backward
    def backward(self, upstream, residuals):
        query, key, value, w, kv, z, c, out = residuals
        b, kv_heads, h, v_dim = _dim(key, 0), key.shape[2], key.shape[3], value.shape[3]
        favor = w is not None
        upstream = ops.cast(upstream, "float32")  # (B, T, N, V)
        queries = _Blocks(query.shape[1])

        def query_step(start, size, carry):
            dq_all, dkv, dz = carry[:3]
            q = self._split_heads(queries.take(query, start, size), kv_heads)  # (B, C, K, G, H)
            o = self._split_heads(queries.take(out, start, size), kv_heads)  # (B, C, K, G, V)
            do = self._split_heads(queries.take(upstream, start, size), kv_heads)
            phi = self._query_features(q, w)  # (B, C, K, G, M)
            den = ops.einsum("btkgm,bkm->btkg", phi, z) + self.eps  # (B, C, K, G)
            seen = den > 0.0
            dnum = ops.where(seen[..., None], do / ops.where(seen, den, 1.0)[..., None], 0.0)
            dden = -ops.sum(dnum * o, axis=-1)  # (B, C, K, G)
            dphi = (ops.einsum("btkgv,bkmv->btkgm", dnum, kv)
                    + dden[..., None] * z[:, None, :, None, :])  # (B, C, K, G, M)
            dkv = dkv + ops.einsum("btkgm,btkgv->bkmv", phi, dnum)  # (B, K, M, V)
            dz = dz + ops.einsum("btkgm,btkg->bkm", phi, dden)  # (B, K, M)
            dq, dw = self._chain(q, phi, dphi, w)  # (B, C, K, G, H)
            dq_all = queries.write(dq_all, start, self._merge_heads(dq))  # (B, C, N, H)
            return (dq_all, dkv, dz) + ((carry[3] + dw,) if favor else ())

        dw = (ops.zeros(tuple(w.shape), dtype="float32"),) if favor else ()
        init = (queries.buffer(tuple(_dim(query, i) for i in range(4))),
                ops.zeros_like(kv), ops.zeros_like(z)) + dw
        dq, dkv, dz, *dw = queries.run(query_step, init)  # (B, T, N, H), ...

        keys, valid = _Blocks(key.shape[1]), self.key_mask

        def key_step(start, size, carry):
            dk_all, dv_all = carry[:2]
            k = keys.take(key, start, size)  # (B, C, K, H)
            vb = keys.take(value, start, size)  # (B, C, K, V)
            valid_b = None if valid is None else keys.take(valid, start, size)
            phi, _ = self._key_features(k, valid_b, w, shift=c)  # (B, C, K, M)
            dphi = ops.einsum("bkmv,bskv->bskm", dkv, vb) + dz[:, None]  # (B, C, K, M)
            if valid_b is not None:
                dphi = dphi * ops.cast(valid_b, "float32")[:, :, None, None]
            dv = ops.einsum("bskm,bkmv->bskv", phi, dkv)  # (B, C, K, V)
            dk, dw = self._chain(k, phi, dphi, w)  # (B, C, K, H)
            carry_out = (keys.write(dk_all, start, dk), keys.write(dv_all, start, dv))
            return carry_out + ((carry[2] + dw,) if favor else ())

        shape = (b, _dim(key, 1), kv_heads)
        init = (keys.buffer(shape + (h,)), keys.buffer(shape + (v_dim,))) + tuple(dw)
        dk, dv, *dw = keys.run(key_step, init)  # (B, S, K, H), (B, S, K, V)
        return (dq, dk, dv) + tuple(dw)
