"""Exact attention computed block by block with a running (online) softmax.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads (N % K == 0, G = N // K query heads per key/value head), H key head dim,
V value head dim, C query chunk size, D key chunk size, Tp / Sp the lengths padded
to a multiple of the chunk size, Q number of query chunks, R number of key chunks.

The forward pass is the recurrence of Rabe & Staats (2021) and FlashAttention
(Dao et al. 2022): for each query chunk, a loop over key chunks keeps the running
row maximum `m`, the running softmax denominator `l` and the running un-normalised
output `acc`, so only one `(C, D)` block of logits exists at a time. The backward
pass is FlashAttention's: it saves only the output and the row log-sum-exp and
recomputes each block's probabilities, so gradient memory is linear in length too.
With `causal=True` the blocks above the diagonal are never computed: the loop over
key chunks stops at the diagonal of each query chunk.
"""

import math

from keras import ops

from keras_attention.ops.attention import (
    check_broadcastable,
    check_qkv,
    convert_qkv,
    empty_attention,
    with_gradient,
)
from keras_attention.ops.masked_softmax import MASK_VALUE
from keras_attention.utils.validation import check_positive_int



def chunked_attention(
    query,
    key,
    value,
    *,
    mask=None,
    bias=None,
    causal=False,
    scale=None,
    query_chunk_size=512,
    key_chunk_size=512,
):
    """Exact scaled dot-product attention with memory linear in sequence length.

    Computes `softmax(q k^T * scale + bias) v`, the same result as
    `scaled_dot_product_attention`, one `(query_chunk_size, key_chunk_size)` block
    at a time with an online softmax (Rabe & Staats 2021, "Self-attention Does Not
    Need O(n^2) Memory"; Dao et al. 2022, "FlashAttention"). No `(T, S)` tensor is
    ever formed unless the caller passes one as `mask` or `bias` (it is then sliced
    per block). Key-padding masks `(B, 1, 1, S)` and `causal=True` are handled
    without materialising anything, and with `causal=True` the blocks above the
    diagonal are skipped, not computed and masked. The gradient is a custom
    FlashAttention backward pass that recomputes each block from the saved row
    log-sum-exp, so training memory is linear in length as well. Works under XLA
    (`jit_compile=True`); grouped-query attention never repeats key/value heads.

    Args:
        query: `(B, T, N, H)`.
        key: `(B, S, K, H)` with `N % K == 0`.
        value: `(B, S, K, V)`.
        mask: optional boolean mask broadcastable to `(B, N, T, S)`, True where
            attention is allowed.
        bias: optional additive logits bias broadcastable to `(B, N, T, S)`;
            it receives a gradient.
        causal: if True, query i attends keys `j <= i + (S - T)` (bottom-right).
        scale: logit scale, default `1 / sqrt(H)`.
        query_chunk_size: queries per block; T need not be a multiple.
        key_chunk_size: keys per block; S need not be a multiple.

    Returns:
        `(B, T, N, V)` in the query's dtype. Logits, softmax statistics and
        accumulators are float32 under mixed precision. A query row with no
        allowed key gives zeros, never NaN.

    Example:

    >>> q = keras.random.normal((1, 1000, 4, 64))
    >>> kv = keras.random.normal((1, 1000, 2, 64))
    >>> chunked_attention(q, kv, kv, causal=True, query_chunk_size=256).shape
    (1, 1000, 4, 64)
    """
    query, key, value = convert_qkv(query, key, value)
    b, t, s, n, k, h, _ = check_qkv(query, key, value)
    query_chunk_size = check_positive_int("query_chunk_size", query_chunk_size)
    key_chunk_size = check_positive_int("key_chunk_size", key_chunk_size)
    target = (b, n, t, s)
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        check_broadcastable("mask", mask, target)
    if bias is not None:
        bias = ops.convert_to_tensor(bias)
        check_broadcastable("bias", bias, target)
    scale = 1.0 / math.sqrt(h) if scale is None else float(scale)
    empty = empty_attention(query, key, value)
    if empty is not None:  # no batch, query or key: nothing to loop over
        return empty
    plan = _ChunkPlan(query, key, mask, bias, bool(causal), scale,
                      query_chunk_size, key_chunk_size)
    if bias is None:
        return with_gradient(lambda q, kk, vv: plan.forward(q, kk, vv, None),
                             lambda upstream, res: plan.backward(upstream, res)[:3],
                             query, key, value)
    return with_gradient(plan.forward, plan.backward, query, key, value, bias)


