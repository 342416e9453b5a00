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

from keras_attention.ops.attention import check_qkv, empty_attention
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
            `favor_random_features`.
        chunk_size: chunk length C of the causal prefix sums.
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
    query = ops.convert_to_tensor(query)
    key = ops.convert_to_tensor(key)
    value = ops.convert_to_tensor(value)
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
    q = ops.reshape(ops.cast(query, "float32"), (b_dyn, t_dyn, k, g, h))  # (B, T, K, G, H)
    rescale = eps == 0  # per-row feature scales cancel only without eps
    phi_q = _features(q, feature_map, random_features, is_query=True,
                      rescale=rescale)  # (B, T, K, G, M)
    phi_k = _features(ops.cast(key, "float32"), feature_map, random_features,
                      is_query=False, key_mask=key_mask, rescale=rescale)  # (B, S, K, M)
    if key_mask is not None:
        phi_k = phi_k * ops.cast(key_mask, "float32")[:, :, None, None]
    v = ops.cast(value, "float32")  # (B, S, K, V)

    if causal:
        num, den = _causal_sums(phi_q, phi_k, v, chunk_size, t, s)
    else:
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
        shift = ops.max(ops.where(real, x, -1e30), axis=(1, 3), keepdims=True)
        shift = ops.where(shift > -1e29, shift, 0.0)  # every key masked
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
