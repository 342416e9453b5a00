"""Monotonic attention (Raffel et al. 2017) for online sequence-to-sequence models.

Shape legend: B batch, T query (decoder) length, S key (encoder memory) length,
F_q query features, F_k key features, F_v value features, U units.
"""

import keras
from keras import ops

from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.ops.masked_softmax import MASK_VALUE
from keras_attention.ops.seq2seq import additive_energy, merge_causal_mask, weight_normalized
from keras_attention.utils.initializers import clone_initializer
from keras_attention.utils.validation import check_choice, check_positive_int

SCORES = ("bahdanau", "luong")
MODES = ("auto", "parallel", "hard")
# Lower clip of `log(1 - p)`: a key chosen with certainty lets exp(-100) of the mass
# through instead of exactly 0, which keeps every logarithm and sum finite.
LOG_KEEP_MIN = -100.0
# Query lengths up to this are unrolled in Python (fast eager calls and short
# compiles); longer or dynamic lengths use `keras.ops.scan`.
UNROLL_MAX_STEPS = 16
# Log of a zero previous alignment: the package's finite mask value, so that
# gradients stay finite.
LOG_ZERO = MASK_VALUE


def _exclusive_cumsum(x):
    """Cumulative sum along the last axis, shifted right by one (first entry 0)."""
    total = ops.cumsum(x, axis=-1)
    return ops.concatenate([ops.zeros_like(total[..., :1]), total[..., :-1]], axis=-1)


def _logcumsumexp(x):
    """`log(cumsum(exp(x)))` along the last axis, computed stably.

    With a static length this is a Hillis-Steele scan of `logaddexp` over shifts
    1, 2, 4, ... (log2(S) steps). When the length is not a static int (unknown
    TensorFlow dimension, symbolic JAX shape inference) it falls back to a masked
    `(..., S, S)` logsumexp, which needs no loop over S.
    """
    length = x.shape[-1]
    if not isinstance(length, int):
        n = ops.shape(x)[-1]
        lower = ops.arange(n)[None, :] <= ops.arange(n)[:, None]  # (S, S): k <= j
        pairs = ops.where(lower, x[..., None, :], LOG_ZERO)  # (..., S, S)
        return ops.logsumexp(pairs, axis=-1)
    shift = 1
    while shift < length:
        pad = ops.full_like(x[..., :shift], LOG_ZERO)
        x = ops.logaddexp(x, ops.concatenate([pad, x[..., :-shift]], axis=-1))
        shift *= 2
    return x


def expected_alignment(p_choose, log_keep, previous):
    """One step of the expected monotonic alignment, parallel (closed) form.

    `alpha_j = p_j * sum_{k<=j} previous_k * prod_{l=k}^{j-1} (1 - p_l)`
    (Raffel et al. 2017, eq. 9). The paper's closed form
    `p * cumprod(1 - p) * cumsum(previous / cumprod(1 - p))` divides by a
    cumulative product that underflows as soon as some key before the current
    position has `p` close to 1 (common in a trained model), and clipping the
    divisor then silently loses the carried mass. Here the same closed form is
    evaluated in log space: with `L = exclusive_cumsum(log(1 - p))`,
    `alpha_j = p_j * exp(L_j + logcumsumexp_k(log(previous_k) - L_k))`. The
    exponent is at most `log(sum(previous))`, so nothing overflows or underflows
    spuriously, and every logarithm is finite (no NaN or inf, in values or
    gradients). `L` is a difference of sums, so its rounding error grows with the
    number of near-certain keys before position j (about 1e-7 relative per unit
    of `|L_j|` in float32).

    Args:
        p_choose: `(B, S)` float32 choose probabilities (0 on masked keys).
        log_keep: `(B, S)` float32 `log(1 - p_choose)`, computed by the caller as
            `-softplus(energy)` (exact where `p` rounds to 1) and clipped below.
        previous: `(B, S)` float32 previous alignment.

    Returns:
        `(B, S)` float32 alignment, each row summing to at most the previous row's sum.
    """
    log_cumprod = _exclusive_cumsum(log_keep)  # (B, S), <= 0
    positive = previous > 0.0
    log_previous = ops.where(positive, ops.log(ops.where(positive, previous, 1.0)), LOG_ZERO)
    carried = _logcumsumexp(log_previous - log_cumprod)  # (B, S)
    return p_choose * ops.exp(log_cumprod + carried)  # (B, S)


