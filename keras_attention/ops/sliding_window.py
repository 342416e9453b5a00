"""Exact sliding-window (band) attention computed block by block.

Shape legend: B batch, T query length, S key length, N query heads, K key/value
heads (N % K == 0, G = N // K), H key head dim, V value head dim, W window size,
C block size, R number of query blocks (T padded to R * C), L keys per block
(C + 2W, or C + W when causal), M = ceil(L / C) blocks spanned by one key window,
P = (R + M - 1) * C the length of the key strip that holds every window, J blocks
computed in one step (1, or R when everything is done at once).

The keys that any query block may see are first copied, once, into a strip of P
positions that starts W keys before query 0 (positions outside [0, S) are masked):
block r's window is the plain slice `[r * C, r * C + L)` of the strip, and the
band mask inside a block is the same `(C, L)` pattern for every block.

Forward: a loop over query blocks (`ops.map`); each step computes one block's
logits, softmax and value product, so only `(G * C, L)` logits per head exist at a
time and they stay in cache, where computing all blocks at once sends several
passes over a `(B, N, T, L)` float32 tensor to memory. Tiny windows make tiny
blocks and many steps, so below `_LOOP_MIN_WINDOW` all blocks are computed in one
step instead (J = R).

Backward: hand-written (autodiff through the loop would add a full-size gradient
of the captured keys at every step). The forward also returns the normalised
weights `(R, B, K, G*C, L)`; when no gradient is taken nothing uses them and XLA
(`jit_compile=True`, `jax.jit`) drops them, while an eager or non-XLA TensorFlow
call still forms them (O(T * L), as the one-step computation did). Given the
weights p, the backward is the softmax gradient vectorised over blocks:
`dV_win = p^T dO`, `dS = p * (dO V_win^T - rowsum(dO * O))`, `dQ = dS K_win`,
`dK_win = dS^T Q`, and the overlapping window gradients are added back onto the
strip with M shifted sums. Recomputing the weights from a saved log-sum-exp
instead (as FlashAttention does) costs one more product and an exponential per
logit, and measured slower here; memory is O(T * L) either way.
"""

import math

from keras import ops

from keras_attention.masks import transpose_mask
from keras_attention.ops.attention import (
    check_qkv,
    convert_qkv,
    empty_attention,
    with_gradient,
)
from keras_attention.ops.chunked import _dim, _slice_axis
from keras_attention.ops.masked_softmax import MASK_VALUE
from keras_attention.utils.validation import check_positive_int

# Windows of at least _LOOP_MIN_WINDOW loop over blocks of clip(W // 2, 16, 128)
# queries: each query computes C + 2W logits of which 2W + 1 are needed, so smaller
# blocks waste fewer operations, but they make more and smaller products; 128
# keeps one block's logits in cache. Smaller windows make small blocks and many
# steps, whose fixed cost dominates: they compute blocks of max(W, 16) in one step.
_MIN_DEFAULT_BLOCK = 16
_MAX_DEFAULT_BLOCK = 128
_LOOP_MIN_WINDOW = 64


