"""Reformer LSH attention: shared query-key attention within hash buckets.

Shape legend: B batch, T sequence length (queries and keys are the same positions),
F features, N heads, H key head dim, V value head dim, O output features,
R hashing rounds, U buckets, L padded length (C * C_n), C chunk length,
C_n number of chunks, W = 2 * C keys seen by each chunk.
"""

import math

import keras
from keras import ops

from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    check_no_logits_bias,
    checked_query_mask,
    reject_arguments,
)
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.ops.attention import batched_take, empty_attention, zero_rows
from keras_attention.ops.masked_softmax import MASK_VALUE
from keras_attention.utils.validation import check_positive_int

# Logit of a query for its own position: far below any real logit, far above masked
# ones, so a query attends itself only when nothing else is allowed (Kitaev et al.).
SELF_VALUE = -1e5
# The keys are the queries, so there are no separate key/value heads.
_UNUSED = UNUSED_ARGUMENTS + ("num_key_value_heads",)


def _gather(x, indices):
    """`x (B, N, L, D)` gathered along L by `indices (B, N, R, L')` -> `(B, N, R, L', D)`."""
    return batched_take(x, indices, 2)


def _look_back(x):
    """`(B, N, R, C_n, C, ...)` -> `(B, N, R, C_n, 2C, ...)`: each chunk, then the
    chunk before it (the first chunk wraps around to the last)."""
    return ops.concatenate([x, ops.roll(x, 1, axis=3)], axis=4)