def _dim(x, axis):
    """Static size of `x.shape[axis]`, or a scalar tensor when it is unknown."""
    size = x.shape[axis]
    return size if size is not None else ops.shape(x)[axis]


def _ceil_div(a, b):
    return (a + b - 1) // b


def _slice_axis(x, axis, start, size):
    """`x[..., start:start + size, ...]` along `axis`; `start` may be traced."""
    starts = [0] * len(x.shape)
    starts[axis] = start
    shape = [_dim(x, i) for i in range(len(x.shape))]
    shape[axis] = size
    return ops.slice(x, starts, shape)


def _pad_axis(x, axis, amount, value=0):
    """Pad `x` at the end of `axis` by `amount` (a no-op when statically 0)."""
    if isinstance(amount, int) and amount == 0:
        return x
    widths = [[0, 0] for _ in x.shape]
    widths[axis] = [0, amount]
    return ops.pad(x, widths, constant_values=value)


def _to_rank5(x, num_heads, kv_heads):
    """`(B|1, N|1, T|1, S|1)` (any rank <= 4) -> `(B|1, K|1, G|1, T|1, S|1)`."""
    while len(x.shape) < 4:
        x = ops.expand_dims(x, 0)
    b, heads, t, s = (_dim(x, i) for i in range(4))
    if heads == 1:
        return ops.expand_dims(x, 2)
    return ops.reshape(x, (b, kv_heads, num_heads // kv_heads, t, s))


class _ChunkPlan:
    """Static sizes, masks and the block computations of one chunked attention call."""

    def __init__(self, query, key, mask, bias, causal, scale, query_chunk_size,
                 key_chunk_size):
        self.causal = causal
        self.scale = scale
        self.b = _dim(query, 0)
        self.t, self.s = _dim(query, 1), _dim(key, 1)
        self.n, self.k = query.shape[2], key.shape[2]
        self.g = self.n // self.k
        self.h = query.shape[3]
        static_t, static_s = isinstance(self.t, int), isinstance(self.s, int)
        self.cq = min(query_chunk_size, self.t) if static_t else query_chunk_size
        self.ck = min(key_chunk_size, self.s) if static_s else key_chunk_size
        self.cq, self.ck = max(self.cq, 1), max(self.ck, 1)
        self.nq, self.nk = _ceil_div(self.t, self.cq), _ceil_div(self.s, self.ck)
        self.tp, self.sp = self.nq * self.cq, self.nk * self.ck
        # Padded keys must be masked; padded queries are sliced off.
        self.pad_keys = not (static_s and self.sp == self.s)
        self.offset = self.s - self.t  # causal: query i sees keys j <= i + offset
        self.mask = None
        if mask is not None:
            mask = _to_rank5(ops.cast(mask, "bool"), self.n, self.k)
            self.mask = self._pad_tail(mask, False)  # (B|1, K|1, G|1, Tp|1, Sp|1)
        self.bias_shape = None if bias is None else tuple(bias.shape)
        self.bias_dims = None
        if bias is not None:
            full = (1,) * (4 - len(bias.shape)) + tuple(bias.shape)
            self.bias_dims = tuple(d != 1 for d in full)  # (B, N, T, S) not broadcast

    def _pad_tail(self, x, value):
        """Pad the last two (T, S) axes of a rank-5 mask/bias to (Tp, Sp) if not 1."""
        if x.shape[3] != 1:
            x = _pad_axis(x, 3, self.tp - self.t, value)
        if x.shape[4] != 1:
            x = _pad_axis(x, 4, self.sp - self.s, value)
        return x

    # ------------------------------------------------------------ block helpers
    def _num_key_chunks(self, i):
        """Key chunks visited by query chunk i: all, or up to the causal diagonal."""
        if not self.causal:
            return self.nk
        last_query = (i + 1) * self.cq - 1  # padded position of the chunk's last row
        count = (last_query + self.offset) // self.ck + 1
        return ops.clip(count, 0, self.nk)

    def _first_query_chunk(self, j):
        """First query chunk i that visits key chunk j (inverse of the above)."""
        if not self.causal:
            return 0
        first = (j * self.ck - self.offset) // self.cq
        return ops.clip(first, 0, self.nq)

    @staticmethod
    def _block(x, axis, start, size):
        """Slice a rank-5 mask/bias block along T (axis 3) / S (axis 4) unless size 1."""
        return x if x.shape[axis] == 1 else _slice_axis(x, axis, start, size)

    def _logits(self, qb, kb, qs, ks, bias):
        """Float32 logits `(B, K, G, C, D)` of one block and its validity mask."""
        logits = ops.cast(ops.einsum("bqkgh,bskh->bkgqs", qb, kb), "float32")
        if bias is not None:
            block = self._block(self._block(bias, 3, qs, self.cq), 4, ks, self.ck)
            logits = logits + ops.cast(block, "float32")
        valid = None
        key_pos = ks + ops.arange(self.ck, dtype="int32")  # (D,)
        if self.pad_keys:
            valid = (key_pos < self.s)[None, None, None, None, :]
        if self.causal:
            query_pos = qs + ops.arange(self.cq, dtype="int32")  # (C,)
            allowed = key_pos[None, :] <= query_pos[:, None] + self.offset  # (C, D)
            allowed = allowed[None, None, None]
            valid = allowed if valid is None else ops.logical_and(valid, allowed)
        if self.mask is not None:
            block = self._block(self._block(self.mask, 3, qs, self.cq), 4, ks, self.ck)
            valid = block if valid is None else ops.logical_and(valid, block)
        if valid is not None:
            logits = ops.where(valid, logits, MASK_VALUE)
        return logits, valid

    @staticmethod
    def _probs(logits, valid, row_max):
        p = ops.exp(logits - row_max[..., None])
        return p if valid is None else ops.where(valid, p, 0.0)

    # ------------------------------------------------------------ forward
    def forward(self, query, key, value, bias):
        b, k, g, cq, ck = self.b, self.k, self.g, self.cq, self.ck
        v_dim = value.shape[-1]
        q = ops.reshape(query * ops.cast(self.scale, query.dtype),
                        (b, self.t, k, g, self.h))  # (B, T, K, G, H)
        q = _pad_axis(q, 1, self.tp - self.t)  # (B, Tp, K, G, H)
        kp = _pad_axis(key, 1, self.sp - self.s)  # (B, Sp, K, H)
        vp = _pad_axis(value, 1, self.sp - self.s)  # (B, Sp, K, V)
        bias5 = None
        if bias is not None:
            bias5 = self._pad_tail(_to_rank5(bias, self.n, self.k), 0.0)

        def query_chunk(i):
            qs = i * cq
            qb = _slice_axis(q, 1, qs, cq)  # (B, C, K, G, H)

            def body(j, carry):
                m, l, acc = carry
                ks = j * ck
                kb = _slice_axis(kp, 1, ks, ck)  # (B, D, K, H)
                vb = _slice_axis(vp, 1, ks, ck)  # (B, D, K, V)
                logits, valid = self._logits(qb, kb, qs, ks, bias5)  # (B, K, G, C, D)
                m_new = ops.maximum(m, ops.max(logits, axis=-1))  # (B, K, G, C)
                p = self._probs(logits, valid, m_new)  # (B, K, G, C, D)
                alpha = ops.exp(m - m_new)
                l = alpha * l + ops.sum(p, axis=-1)
                pv = ops.einsum("bkgqs,bskv->bkgqv", ops.cast(p, vb.dtype), vb)
                acc = acc * alpha[..., None] + ops.cast(pv, "float32")  # (B, K, G, C, V)
                return m_new, l, acc

            init = (
                ops.full((b, k, g, cq), MASK_VALUE, dtype="float32"),
                ops.zeros((b, k, g, cq), dtype="float32"),
                ops.zeros((b, k, g, cq, v_dim), dtype="float32"),
            )
            m, l, acc = ops.fori_loop(0, self._num_key_chunks(i), body, init)
            seen = l > 0.0  # False on rows with no allowed key
            safe_l = ops.where(seen, l, 1.0)
            out = acc / safe_l[..., None]  # (B, K, G, C, V); zeros on empty rows
            lse = ops.where(seen, m + ops.log(safe_l), 0.0)  # (B, K, G, C)
            return ops.transpose(out, (0, 3, 1, 2, 4)), lse

        out, lse = ops.map(query_chunk, ops.arange(self.nq, dtype="int32"))
        # out (Q, B, C, K, G, V) -> (B, Tp, K, G, V); lse (Q, B, K, G, C) -> (B, K, G, Tp)
        out = ops.reshape(ops.transpose(out, (1, 0, 2, 3, 4, 5)), (b, self.tp, k, g, v_dim))
        lse = ops.reshape(ops.transpose(lse, (1, 2, 3, 0, 4)), (b, k, g, self.tp))
        output = ops.reshape(out[:, : self.t], (b, self.t, self.n, v_dim))  # (B, T, N, V)
        residuals = (query, key, value, bias, q, kp, vp, bias5, out, lse)
        return ops.cast(output, query.dtype), residuals

    # ------------------------------------------------------------ backward
    def backward(self, upstream, residuals):
        query, key, value, bias, q, kp, vp, bias5, out, lse = residuals
        b, k, g, cq, ck = self.b, self.k, self.g, self.cq, self.ck
        v_dim = value.shape[-1]
        do = ops.reshape(ops.cast(upstream, "float32"), (b, self.t, k, g, v_dim))
        do = _pad_axis(do, 1, self.tp - self.t)  # (B, Tp, K, G, V), zeros on padding
        delta = ops.transpose(ops.sum(do * out, axis=-1), (0, 2, 3, 1))  # (B, K, G, Tp)
        do = ops.cast(do, value.dtype)

        def dq_chunk(i):
            qs = i * cq
            qb = _slice_axis(q, 1, qs, cq)  # (B, C, K, G, H)
            dob = _slice_axis(do, 1, qs, cq)  # (B, C, K, G, V)
            lse_i = _slice_axis(lse, 3, qs, cq)  # (B, K, G, C)
            delta_i = _slice_axis(delta, 3, qs, cq)  # (B, K, G, C)

            def body(j, dq):
                ks = j * ck
                kb = _slice_axis(kp, 1, ks, ck)  # (B, D, K, H)
                vb = _slice_axis(vp, 1, ks, ck)  # (B, D, K, V)
                logits, valid = self._logits(qb, kb, qs, ks, bias5)
                p = self._probs(logits, valid, lse_i)  # (B, K, G, C, D)
                dp = ops.cast(ops.einsum("bqkgv,bskv->bkgqs", dob, vb), "float32")
                ds = p * (dp - delta_i[..., None])  # d logits, (B, K, G, C, D)
                dq_block = ops.einsum("bkgqs,bskh->bqkgh", ops.cast(ds, kb.dtype), kb)
                return dq + ops.cast(dq_block, "float32")

            init = ops.zeros((b, cq, k, g, self.h), dtype="float32")
            return ops.fori_loop(0, self._num_key_chunks(i), body, init)

        def dkv_chunk(j):
            ks = j * ck
            kb = _slice_axis(kp, 1, ks, ck)  # (B, D, K, H)
            vb = _slice_axis(vp, 1, ks, ck)  # (B, D, K, V)

            def body(i, carry):
                dk, dv, db = carry
                qs = i * cq
                qb = _slice_axis(q, 1, qs, cq)  # (B, C, K, G, H)
                dob = _slice_axis(do, 1, qs, cq)  # (B, C, K, G, V)
                lse_i = _slice_axis(lse, 3, qs, cq)
                delta_i = _slice_axis(delta, 3, qs, cq)
                logits, valid = self._logits(qb, kb, qs, ks, bias5)
                p = self._probs(logits, valid, lse_i)  # (B, K, G, C, D)
                dv_block = ops.einsum("bkgqs,bqkgv->bskv", ops.cast(p, dob.dtype), dob)
                dp = ops.cast(ops.einsum("bqkgv,bskv->bkgqs", dob, vb), "float32")
                ds = p * (dp - delta_i[..., None])  # (B, K, G, C, D)
                dk_block = ops.einsum("bkgqs,bqkgh->bskh", ops.cast(ds, qb.dtype), qb)
                dk = dk + ops.cast(dk_block, "float32")  # (B, D, K, H)
                dv = dv + ops.cast(dv_block, "float32")  # (B, D, K, V)
                if db is not None:
                    db = self._accumulate_bias_grad(db, ds, qs)
                return dk, dv, db

            init = (
                ops.zeros((b, ck, k, self.h), dtype="float32"),
                ops.zeros((b, ck, k, v_dim), dtype="float32"),
                None if bias5 is None else self._bias_grad_init(bias5),
            )
            if bias5 is None:
                dk, dv = ops.fori_loop(
                    self._first_query_chunk(j), self.nq,
                    lambda i, c: body(i, c + (None,))[:2], init[:2],
                )
                return dk, dv
            return ops.fori_loop(self._first_query_chunk(j), self.nq, body, init)

        dq = ops.map(dq_chunk, ops.arange(self.nq, dtype="int32"))  # (Q, B, C, K, G, H)
        dq = ops.reshape(ops.transpose(dq, (1, 0, 2, 3, 4, 5)), (b, self.tp, self.n, self.h))
        dq = dq[:, : self.t] * self.scale  # (B, T, N, H)
        kv_grads = ops.map(dkv_chunk, ops.arange(self.nk, dtype="int32"))
        dk, dv = kv_grads[0], kv_grads[1]  # (R, B, D, K, H), (R, B, D, K, V)
        dk = ops.reshape(ops.transpose(dk, (1, 0, 2, 3, 4)), (b, self.sp, k, self.h))
        dv = ops.reshape(ops.transpose(dv, (1, 0, 2, 3, 4)), (b, self.sp, k, v_dim))
        grads = [
            ops.cast(dq, query.dtype),
            ops.cast(dk[:, : self.s], key.dtype),
            ops.cast(dv[:, : self.s], value.dtype),
        ]
        if bias is not None:
            grads.append(ops.cast(self._finish_bias_grad(kv_grads[2]), bias.dtype))
        return tuple(grads)

    # ------------------------------------------------------------ bias gradient
    def _bias_grad_init(self, bias5):
        """Per key chunk accumulator of d bias: (B|1, K|1, G|1, Tp|1, D|1)."""
        b_dim, n_dim, t_dim, s_dim = self.bias_dims
        shape = (
            self.b if b_dim else 1,
            self.k if n_dim else 1,
            self.g if n_dim else 1,
            self.tp if t_dim else 1,
            self.ck if s_dim else 1,
        )
        return ops.zeros(shape, dtype="float32")

    def _accumulate_bias_grad(self, db, ds, qs):
        """Add one block's d logits `(B, K, G, C, D)`, reduced over broadcast axes."""
        b_dim, n_dim, t_dim, s_dim = self.bias_dims
        if not b_dim:
            ds = ops.sum(ds, axis=0, keepdims=True)
        if not n_dim:
            ds = ops.sum(ds, axis=(1, 2), keepdims=True)
        if not s_dim:
            ds = ops.sum(ds, axis=4, keepdims=True)
        if not t_dim:
            return db + ops.sum(ds, axis=3, keepdims=True)
        # Each (query chunk, key chunk) block is visited once: write its rows.
        return ops.slice_update(db, [0, 0, 0, qs, 0], ds)

    def _finish_bias_grad(self, db):
        """(R, B|1, K|1, G|1, Tp|1, D|1) per key chunk -> the bias's own shape."""
        b_dim, n_dim, t_dim, s_dim = self.bias_dims
        if s_dim:
            db = ops.transpose(db, (1, 2, 3, 4, 0, 5))  # (B|1, K|1, G|1, Tp|1, R, D)
            shape = tuple(_dim(db, i) for i in range(4))
            db = ops.reshape(db, shape + (self.sp,))[..., : self.s]
        else:
            db = ops.sum(db, axis=0)  # (B|1, K|1, G|1, Tp|1, 1)
        if t_dim:
            db = db[:, :, :, : self.t]
        shape = (_dim(db, 0), self.n if n_dim else 1, _dim(db, 3), _dim(db, 4))
        db = ops.reshape(db, shape)  # (B|1, N|1, T|1, S|1)
        for _ in range(4 - len(self.bias_shape)):
            db = db[0]  # drop the leading axes the bias did not have
        return db
