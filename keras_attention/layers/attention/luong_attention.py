"""Luong (multiplicative / global and local) attention for sequence-to-sequence models.

Shape legend: B batch, T query (decoder) length, S key (encoder memory) length,
F_q query features, F_k key features, F_v value features, U units.
"""

import numbers

import keras
from keras import ops

from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.ops.masked_softmax import masked_softmax
from keras_attention.ops.seq2seq import additive_energy, merge_causal_mask
from keras_attention.utils.initializers import clone_initializer
from keras_attention.utils.validation import check_choice, check_positive_int, check_rate

SCORES = ("dot", "general", "concat")
MODES = ("global", "local-m", "local-p")


@keras.saving.register_keras_serializable(package="keras_attention")
class LuongAttention(BaseAttention):
    """Global and local attention of Luong et al. 2015, "Effective Approaches to
    Attention-based Neural Machine Translation".

    A decoder state `h_t` (query row) is scored against each encoder state `h_s`
    (key row) with one of three score functions:

    - `"dot"`: `h_t . h_s` (query and key need the same number of features);
    - `"general"`: `h_t^T W_a h_s` (`W_a` maps key features to query features);
    - `"concat"`: `v_a^T tanh(W_a [h_t; h_s])`, written as
      `v_a^T tanh(W_q h_t + W_k h_s)` with `units` hidden units. This forms a
      `(B, T, S, units)` intermediate, fine at seq2seq sizes.

    With `scale=True` the scores are multiplied by a learned scalar `g`
    (initialised to 1), as in tensorflow-addons' `LuongAttention(scale=True)`.
    The output is the context vector, the attention-weighted sum of the values
    `(B, T, F_v)`; the paper's attentional state `tanh(W_c [c_t; h_t])` is left to
    the caller (e.g. a `Dense(activation="tanh")` on the concatenation).

    Modes (`mode`):

    - `"global"`: softmax over the whole memory.
    - `"local-m"` (monotonic alignment): the aligned position of query t is
      `p_t = query_start + t` clipped to `[0, S - 1]`, with `query_start`
      defaulting to `S - T` (bottom-right, like the causal mask: the last query is
      aligned with the last key). Only keys with `|s - p_t| <= window` are
      attended; the softmax runs over those keys.
    - `"local-p"` (predictive alignment): `p_t = L_t * sigmoid(v_p^T tanh(W_p h_t))`,
      where `L_t` is the index of the last key query t may attend (`S - 1` without
      masks, the last non-padded position with a `value_mask`). This is the
      paper's `S * sigmoid(...)` on 0-based positions, so `p_t` stays on the
      memory the query may see. Keys with `|s - p_t| <= window` are attended: the
      softmax runs over them and the weights are then multiplied by the Gaussian
      `exp(-(s - p_t)^2 / (2 sigma^2))` with `sigma = window / 2`. As in the
      paper, the result is **not** renormalised, so a row sums to less than one;
      `renormalize=True` divides each row by its sum instead (a distribution
      again; not in the paper). `p_t` is real-valued and the Gaussian makes the
      weights differentiable with respect to `W_p` and `v_p`.

    Migrating from `tfa.seq2seq.LuongAttention(units, memory, scale=...)`: tfa
    always uses the `"general"` score with `units` equal to the query depth; use
    `LuongAttention(score="general", scale=scale)` and pass the memory as `value`.

    Args:
        score: `"dot"`, `"general"` or `"concat"`.
        mode: `"global"`, `"local-m"` or `"local-p"`.
        window: half-width D of the local window (positive integer); required for
            the local modes, must be None for `"global"`.
        units: hidden size of the `"concat"` score and of the `"local-p"` position
            network; defaults to the query's features. Must be None otherwise.
        scale: multiply the scores by a learned scalar.
        renormalize: `"local-p"` only: divide the Gaussian-weighted weights by
            their row sum.
        dropout: dropout rate on the attention weights (training only).
        kernel_initializer: initializer of the score and position weights.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: decoder states `(B, T, F_q)`.
        value: encoder memory `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` masks; filled
            from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, True where attention is allowed.
        use_causal_mask: query i attends keys `j <= query_start + i`.
        return_attention_scores: also return the `(B, 1, T, S)` weights.
        training: enables dropout.
        query_start: position of the first query in the target sequence (a
            non-negative int or scalar tensor), used by `"local-m"` and the causal
            mask; defaults to `S - T`. Pass the step index when decoding one step
            at a time.

    Returns:
        The context vectors `(B, T, F_v)`, or `(context, scores)` with
        `return_attention_scores`. Query rows with no allowed key (in `"local-p"`,
        none inside the window) give zero context and zero weights.

    Example:

    >>> decoder = keras.random.normal((2, 7, 32))
    >>> encoder = keras.random.normal((2, 11, 32))
    >>> LuongAttention(score="general", mode="local-p", window=3)(
    ...     decoder, encoder).shape
    (2, 7, 32)
    """

    def __init__(
        self,
        score="dot",
        mode="global",
        window=None,
        units=None,
        scale=False,
        renormalize=False,
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.score = check_choice("score", score, SCORES)
        self.mode = check_choice("mode", mode, MODES)
        if self.mode == "global":
            if window is not None:
                raise ValueError(
                    "`window` is only used by mode='local-m' and mode='local-p'. "
                    f"Received: window={window!r}"
                )
        elif window is None:
            raise ValueError(
                f"`window` is required with mode={self.mode!r}. Received: window=None"
            )
        self.window = check_positive_int("window", window, allow_none=True)
        self.units = check_positive_int("units", units, allow_none=True)
        if self.units is not None and self.score != "concat" and self.mode != "local-p":
            raise ValueError(
                "`units` is only used by score='concat' and mode='local-p'. "
                f"Received: units={units}"
            )
        self.scale = bool(scale)
        self.renormalize = bool(renormalize)
        if self.renormalize and self.mode != "local-p":
            raise ValueError(
                "`renormalize` only applies to mode='local-p'. "
                f"Received: renormalize={renormalize!r}"
            )
        self.dropout = check_rate("dropout", dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None

    # ------------------------------------------------------------------ build
    def _dense(self, units, name, input_shape):
        layer = keras.layers.Dense(
            units, use_bias=False, name=name, dtype=self.dtype_policy,
            kernel_initializer=clone_initializer(self.kernel_initializer),
        )
        layer.build(input_shape)
        return layer

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_input_shapes(query_shape, value_shape, key_shape)
        fq, fk = query_shape[-1], key_shape[-1]
        if self.score == "dot" and fq is not None and fk is not None and fq != fk:
            raise ValueError(
                "score='dot' needs queries and keys with the same number of features; "
                "use score='general' to learn a map between them. Received: "
                f"query.shape={tuple(query_shape)}, key.shape={tuple(key_shape)}"
            )
        units = self.units or fq
        if self.score == "general":
            self._key_dense = self._dense(fq, "key_dense", key_shape)
        elif self.score == "concat":
            self._query_dense = self._dense(units, "query_dense", query_shape)
            self._key_dense = self._dense(units, "key_dense", key_shape)
            self.attention_v = self.add_weight(
                name="attention_v", shape=(units,),
                initializer=clone_initializer(self.kernel_initializer),
            )
        self.attention_g = None
        if self.scale:
            self.attention_g = self.add_weight(name="attention_g", shape=(),
                                               initializer="ones")
        if self.mode == "local-p":
            self._position_dense = self._dense(units, "position_dense", query_shape)
            self.position_v = self.add_weight(
                name="position_v", shape=(units,),
                initializer=clone_initializer(self.kernel_initializer),
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
        query_start=None,
    ):
        if isinstance(query_start, numbers.Number):
            query_start = check_positive_int("query_start", query_start, allow_zero=True)
        return self._attention_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            use_causal_mask, return_attention_scores, training,
            query_start=query_start, position_start=query_start,
        )

    def _energy(self, query, key):
        """Score of every query against every key: `(B, T, S)` in the compute dtype."""
        if self.score == "dot":
            energy = ops.einsum("btf,bsf->bts", query, key)
        elif self.score == "general":
            energy = ops.einsum("btf,bsf->bts", query, self._key_dense(key))
        else:
            q = self._query_dense(query)  # (B, T, U)
            k = self._key_dense(key)  # (B, S, U)
            energy = additive_energy(q, k, ops.cast(self.attention_v, q.dtype))
        if self.scale:
            energy = energy * ops.cast(self.attention_g, energy.dtype)
        return energy  # (B, T, S)

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, position_start=None):
        query = ops.cast(query, self.compute_dtype)
        key = ops.cast(key, self.compute_dtype)
        value = ops.cast(value, self.compute_dtype)
        t, s = ops.shape(query)[1], ops.shape(key)[1]
        mask = merge_causal_mask(mask, use_causal_mask, t, s, position_start)  # (B|1, T, S)
        energy = self._energy(query, key)  # (B, T, S)
        positions = ops.arange(s, dtype="float32")  # (S,)
        gaussian = None
        if self.mode == "local-m":
            start = s - t if position_start is None else position_start
            center = ops.arange(t, dtype="int32") + ops.cast(start, "int32")  # (T,)
            center = ops.cast(ops.clip(center, 0, s - 1), "float32")
            window = ops.abs(positions[None, :] - center[:, None]) <= self.window  # (T, S)
            mask = window[None] if mask is None else ops.logical_and(mask, window[None])
        elif self.mode == "local-p":
            center = self._predicted_position(query, mask, s)  # (B, T) float32
            distance = positions[None, None, :] - center[:, :, None]  # (B, T, S)
            window = ops.abs(distance) <= self.window
            mask = window if mask is None else ops.logical_and(mask, window)
            sigma = self.window / 2.0
            gaussian = ops.exp(-ops.square(distance) / (2.0 * sigma**2))  # (B, T, S)
        weights = masked_softmax(energy, mask)  # (B, T, S) float32
        if gaussian is not None:
            weights = weights * gaussian
            if self.renormalize:
                total = ops.sum(weights, axis=-1, keepdims=True)  # (B, T, 1)
                weights = weights / ops.where(total > 0.0, total, 1.0)
        if training and self.dropout:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        weights = ops.cast(weights, value.dtype)
        output = ops.einsum("bts,bsf->btf", weights, value)  # (B, T, F_v)
        scores = weights[:, None] if return_attention_scores else None  # (B, 1, T, S)
        return output, scores

    def _predicted_position(self, query, mask, key_length):
        """local-p centres `p_t = L_t * sigmoid(v_p^T tanh(W_p h_t))`: `(B, T)` float32."""
        hidden = ops.tanh(self._position_dense(query))  # (B, T, U)
        logit = ops.einsum("btu,u->bt", hidden, ops.cast(self.position_v, hidden.dtype))
        gate = ops.sigmoid(ops.cast(logit, "float32"))  # (B, T)
        if mask is None:
            last = ops.cast(key_length - 1, "float32")
        else:
            index = ops.arange(key_length, dtype="int32")  # (S,)
            last = ops.max(ops.where(mask, index, 0), axis=-1)  # (B|1, T)
            last = ops.cast(last, "float32")
        return last * gate  # (B, T)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "score": self.score,
                "mode": self.mode,
                "window": self.window,
                "units": self.units,
                "scale": self.scale,
                "renormalize": self.renormalize,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