def hard_alignment(p_choose, previous):
    """One step of hard monotonic attention: the first key at or after the previous
    attended one with `p >= 0.5`, one-hot; zeros when there is none.

    `previous` is one-hot (or zero). A soft `previous` is treated through its
    cumulative sum: the result is the first chosen key at or after the first
    position where it is non-zero, weighted by the cumulative sum there.
    """
    z = ops.cast(p_choose >= 0.5, "float32")  # (B, S) keys that would be chosen
    start = ops.cumsum(previous, axis=-1)  # (B, S), 1 from the previous index on
    chosen_before = _exclusive_cumsum(z * start)  # (B, S), > 0 after the first choice
    return z * start * ops.cast(chosen_before == 0.0, "float32")  # (B, S)


@keras.saving.register_keras_serializable(package="keras_attention")
class MonotonicAttention(BaseAttention):
    """Monotonic attention of Raffel et al. 2017, "Online and Linear-Time Attention
    by Enforcing Monotonic Alignments".

    At output step i the decoder scans the memory left to right from where it
    stopped at step i - 1 and stops at key j with probability
    `p_{i,j} = sigmoid(e_{i,j} + r)` (`r` a learned scalar bias initialised to
    `score_bias_init`); the context vector is the value it stops at. The query rows
    `(B, T, F_q)` are the decoder states of steps `0 .. T - 1`, processed in order
    in one call; the energies `e_{i,j}` are

    - `"bahdanau"`: `v^T tanh(W1 q_i + W2 k_j)` (with `normalize=True`,
      `g v / ||v||` and a bias `b` inside the tanh, `g` initialised to
      `sqrt(1 / units)`, as in tensorflow-addons' `BahdanauMonotonicAttention`);
    - `"luong"`: `q_i^T W k_j`, times a learned scalar `g` with `scale=True`.

    Two ways of computing the alignment:

    - expected (training): the expected alignment of the stochastic process,
      `alpha_{i,j} = p_{i,j} sum_{k<=j} alpha_{i-1,k} prod_{l=k}^{j-1}(1 - p_{i,l})`,
      in the paper's parallel (cumulative sum and product) form evaluated in log
      space so that saturated probabilities lose no mass (see
      `expected_alignment`), one step per query row (a Python loop for static
      T <= 16, `keras.ops.scan` otherwise; differentiable either way). Gaussian
      noise of standard deviation `sigmoid_noise` is added to the energies while
      training, as the paper recommends to push `p` towards 0 or 1.
    - hard (inference): one-hot at the first key `j >= t_{i-1}` with
      `p_{i,j} >= 0.5`. When no such key exists the decoder has run off the end of
      the memory: the step attends nothing (zero context, zero alignment) and, as
      in the expected-alignment recurrence, so do all later steps.

    `mode="auto"` (default) uses the expected alignment when `training` is True and
    the hard one otherwise; `"parallel"` always uses the expected alignment (e.g. to
    evaluate the training objective), `"hard"` always the hard one (not
    differentiable with respect to the score network).

    The alignments are **not** normalised: the mass that runs off the end of the
    memory is dropped, so rows of the expected alignment sum to at most one and
    hard rows are one-hot or zero (normalising would break online decoding and the
    match with the hard process, as the paper explains).

    Alignment state: the step before the first query starts from
    `previous_alignment` (default one-hot at position 0). To decode one step at a
    time, pass the last row of the returned scores back as `previous_alignment`.
    Masked keys get `p = 0` (never chosen). A query row with no allowed key is
    skipped: zero alignment and context, and the alignment state carries over to
    the next row unchanged. `use_causal_mask=True` is supported as one more mask
    (query i may stop only at keys `j <= i + (S - T)`); mass that would move past
    the allowed keys runs off the end, so it is rarely what a monotonic model wants.

    Args:
        units: hidden size of the `"bahdanau"` energy; defaults to the query's
            features. Must be None with `"luong"`.
        score: `"bahdanau"` or `"luong"`.
        normalize: `"bahdanau"` only: weight-normalised `v` and bias `b`.
        scale: `"luong"` only: multiply the energies by a learned scalar.
        sigmoid_noise: standard deviation of the pre-sigmoid noise while training
            (expected alignment only).
        score_bias_init: initial value of the energy bias `r`; a negative value
            (e.g. -4) makes the initial alignments spread further along the memory,
            which helps with long memories.
        mode: `"auto"`, `"parallel"` or `"hard"`.
        kernel_initializer: initializer of the energy weights.
        seed: seed of the sigmoid noise.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: decoder states `(B, T, F_q)`, one row per output step.
        value: encoder memory `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` masks; filled
            from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, True where attention is allowed.
        use_causal_mask: also forbid keys `j > i + (S - T)`.
        return_attention_scores: also return the `(B, 1, T, S)` alignments.
        training: selects the expected alignment (with `mode="auto"`) and the noise.
        previous_alignment: optional `(B, S)` alignment before the first query row
            (one-hot or zero in hard mode).

    Returns:
        The context vectors `(B, T, F_v)`, or `(context, alignments)` with
        `return_attention_scores`.

    Example:

    >>> decoder = keras.random.normal((2, 7, 32))
    >>> encoder = keras.random.normal((2, 11, 32))
    >>> layer = MonotonicAttention(units=16, score_bias_init=-1.0)
    >>> layer(decoder, encoder, training=True).shape
    (2, 7, 32)
    """

    def __init__(
        self,
        units=None,
        score="bahdanau",
        normalize=False,
        scale=False,
        sigmoid_noise=0.0,
        score_bias_init=0.0,
        mode="auto",
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.score = check_choice("score", score, SCORES)
        self.units = check_positive_int("units", units, allow_none=True)
        if self.units is not None and self.score != "bahdanau":
            raise ValueError(
                f"`units` is only used by score='bahdanau'. Received: units={units}"
            )
        self.normalize = bool(normalize)
        if self.normalize and self.score != "bahdanau":
            raise ValueError(
                "`normalize` only applies to score='bahdanau'. "
                f"Received: normalize={normalize!r}"
            )
        self.scale = bool(scale)
        if self.scale and self.score != "luong":
            raise ValueError(
                f"`scale` only applies to score='luong'. Received: scale={scale!r}"
            )
        self.sigmoid_noise = self._check_number("sigmoid_noise", sigmoid_noise)
        if self.sigmoid_noise < 0:
            raise ValueError(
                "`sigmoid_noise` must be non-negative. "
                f"Received: sigmoid_noise={sigmoid_noise}"
            )
        self.score_bias_init = self._check_number("score_bias_init", score_bias_init)
        self.mode = check_choice("mode", mode, MODES)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.sigmoid_noise else None

    @staticmethod
    def _check_number(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
        return float(value)

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
        self.attention_g = None
        self.attention_b = None
        if self.score == "bahdanau":
            units = self.units or query_shape[-1]
            self._query_dense = self._dense(units, "query_dense", query_shape)
            self._key_dense = self._dense(units, "key_dense", key_shape)
            self.attention_v = self.add_weight(
                name="attention_v", shape=(units,),
                initializer=clone_initializer(self.kernel_initializer),
            )
            if self.normalize:
                self.attention_g = self.add_weight(
                    name="attention_g", shape=(),
                    initializer=keras.initializers.Constant((1.0 / units) ** 0.5),
                )
                self.attention_b = self.add_weight(name="attention_b", shape=(units,),
                                                   initializer="zeros")
        else:
            self._key_dense = self._dense(query_shape[-1], "key_dense", key_shape)
            if self.scale:
                self.attention_g = self.add_weight(name="attention_g", shape=(),
                                                   initializer="ones")
        self.score_bias = self.add_weight(
            name="score_bias", shape=(),
            initializer=keras.initializers.Constant(self.score_bias_init),
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
        previous_alignment=None,
    ):
        if previous_alignment is not None:
            previous_alignment = ops.convert_to_tensor(previous_alignment)
            s = value.shape[1] if key is None else key.shape[1]
            self._check_mask("previous_alignment", previous_alignment, (query.shape[0], s))
        return self._attention_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            use_causal_mask, return_attention_scores, training,
            previous_alignment=previous_alignment,
        )

    def _energy(self, query, key):
        """Pre-sigmoid energies `e + r`: `(B, T, S)` float32."""
        if self.score == "bahdanau":
            q = self._query_dense(query)  # (B, T, U)
            k = self._key_dense(key)  # (B, S, U)
            v = ops.cast(self.attention_v, q.dtype)
            b = None
            if self.normalize:
                v = weight_normalized(v, ops.cast(self.attention_g, "float32"))
                b = ops.cast(self.attention_b, q.dtype)
            energy = additive_energy(q, k, v, b)  # (B, T, S)
        else:
            energy = ops.einsum("btf,bsf->bts", query, self._key_dense(key))  # (B, T, S)
        energy = ops.cast(energy, "float32")
        if self.scale:
            energy = energy * ops.cast(self.attention_g, "float32")
        return energy + ops.cast(self.score_bias, "float32")

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, previous_alignment=None):
        query = ops.cast(query, self.compute_dtype)
        key = ops.cast(key, self.compute_dtype)
        value = ops.cast(value, self.compute_dtype)
        b, t, s = ops.shape(query)[0], ops.shape(query)[1], ops.shape(key)[1]
        mask = merge_causal_mask(mask, use_causal_mask, t, s)  # (B|1, T, S)
        hard = self.mode == "hard" or (self.mode == "auto" and not training)
        energy = self._energy(query, key)  # (B, T, S)
        if self.sigmoid_noise and training and not hard:
            noise = keras.random.normal(ops.shape(energy), seed=self.seed_generator)
            energy = energy + self.sigmoid_noise * noise
        p_choose = ops.sigmoid(energy)  # (B, T, S)
        log_keep = ops.maximum(-ops.softplus(energy), LOG_KEEP_MIN)  # log(1 - p)
        if mask is not None:
            mask = ops.broadcast_to(mask, ops.shape(p_choose))
            p_choose = ops.where(mask, p_choose, 0.0)  # masked keys: never chosen
            log_keep = ops.where(mask, log_keep, 0.0)
            valid = ops.cast(ops.any(mask, axis=-1), "float32")  # (B, T)
        else:
            valid = ops.ones((b, t), "float32")
        if previous_alignment is None:
            first = ops.cast(ops.arange(s) == 0, "float32")  # (S,)
            previous_alignment = ops.broadcast_to(first[None], (b, s))  # (B, S)
        previous_alignment = ops.cast(previous_alignment, "float32")

        def step(state, inputs):
            p_i, log_keep_i, valid_i = inputs  # (B, S), (B, S), (B, 1)
            if hard:
                alpha = hard_alignment(p_i, state)  # (B, S)
            else:
                alpha = expected_alignment(p_i, log_keep_i, state)  # (B, S)
            alpha = alpha * valid_i
            state = alpha + (1.0 - valid_i) * state  # skipped rows carry over
            return state, alpha

        # One stacked tensor per step (the TensorFlow scan cannot take several
        # inputs of dynamic length): choose probabilities, log(1 - p), row validity.
        xs = ops.concatenate([p_choose, log_keep, valid[:, :, None]], axis=-1)  # (B, T, 2S+1)

        def split(x):  # (B, 2S + 1) -> the three step inputs
            return x[:, :s], x[:, s:-1], x[:, -1:]

        steps = query.shape[1]
        if isinstance(steps, int) and 0 < steps <= UNROLL_MAX_STEPS:
            state, rows = previous_alignment, []
            for i in range(steps):
                state, alpha = step(state, split(xs[:, i]))
                rows.append(alpha)
            alignments = ops.stack(rows, axis=1)  # (B, T, S)
        else:
            xs = ops.transpose(xs, (1, 0, 2))  # (T, B, 2S + 1)
            _, alignments = ops.scan(lambda c, x: step(c, split(x)),
                                     previous_alignment, xs)  # (T, B, S)
            alignments = ops.transpose(alignments, (1, 0, 2))  # (B, T, S)
        weights = ops.cast(alignments, value.dtype)
        output = ops.einsum("bts,bsf->btf", weights, value)  # (B, T, F_v)
        scores = weights[:, None] if return_attention_scores else None  # (B, 1, T, S)
        return output, scores

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "score": self.score,
                "normalize": self.normalize,
                "scale": self.scale,
                "sigmoid_noise": self.sigmoid_noise,
                "score_bias_init": self.score_bias_init,
                "mode": self.mode,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