@keras.saving.register_keras_serializable(package="keras_attention")
class LSHAttention(MultiHeadAttention):
    """Reformer LSH attention (Kitaev et al. 2020, "Reformer: The Efficient
    Transformer").

    Queries and keys are shared: one projection gives the queries, and the keys
    are the same vectors normalised to unit length. Each round of angular
    locality-sensitive hashing sends every position to the bucket
    `argmax([x R; -x R])` of a fixed random rotation `R (H, U / 2)` (drawn from
    `seed` and stored as a non-trainable weight, so it is saved with the model).
    Positions are sorted by bucket (then position) and cut into chunks of
    `C = bucket_size`; each chunk attends itself and the chunk before it. A query
    never attends its own position unless nothing else is allowed. The `R =
    num_hashes` rounds are combined with weights `exp(lse_r - logsumexp_r lse_r)`,
    where `lse_r` is each round's log-normaliser, after subtracting from each logit
    the log of the number of rounds in which that key is seen (the paper's
    duplicate correction): the result is the softmax over the union of the keys
    found in any round. Time and memory grow as `R * T * C`; no `(T, T)` matrix
    is formed, so `return_attention_scores=True` raises a `ValueError`.

    `num_buckets` defaults to `2 * ceil(T / bucket_size)` for the sequence length
    `T` seen at build time (so each bucket holds about half a chunk, as in the
    paper) and is fixed from then on: the rotations are a weight.

    Cross-attention is not supported: keys are the queries, so `key` must be None
    and `value` (which supplies the values of the same positions) must have the
    query's length; anything else raises a `ValueError`.

    Masks: padded positions (`value_mask`, `key_mask`, Keras implicit masks) are
    never attended and are hashed to an extra last bucket, so they do not change
    how the other positions are chunked; padded queries (`query_mask`) give zero
    rows. A general `attention_mask (B, T, T)` is applied to the pairs that share a
    chunk. `use_causal_mask=True` masks keys after the query inside the chunks. Note
    that, as in the paper, which earlier keys share a chunk with a query depends on
    the hashes of all positions, later ones included: outputs are strictly causal
    only when every chunk sees the whole sequence (`bucket_size >= T / 2`).

    Documented error against exact attention, here exact shared-QK attention (the
    same unit-length keys, self attended only when nothing else is allowed):
    per-head inputs drawn from N(0, 1) with a fixed seed, T = 16, 2 heads of size
    8, `bucket_size=4` (4 chunks, 8 buckets), mean over 3 rotation seeds; the
    exact output has mean absolute value 0.24. Mean absolute error: 0.20 with 1
    round, 0.12 with 2, 0.05 with 4, 0.005 with 8 and 2e-4 with 16 rounds; causal:
    0.28, 0.16, 0.05, 0.006 (exact output 0.39). With `bucket_size >= T / 2`
    every chunk sees all keys and the error is below 1e-6 for any number of
    rounds.

    Args:
        num_heads: number of heads N.
        key_dim: size of each query/key head H.
        num_hashes: number of hashing rounds R.
        bucket_size: chunk length C; the sequence is padded to whole chunks.
        num_buckets: number of hash buckets U (even); defaults to
            `2 * ceil(T / bucket_size)` at build time.
        value_dim: size of each value head V; defaults to `key_dim`.
        dropout: dropout rate on the attention weights within the chunks.
        use_bias: whether the dense projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: `None` or a rotary encoding (instance, config or
            `"rotary"`); encodings that add a logits bias (ALiBi, T5, Shaw) raise
            a `ValueError`.
        kernel_initializer, bias_initializer: dense projection initializers.
        seed: seed of the random rotations and of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, T, F)`.
        value: `(B, T, F_v)`, usually the query itself.
        key: must be None (keys are the normalised queries).
        query_mask, value_mask, key_mask: boolean `(B, T)` padding masks; filled
            from Keras implicit masks when not given.
        attention_mask: optional boolean `(B, T, T)`, True where allowed.
        use_causal_mask: query i attends only positions j <= i.
        return_attention_scores: not supported (must be False).
        training: enables dropout.

    Returns:
        `output (B, T, O)`; rows of padded queries, and rows with no allowed key in
        their chunks, are zeros.

    Example:

    >>> x = keras.random.normal((2, 64, 32))
    >>> layer = LSHAttention(num_heads=4, key_dim=8, num_hashes=2, bucket_size=16)
    >>> layer(x, x, use_causal_mask=True).shape
    (2, 64, 32)
    """

    supports_attention_scores = False

    def __init__(
        self,
        num_heads,
        key_dim,
        num_hashes=2,
        bucket_size=32,
        num_buckets=None,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        position_encoding=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        reject_arguments(type(self).__name__, kwargs, _UNUSED)
        super().__init__(
            num_heads,
            key_dim,
            value_dim=value_dim,
            dropout=dropout,
            use_bias=use_bias,
            output_dim=output_dim,
            position_encoding=position_encoding,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            **kwargs,
        )
        self.num_hashes = check_positive_int("num_hashes", num_hashes)
        self.bucket_size = check_positive_int("bucket_size", bucket_size)
        self.num_buckets = check_positive_int("num_buckets", num_buckets, allow_none=True)
        if self.num_buckets is not None and self.num_buckets % 2:
            raise ValueError(
                "`num_buckets` must be even (angular LSH uses the rotations and their "
                f"negatives). Received: num_buckets={num_buckets}"
            )
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)
        self._num_buckets = self.num_buckets

    # ------------------------------------------------------------------ build
    def _check_input_shapes(self, query_shape, value_shape, key_shape=None):
        super()._check_input_shapes(query_shape, value_shape, key_shape)
        t, s = query_shape[1], value_shape[1]
        if t is not None and s is not None and t != s:
            raise ValueError(
                "LSHAttention shares queries and keys, so it only does self-attention: "
                "`value` must have the query's sequence length. Received: "
                f"query.shape={tuple(query_shape)}, value.shape={tuple(value_shape)}"
            )

    def build(self, query_shape, value_shape, key_shape=None):
        # No key projection: the keys are the normalised queries.
        self._check_input_shapes(query_shape, value_shape)
        n, h, v = self.num_heads, self.key_dim, self._value_dim
        out = self.output_dim or query_shape[-1]
        length = query_shape[1]
        if self.num_buckets is None:
            if length is None:
                raise ValueError(
                    "LSHAttention needs `num_buckets` when the sequence length is not "
                    f"static at build time. Received: num_buckets=None, "
                    f"query.shape={tuple(query_shape)}"
                )
            self._num_buckets = 2 * math.ceil(length / self.bucket_size)
        self._query_dense = self._dense("query", "btf,fnh->btnh", (None, n, h), "nh")
        self._query_dense.build(query_shape)
        self._value_dense = self._dense("value", "bsf,fkv->bskv", (None, n, v), "kv")
        self._value_dense.build(value_shape)
        self._output_dense = self._dense("attention_output", "btnv,nvo->bto", (None, out), "o")
        self._output_dense.build((query_shape[0], query_shape[1], n, v))
        if self.position_encoding is not None:
            self.position_encoding.check_attention_shapes(n, h, v)
            if not self.position_encoding.built:
                self.position_encoding.build((None, None, n, h))
        self.random_rotations = self.add_weight(
            name="random_rotations",
            shape=(h, self.num_hashes, self._num_buckets // 2),
            initializer=keras.initializers.RandomNormal(seed=self.seed),
            trainable=False,
        )
        self.built = True

    # ------------------------------------------------------------------ call
    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        if key is not None:
            raise ValueError(
                "LSHAttention shares queries and keys (the keys are the normalised "
                "queries), so it takes no `key`. Received: key with shape="
                f"{tuple(key.shape)}"
            )
        query_mask = checked_query_mask(self, query, value, None, query_mask)
        # query_mask stays out of the merged mask (the (B, 1, T) key padding mask, or
        # (B, T, T) with an attention_mask); causality is handled inside the chunks,
        # so the base class builds no (T, T) causal mask either.
        output = self._attention_call(
            query, value, None, None, value_mask, key_mask, attention_mask, False,
            return_attention_scores, training, causal=bool(use_causal_mask),
        )
        return zero_rows(output, query_mask)

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, causal=False):
        q = self._query_dense(query)  # (B, T, N, H)
        v = self._value_dense(value)  # (B, T, N, V)
        if self.position_encoding is not None:
            q, _ = self.position_encoding.transform_query_key(q, q, 0, 0)
        output, rows = empty_attention(q, q, v), None  # zeros when T == 0 or B == 0
        if output is None:
            output, rows = self._lsh_attention(q, v, mask, causal, training)
        output = self._output_dense(output)  # (B, T, O)
        if rows is not None:
            # Rows with no allowed key in any chunk of any head or round: zeros, not
            # the output projection's bias (the base class only sees the masks).
            output = output * ops.cast(rows[:, :, None], output.dtype)
        return output, None

    def _lsh_attention(self, query, value, mask, causal, training):
        """Shared-QK LSH attention on per-head tensors.

        Returns `(B, T, N, V)` and `(B, T)`, True where a query has an allowed key
        in its chunks for some head and round.
        """
        b, t = ops.shape(query)[0], ops.shape(query)[1]
        rounds, buckets, chunk = self.num_hashes, self._num_buckets, self.bucket_size
        num_chunks = (t + chunk - 1) // chunk
        length = num_chunks * chunk  # L: padded to whole chunks
        # With one chunk, "the chunk before" is the chunk itself: no look-back then.
        look_back = ops.convert_to_tensor(num_chunks) > 1

        key_valid, pair_mask = None, None
        if mask is not None:
            if mask.shape[1] == 1:
                key_valid = mask[:, 0, :]  # (B, T) key padding
            else:
                pair_mask = mask  # (B, T, T)
                key_valid = ops.any(mask, axis=1)  # (B, T) keys some query may attend
        positions = ops.arange(length, dtype="int32")  # (L,)
        valid = ops.broadcast_to(positions < t, (b, length))  # (B, L) real positions
        if key_valid is not None:
            valid = ops.logical_and(valid, ops.pad(key_valid, [[0, 0], [0, length - t]]))

        pad = [[0, 0], [0, length - t], [0, 0], [0, 0]]
        q = ops.transpose(ops.pad(ops.cast(query, "float32"), pad), (0, 2, 1, 3))  # (B,N,L,H)
        v = ops.transpose(ops.pad(ops.cast(value, "float32"), pad), (0, 2, 1, 3))  # (B,N,L,V)
        k = q / ops.sqrt(ops.maximum(ops.sum(q * q, axis=-1, keepdims=True), 1e-12))
        q = q / math.sqrt(self.key_dim)

        # Hash, then sort each round by (bucket, position); padding goes last.
        rotations = ops.cast(self.random_rotations, "float32")  # (H, R, U / 2)
        rotated = ops.einsum("bnlh,hru->bnrlu", k, rotations)  # (B, N, R, L, U / 2)
        bucket = ops.argmax(ops.concatenate([rotated, -rotated], axis=-1), axis=-1)
        bucket = ops.where(valid[:, None, None, :], ops.cast(bucket, "int32"), buckets)
        order = ops.argsort(bucket * length + positions, axis=-1)  # (B, N, R, L)
        order = ops.cast(order, "int32")
        slot = ops.cast(ops.argsort(order, axis=-1), "int32")  # (B, N, R, L)

        def chunked(x):  # (B, N, R, L, ...) -> (B, N, R, C_n, C, ...)
            return ops.reshape(x, (b, self.num_heads, rounds, num_chunks, chunk)
                               + tuple(x.shape[4:]))

        query_pos = chunked(order)  # (B, N, R, C_n, C)
        key_pos = _look_back(query_pos)  # (B, N, R, C_n, W)
        sq = chunked(_gather(q, order))  # (B, N, R, C_n, C, H)
        sk = _look_back(chunked(_gather(k, order)))  # (B, N, R, C_n, W, H)
        sv = _look_back(chunked(_gather(v, order)))  # (B, N, R, C_n, W, V)
        logits = ops.einsum("bnrxch,bnrxwh->bnrxcw", sq, sk)  # (B, N, R, C_n, C, W)

        qp, kp = query_pos[..., :, None], key_pos[..., None, :]
        key_ok = ops.take_along_axis(
            ops.cast(valid, "int32"), ops.reshape(key_pos, (b, -1)), axis=1
        )  # (B, N * R * C_n * W)
        key_ok = ops.reshape(key_ok > 0, ops.shape(key_pos))[..., None, :]  # (..., 1, W)
        in_window = ops.concatenate(
            [ops.ones((chunk,), "bool"), ops.broadcast_to(look_back, (chunk,))]
        )  # (W,)
        allowed = ops.logical_and(key_ok, in_window)  # (B, N, R, C_n, 1, W)
        allowed = ops.broadcast_to(allowed, ops.shape(logits))  # (B, N, R, C_n, C, W)
        if causal:
            allowed = ops.logical_and(allowed, kp <= qp)
        if pair_mask is not None:
            allowed = ops.logical_and(allowed, self._pair_mask(pair_mask, qp, kp, t))
        is_self = ops.equal(kp, qp)
        logits = ops.where(
            ops.logical_and(allowed, ops.logical_not(is_self)), logits,
            ops.where(allowed, SELF_VALUE, MASK_VALUE),
        )
        if rounds > 1:
            counts = self._round_counts(slot, qp, kp, num_chunks, look_back)
            logits = logits - ops.log(counts)  # each key once over all rounds

        lse = ops.logsumexp(logits, axis=-1)  # (B, N, R, C_n, C)
        probs = ops.exp(logits - lse[..., None])  # (B, N, R, C_n, C, W)
        if training and self.dropout > 0.0:
            probs = keras.random.dropout(probs, self.dropout, seed=self.seed_generator)
        out = ops.einsum("bnrxcw,bnrxwv->bnrxcv", probs, sv)  # (B, N, R, C_n, C, V)

        # Back to position order, then combine the rounds by their normalisers.
        flat = (b, self.num_heads, rounds, length)
        out = batched_take(ops.reshape(out, flat + (-1,)), slot, 3)  # (B, N, R, L, V)
        lse = ops.take_along_axis(ops.reshape(lse, flat), slot, axis=3)  # (B, N, R, L)
        any_allowed = ops.take_along_axis(
            ops.reshape(ops.any(allowed, axis=-1), flat), slot, axis=3
        )  # (B, N, R, L)
        if rounds > 1:
            weights = ops.softmax(lse, axis=2)[..., None]  # (B, N, R, L, 1)
            output = ops.sum(out * weights, axis=2)  # (B, N, L, V)
        else:
            output = out[:, :, 0]  # (B, N, L, V)
        any_allowed = ops.any(any_allowed, axis=2)  # (B, N, L)
        output = output * ops.cast(any_allowed, "float32")[..., None]
        output = ops.transpose(output, (0, 2, 1, 3))[:, :t]  # (B, T, N, V)
        rows = ops.any(any_allowed, axis=1)[:, :t]  # (B, T)
        return ops.cast(output, query.dtype), rows

    @staticmethod
    def _pair_mask(mask, qp, kp, t):
        """`mask (B, T, T)` at the (query, key) position pairs `qp`, `kp` of the chunks."""
        qp = ops.minimum(qp, t - 1)  # padding rows read a real entry; they are masked
        kp = ops.minimum(kp, t - 1)
        index = qp * t + kp  # (B, N, R, C_n, C, W)
        b = ops.shape(mask)[0]
        flat = ops.reshape(ops.cast(mask, "int32"), (b, -1))  # (B, T * T)
        pairs = ops.take_along_axis(flat, ops.reshape(index, (b, -1)), axis=1)
        return ops.reshape(pairs > 0, ops.shape(index))

    def _round_counts(self, slot, qp, kp, num_chunks, look_back):
        """In how many rounds each (query, key) pair of the chunks shares a chunk or
        sits one chunk back: `(B, N, R, C_n, C, W)` float32, at least 1."""
        b, n = ops.shape(slot)[0], self.num_heads
        chunk_of = ops.floor_divide(slot, self.bucket_size)  # (B, N, R, L) chunk ids

        def chunk_ids(ids, pos):  # chunk ids (B, N, L) at positions (B, N, R, ...)
            flat = ops.take_along_axis(ids, ops.reshape(pos, (b, n, -1)), axis=2)
            return ops.reshape(flat, ops.shape(pos))

        counts = 0.0
        for r in range(self.num_hashes):
            q_chunk = chunk_ids(chunk_of[:, :, r], qp)  # (B, N, R, C_n, C, 1)
            k_chunk = chunk_ids(chunk_of[:, :, r], kp)  # (B, N, R, C_n, 1, W)
            previous = ops.mod(q_chunk - 1, num_chunks)
            seen = ops.logical_or(
                ops.equal(k_chunk, q_chunk),
                ops.logical_and(ops.equal(k_chunk, previous), look_back),
            )  # (B, N, R, C_n, C, W)
            counts = counts + ops.cast(seen, "float32")
        return ops.maximum(counts, 1.0)

    def get_config(self):
        config = super().get_config()
        for name in _UNUSED:
            config.pop(name)
        config.update(
            {
                "num_hashes": self.num_hashes,
                "bucket_size": self.bucket_size,
                "num_buckets": self.num_buckets,
            }
        )
        return config
