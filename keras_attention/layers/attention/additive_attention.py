"""Additive (Bahdanau) attention for sequence-to-sequence models.

Shape legend: B batch, T query (decoder) length, S key (encoder memory) length,
F_q query features, F_k key features, F_v value features, U units.
"""

import keras
from keras import ops

from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.ops.masked_softmax import masked_softmax
from keras_attention.ops.seq2seq import additive_energy, merge_causal_mask, weight_normalized
from keras_attention.utils.initializers import clone_initializer
from keras_attention.utils.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_attention")
class AdditiveAttention(BaseAttention):
    """Additive attention of Bahdanau et al. 2014, "Neural Machine Translation by
    Jointly Learning to Align and Translate".

    Each decoder state `s_t` (a query row) is scored against each encoder state
    `h_j` (a key row) with a one-hidden-layer network,

        e_{t,j} = v^T tanh(W1 s_t + W2 h_j + b),

    the scores are softmax-normalised over the memory and the output is the context
    vector `c_t = sum_j a_{t,j} v_j`, the weighted sum of the values (the encoder
    memory itself, not a projection of it). Keys default to the values, so
    `layer(decoder_states, encoder_states)` is the classic setup; `T` may be 1 for
    one decoding step.

    With `normalize=True`, `v` is weight-normalised (Salimans & Kingma 2016):
    `v` is replaced by `g * v / ||v||` with a learned scalar `g` initialised to
    `sqrt(1 / units)` (as in tensorflow-addons' `BahdanauAttention(normalize=True)`).

    Migrating from `tfa.seq2seq.BahdanauAttention(units, memory, normalize=...)`:
    the tfa layer has no bias `b` unless `normalize=True`, so use
    `AdditiveAttention(units, use_bias=normalize, normalize=normalize)` for the same
    function, pass the memory as `value`, and its sequence lengths as `value_mask`.

    The layer forms a `(B, T, S, units)` intermediate: fine for seq2seq sizes
    (hundreds of positions), not for long-sequence self-attention.

    Args:
        units: size U of the hidden layer of the score network.
        use_bias: add a learned bias `b` inside the tanh.
        normalize: weight-normalise `v` with a learned scale `g`.
        dropout: dropout rate on the attention weights (training only).
        kernel_initializer: initializer of `W1`, `W2` and `v`.
        bias_initializer: initializer of `b`.
        seed: seed of the attention dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: decoder states `(B, T, F_q)`.
        value: encoder memory `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` masks; filled
            from Keras implicit masks when not given.
        attention_mask: boolean `(B, T, S)`, True where attention is allowed.
        use_causal_mask: query i attends keys `j <= i + (S - T)`.
        return_attention_scores: also return the `(B, 1, T, S)` weights.
        training: enables dropout.

    Returns:
        The context vectors `(B, T, F_v)`, or `(context, scores)` with
        `return_attention_scores`. Query rows with no allowed key give zero context
        and zero weights.

    Example:

    >>> decoder = keras.random.normal((2, 7, 32))
    >>> encoder = keras.random.normal((2, 11, 48))
    >>> AdditiveAttention(units=16)(decoder, encoder).shape
    (2, 7, 48)
    """

    def __init__(
        self,
        units,
        use_bias=True,
        normalize=False,
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.use_bias = bool(use_bias)
        self.normalize = bool(normalize)
        self.dropout = check_rate("dropout", dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_input_shapes(query_shape, value_shape, key_shape)
        self._query_dense = keras.layers.Dense(
            self.units, use_bias=False, name="query_dense", dtype=self.dtype_policy,
            kernel_initializer=clone_initializer(self.kernel_initializer),
        )
        self._query_dense.build(query_shape)
        self._key_dense = keras.layers.Dense(
            self.units, use_bias=False, name="key_dense", dtype=self.dtype_policy,
            kernel_initializer=clone_initializer(self.kernel_initializer),
        )
        self._key_dense.build(key_shape)
        self.attention_v = self.add_weight(
            name="attention_v", shape=(self.units,),
            initializer=clone_initializer(self.kernel_initializer),
        )
        self.attention_g = None
        if self.normalize:
            self.attention_g = self.add_weight(
                name="attention_g", shape=(),
                initializer=keras.initializers.Constant((1.0 / self.units) ** 0.5),
            )
        self.attention_b = None
        if self.use_bias:
            self.attention_b = self.add_weight(
                name="attention_b", shape=(self.units,),
                initializer=clone_initializer(self.bias_initializer),
            )
        self.built = True

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores):
        value = ops.cast(value, self.compute_dtype)
        q = self._query_dense(query)  # (B, T, U)
        k = self._key_dense(key)  # (B, S, U)
        v = ops.cast(self.attention_v, q.dtype)
        if self.normalize:
            v = weight_normalized(v, ops.cast(self.attention_g, "float32"))
        b = None if self.attention_b is None else ops.cast(self.attention_b, q.dtype)
        energy = additive_energy(q, k, v, b)  # (B, T, S)
        mask = merge_causal_mask(mask, use_causal_mask, ops.shape(query)[1],
                                 ops.shape(key)[1])
        weights = masked_softmax(energy, mask)  # (B, T, S) float32
        if training and self.dropout:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        weights = ops.cast(weights, value.dtype)
        output = ops.einsum("bts,bsf->btf", weights, value)  # (B, T, F_v)
        scores = weights[:, None] if return_attention_scores else None  # (B, 1, T, S)
        return output, scores

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "use_bias": self.use_bias,
                "normalize": self.normalize,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config