def sliding_window_attention(
    query,
    key,
    value,
    *,
    window_size,
    causal=False,
    mask=None,
    scale=None,
    block_size=None,
):
    """Band attention: query i attends keys j with `|i - j| <= window_size`.

    With `causal=True` query i attends keys j with `0 <= i - j <= window_size`. This
    is the local attention of Longformer (Beltagy et al. 2020) and Mistral's sliding
    window, computed exactly: the queries are split into blocks of `block_size`, and
    each block attends only the `block_size + 2 * window_size` keys around it
    (`block_size + window_size` before it when causal), with the band mask applied
    inside the block. For windows of 64 or more the forward pass loops over the
    blocks, forming one block's logits at a time; the gradient is hand-written and
    vectorised over blocks.
    Time and memory are O(T * (block_size + window_size)) instead of O(T * S), in
    the forward and the backward pass; the result equals
    `scaled_dot_product_attention` with `masks.sliding_window_mask`. When T != S,
    query i sits at key position `i + (S - T)` (bottom-right, as in `causal_mask`).

    Args:
        query: `(B, T, N, H)`.
        key: `(B, S, K, H)` with `N % K == 0`.
        value: `(B, S, K, V)`.
        window_size: non-negative int W, the largest allowed distance `|i - j|`.
        causal: if True, only keys at or before the query (at most W back).
        mask: optional key padding mask, `(B, S)` or `(B, 1, 1, S)` (or broadcastable
            to it), True on real keys.
        scale: logit scale, default `1 / sqrt(H)`.
        block_size: queries per block, at most T. Default: `window_size // 2`
            clipped to [16, 128] for windows of 64 or more, which loop over the
            blocks, else `max(window_size, 16)`, all blocks in one step. Each
            query computes `block_size + 2 * window_size` logits where `2 *
            window_size + 1` are needed: smaller blocks waste fewer, larger blocks
            make fewer and larger products.

    Returns:
        `(B, T, N, V)` in the query's dtype (softmax in float32). A query row with
        no allowed key gives zeros, never NaN.

    Example:

    >>> x = keras.random.normal((2, 4096, 4, 32))
    >>> sliding_window_attention(x, x, x, window_size=128, causal=True).shape
    (2, 4096, 4, 32)
    """
    query, key, value = convert_qkv(query, key, value)
    b, t, s, n, k, h, v_dim = check_qkv(query, key, value)
    window_size = check_positive_int("window_size", window_size, allow_zero=True)
    block_size = check_positive_int("block_size", block_size, allow_none=True)
    scale = 1.0 / math.sqrt(h) if scale is None else float(scale)
    key_mask = None if mask is None else key_padding_mask(mask, b, s, ops.shape(key)[1])
    empty = empty_attention(query, key, value)
    if empty is not None:  # no batch, query or key: no block to gather
        return empty
    loop = window_size >= _LOOP_MIN_WINDOW
    if block_size is None and loop:
        block_size = min(max(window_size // 2, _MIN_DEFAULT_BLOCK), _MAX_DEFAULT_BLOCK)
    elif block_size is None:
        block_size = max(window_size, _MIN_DEFAULT_BLOCK)
    if isinstance(t, int):
        block_size = max(1, min(block_size, t))
    plan = _BandPlan(query, key, window_size, bool(causal), scale, block_size, key_mask,
                     loop)

    def forward(q, kk, vv):
        blocks, probs = plan.forward(q, kk, vv)  # (R, B, K, G*C, V), (R, B, K, G*C, L)
        return plan.output(blocks), (q, kk, vv, blocks, probs)

    return with_gradient(forward, lambda upstream, res: plan.backward(upstream, *res),
                         query, key, value)


class _BandPlan:
    """Sizes, the key strip's positions and the block computations of one call."""

    def __init__(self, query, key, window_size, causal, scale, block_size, key_mask,
                 loop):
        self.scale, self.loop = scale, loop
        self.b, self.t, self.s = _dim(query, 0), _dim(query, 1), _dim(key, 1)
        self.n, self.k = query.shape[2], key.shape[2]
        self.g = self.n // self.k
        self.c = c = block_size
        self.span = c + window_size if causal else c + 2 * window_size  # L
        self.pieces = -(-self.span // c)  # M
        self.r = (self.t + c - 1) // c  # R
        self.tp = self.r * c
        self.strip = (self.r + self.pieces - 1) * c  # P
        # Strip position p holds key position p + start; query i sits at i + S - T.
        self.start = self.s - self.t - window_size
        key_pos = ops.arange(self.strip, dtype="int32") + self.start  # (P,)
        valid = ops.logical_and(key_pos >= 0, key_pos < self.s)[None]  # (1, P)
        self.gather_pos = ops.clip(key_pos, 0, self.s - 1)  # (P,)
        if key_mask is not None:
            valid = ops.logical_and(valid, ops.take(key_mask, self.gather_pos, axis=1))
        self.key_valid = valid  # (B|1, P)
        # Query c of a block and key l of its window are c + W - l apart: the same
        # band pattern in every block.
        distance = (ops.arange(c, dtype="int32")[:, None] + window_size
                    - ops.arange(self.span, dtype="int32")[None, :])  # (C, L)
        if causal:
            self.band = ops.logical_and(distance >= 0, distance <= window_size)
        else:
            self.band = ops.abs(distance) <= window_size
        # Strip positions of every block's window.
        self.window_pos = (ops.arange(self.r, dtype="int32")[:, None] * c
                           + ops.arange(self.span, dtype="int32")[None, :])  # (R, L)

    # ------------------------------------------------------------ layouts
    def _to_rows(self, x):
        """`(B, T, N, D)` -> `(R, B, K, G*C, D)`, zeros on the padding rows."""
        d = x.shape[-1]
        x = ops.pad(x, [[0, 0], [0, self.tp - self.t], [0, 0], [0, 0]])  # (B, Tp, N, D)
        x = ops.reshape(x, (self.b, self.r, self.c, self.k, self.g, d))
        x = ops.transpose(x, (1, 0, 3, 4, 2, 5))  # (R, B, K, G, C, D)
        return ops.reshape(x, (self.r, self.b, self.k, self.g * self.c, d))

    def _from_rows(self, x):
        """`(R, B, K, G*C, D)` -> `(B, T, N, D)`."""
        d = x.shape[-1]
        x = ops.reshape(x, (self.r, self.b, self.k, self.g, self.c, d))
        x = ops.transpose(x, (1, 0, 4, 2, 3, 5))  # (B, R, C, K, G, D)
        return ops.reshape(x, (self.b, self.tp, self.n, d))[:, : self.t]

    def _windows(self, x):
        """Every block's key window of `(B, S, K, D)`: `(R, B, K, L, D)`."""
        pos = ops.take(self.gather_pos, self.window_pos, axis=0)  # (R, L)
        return ops.transpose(ops.take(x, pos, axis=1), (1, 0, 3, 2, 4))

    def _overlap_add(self, windows):
        """Window gradients `(R, B, K, L, D)` -> key gradient `(B, S, K, D)`.

        Block r's window covers strip positions `[r * C, r * C + L)`: cut it into
        M pieces of C positions; piece m of block r lands on strip block r + m.
        Key j sits at strip position `j - start`; keys outside the strip were
        never attended and strip positions outside [0, S) were masked.
        """
        d = windows.shape[-1]
        windows = ops.pad(windows, [[0, 0]] * 3 + [[0, self.pieces * self.c - self.span],
                                                   [0, 0]])  # (R, B, K, M*C, D)
        windows = ops.reshape(windows, (self.r, self.b, self.k, self.pieces, self.c, d))
        total = None
        for m in range(self.pieces):
            widths = [[m, self.pieces - 1 - m]] + [[0, 0]] * 4
            piece = ops.pad(windows[:, :, :, m], widths)  # (R+M-1, B, K, C, D)
            total = piece if total is None else total + piece
        total = ops.transpose(total, (1, 0, 3, 2, 4))  # (B, R+M-1, C, K, D)
        strip = ops.reshape(total, (self.b, self.strip, self.k, d))  # (B, P, K, D)
        strip = ops.pad(strip, [[0, 0], [0, 1], [0, 0], [0, 0]])  # a zero row at P
        pos = ops.arange(self.s, dtype="int32") - self.start  # (S,)
        pos = ops.where(ops.logical_and(pos >= 0, pos < self.strip), pos, self.strip)
        return ops.take(strip, pos, axis=1)  # (B, S, K, D)

    # ------------------------------------------------------------ forward
    def _attend(self, q, kt, v, valid, out_dtype):
        """J blocks: q `(J, B, K, G*C, H)`, kt `(J, B, K, H, L)`, v `(J, B, K, L, V)`,
        valid `(J, B|1, C, L)` -> output `(J, B, K, G*C, V)` and normalised float32
        weights `(J, B, K, G*C, L)`."""
        j, b, k, g, c, span = _dim(q, 0), self.b, self.k, self.g, self.c, self.span
        logits = ops.matmul(q, kt)  # (J, B, K, G*C, L)
        logits = ops.reshape(ops.cast(logits, "float32"), (j, b, k, g, c, span))
        logits = ops.where(valid[:, :, None, None], logits, MASK_VALUE)
        row_max = ops.max(logits, axis=-1)  # (J, B, K, G, C)
        weights = ops.exp(logits - row_max[..., None])  # masked keys give 0
        total = ops.sum(weights, axis=-1)  # (J, B, K, G, C)
        # A row with no allowed key (all logits MASK_VALUE) gives zeros.
        inverse = ops.where(row_max > 0.5 * MASK_VALUE, 1.0 / total, 0.0)
        inverse = ops.reshape(inverse, (j, b, k, g * c, 1))
        weights = ops.reshape(weights, (j, b, k, g * c, span))
        out = ops.matmul(ops.cast(weights, v.dtype), v)  # (J, B, K, G*C, V)
        out = ops.cast(ops.cast(out, "float32") * inverse, out_dtype)
        return out, weights * inverse

    def forward(self, query, key, value):
        """Output blocks `(R, B, K, G*C, V)` and normalised weights `(R, B, K, G*C, L)`."""
        q = self._to_rows(query * ops.cast(self.scale, query.dtype))  # (R, B, K, G*C, H)
        strip_valid = self.key_valid[:, None]  # (B|1, 1, P)
        if not self.loop:
            kt = ops.swapaxes(self._windows(key), 3, 4)  # (R, B, K, H, L)
            v = self._windows(value)  # (R, B, K, L, V)
            key_valid = ops.take(self.key_valid, self.window_pos, axis=1)  # (B|1, R, L)
            key_valid = transpose_mask(key_valid, (1, 0, 2))[:, :, None]  # (R, B|1, 1, L)
            valid = ops.logical_and(self.band, key_valid)  # (R, B|1, C, L)
            return self._attend(q, kt, v, valid, query.dtype)
        # (B, K, H, P) and (B, K, P, V) strips: each block's operands are plain
        # slices laid out for `(G*C, H) @ (H, L)` and `(G*C, L) @ (L, V)`, so XLA
        # multiplies them without transposing a block first.
        kt = ops.transpose(ops.take(key, self.gather_pos, axis=1), (0, 2, 3, 1))
        vs = ops.transpose(ops.take(value, self.gather_pos, axis=1), (0, 2, 1, 3))

        def block(i):
            start = i * self.c
            kt_block = _slice_axis(kt, 3, start, self.span)[None]  # (1, B, K, H, L)
            v_block = _slice_axis(vs, 2, start, self.span)[None]  # (1, B, K, L, V)
            key_valid = _slice_axis(strip_valid, 2, start, self.span)  # (B|1, 1, L)
            valid = ops.logical_and(self.band, key_valid)[None]  # (1, B|1, C, L)
            out, weights = self._attend(_slice_axis(q, 0, i, 1), kt_block, v_block,
                                        valid, query.dtype)
            return out[0], weights[0]

        return ops.map(block, ops.arange(self.r, dtype="int32"))

    def output(self, out):
        """`(R, B, K, G*C, V)` blocks -> `(B, T, N, V)`."""
        return self._from_rows(out)

    # ------------------------------------------------------------ backward
    def backward(self, upstream, query, key, value, out, probs):
        """Gradients of query, key and value from the saved output and weights."""
        output = ops.cast(out, "float32")  # (R, B, K, G*C, V)
        do = self._to_rows(ops.cast(upstream, "float32"))  # (R, B, K, G*C, V)
        delta = ops.sum(do * output, axis=-1, keepdims=True)  # (R, B, K, G*C, 1)
        do = ops.cast(do, value.dtype)
        q = self._to_rows(query * ops.cast(self.scale, query.dtype))  # (R, B, K, G*C, H)
        k_win = self._windows(key)  # (R, B, K, L, H)
        v_win = self._windows(value)  # (R, B, K, L, V)
        d_probs = ops.einsum("rbkqv,rbklv->rbkql", do, v_win)  # (R, B, K, G*C, L)
        d_logits = probs * (ops.cast(d_probs, "float32") - delta)  # (R, B, K, G*C, L)
        d_logits = ops.cast(d_logits, query.dtype)
        dv = ops.einsum("rbkql,rbkqv->rbklv", ops.cast(probs, value.dtype), do)
        dk = ops.einsum("rbkql,rbkqh->rbklh", d_logits, q)  # (R, B, K, L, H)
        dq = ops.einsum("rbkql,rbklh->rbkqh", d_logits, k_win)  # (R, B, K, G*C, H)
        dq = self._from_rows(dq) * ops.cast(self.scale, dq.dtype)  # (B, T, N, H)
        return (ops.cast(dq, query.dtype), ops.cast(self._overlap_add(dk), key.dtype),
                ops.cast(self._overlap_add(dv), value.dtype))


def key_padding_mask(mask, batch, key_length, key_length_dyn):
    """`(B, S)`, or anything broadcastable to `(B, 1, 1, S)` -> boolean `(B|1, S)`.

    `batch` and `key_length` are the static sizes (or None) used in the checks,
    `key_length_dyn` the size the result is broadcast to.
    """
    mask = ops.convert_to_tensor(mask)
    shape = tuple(mask.shape)
    if len(shape) == 2:
        mask = mask[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
    elif len(shape) in (1, 3):
        mask = ops.reshape(mask, (1,) * (4 - len(shape)) + shape)
    full = tuple(mask.shape)
    ok = len(full) == 4 and full[1] in (1, None) and full[2] in (1, None)
    if ok:
        for got, want in ((full[0], batch), (full[3], key_length)):
            ok = ok and (got in (1, None) or want is None or got == want)
    if not ok:
        raise ValueError(
            "`mask` must be a key padding mask of shape (batch, key_len) or "
            f"broadcastable to (batch, 1, 1, key_len) = ({batch}, 1, 1, {key_length}). "
            f"Received: shape={shape}"
        )
    mask = ops.cast(mask[:, 0, 0, :], "bool")  # (B|1, S|1)
    return ops.broadcast_to(mask, (ops.shape(mask)[0], key_length_dyn))
