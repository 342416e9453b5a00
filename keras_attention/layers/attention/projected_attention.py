"""The shared base of the attention layers with query, key, value and output
projections: heads, head sizes, key/value heads, bias, output shape, attention
axes, position encoding, gate, dropout, seed, initializers, regularizers and
constraints, and the pipeline around the per-head hook `_attend_heads`.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features (one or
more axes), L positions of the attention axes (their product), B' the batch
times the positions of the other axes.
"""

import math
import string

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.utils.validation import check_rate

# The sublayers that `query_dense`, `key_dense`, `value_dense` and `output_dense`
# return. Weights are saved under these attribute names (`_query_dense/vars`, as
# before the public names existed), so files written by earlier versions load.
_PROJECTIONS = {
    "query_dense": "_query_dense",
    "key_dense": "_key_dense",
    "value_dense": "_value_dense",
    "output_dense": "_output_dense",
}


class _Projection(keras.layers.EinsumDense):
    """`EinsumDense` for the query, key, value, gate and output projections.

    The attention layer applies the masks itself: Keras passes a tensor's implicit
    mask in as `query_mask`/`value_mask`, and `BaseAttention` clears it from the
    tensor. On JAX, Keras keeps that mask beside the array, out of reach of its
    public API, so the projection still sees it; it accepts it and passes no mask
    on, where `EinsumDense` warns that it drops the mask.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def quantize(self, mode=None, type_check=True, config=None):
        # `EinsumDense` refuses subclasses, which may change its maths; this one
        # changes only mask handling, so `model.quantize` may quantize it.
        super().quantize(mode, type_check=False, config=config)


def _positive_int(name, value, allow_none=False):
    """Keras's check and message for `num_heads`, `key_dim`, `value_dim`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        expected = "a positive integer or `None`" if allow_none else "a positive integer"
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected {expected}. "
            f"Received: {name}={value}"
        )
    return value


def _output_shape(output_shape, output_dim):
    """`output_shape` (int or sequence of ints) or the older `output_dim` as a tuple,
    or None."""
    if output_dim is not None:
        if output_shape is not None:
            raise ValueError(
                "`output_dim` is the former name of `output_shape`; pass only "
                f"`output_shape`. Received: output_shape={output_shape!r}, "
                f"output_dim={output_dim!r}"
            )
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim <= 0:
            raise ValueError(
                f"`output_dim` must be a positive integer. Received: output_dim={output_dim!r}"
            )
        output_shape = output_dim
    if output_shape is None:
        return None
    if isinstance(output_shape, int) and not isinstance(output_shape, bool):
        output_shape = (output_shape,)
    try:
        output_shape = tuple(output_shape)
    except TypeError:
        raise ValueError(
            f"Invalid `output_shape`: {output_shape}. When specified, the "
            "`output_shape` should be of type tuple, list, or int. "
            f"Received: output_shape={output_shape!r}"
        ) from None
    if not output_shape or any(
        isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in output_shape
    ):
        raise ValueError(
            "`output_shape` must be a positive integer or a non-empty sequence of "
            f"positive integers. Received: output_shape={output_shape!r}"
        )
    return output_shape


def _attention_axes(attention_axes):
    if attention_axes is None:
        return None
    if isinstance(attention_axes, int) and not isinstance(attention_axes, bool):
        return (attention_axes,)
    if not isinstance(attention_axes, (list, tuple)) or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in attention_axes
    ):
        raise ValueError(
            "`attention_axes` must be an int, list, or tuple. "
            f"Received: attention_axes={attention_axes}"
        )
    return tuple(attention_axes)


def resolve_position_encoding(position_encoding, num_heads):
    """An `AttentionPositionEncoding` from an instance, a config dict or a short name."""
    if position_encoding is None or isinstance(position_encoding, AttentionPositionEncoding):
        return position_encoding
    if isinstance(position_encoding, dict):
        layer = keras.saving.deserialize_keras_object(position_encoding)
    elif isinstance(position_encoding, str):
        layer = _named_position_encoding(position_encoding, num_heads)
    else:
        layer = None
    if not isinstance(layer, AttentionPositionEncoding):
        raise ValueError(
            "`position_encoding` must be an attention position encoding layer "
            "(RotaryEmbedding, ALiBi, RelativePositionBias, RelativePositionEmbedding), "
            "its config, or one of 'rotary', 'alibi', 't5', 'shaw'. "
            f"Received: position_encoding={position_encoding!r}"
        )
    return layer


def _named_position_encoding(name, num_heads):
    """A default encoding for a short name, or None for an unknown name."""
    from keras_attention.layers.encodings.alibi import ALiBi
    from keras_attention.layers.encodings.relative_position_bias import RelativePositionBias
    from keras_attention.layers.encodings.relative_position_embedding import (
        RelativePositionEmbedding,
    )
    from keras_attention.layers.encodings.rotary_embedding import RotaryEmbedding

    makers = {
        "rotary": RotaryEmbedding,
        "alibi": lambda: ALiBi(num_heads),
        "t5": lambda: RelativePositionBias(num_heads),
        "shaw": lambda: RelativePositionEmbedding(max_distance=16),
    }
    return makers[name]() if name in makers else None


def adds_logits_bias(encoding):
    """True when the encoding adds a logits bias or reads the weights (not rotary)."""
    if encoding is None:
        return False
    adds_bias = type(encoding).attention_bias is not AttentionPositionEncoding.attention_bias
    return adds_bias or encoding.requires_weights


class ProjectedAttention(BaseAttention):
    """Base of the attention layers with query/key/value/output projections (not
    used directly; see `MultiHeadAttention` and the module docstring of
    `base_attention` for the per-head hook a subclass overrides).

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`);
            defaults to `num_heads`.
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        output_shape: output features: an int, or a tuple for several output axes;
            defaults to the query's features.
        attention_axes: for inputs of rank > 3, the axes attended over (int or
            tuple; the others act as batch axes); None attends over every axis
            but the batch and the features, as one flattened sequence.
        use_gate: multiply each head's output by a sigmoid gate projected from the
            query before the output projection (Qiu et al. 2025).
        position_encoding: an `AttentionPositionEncoding` layer (RotaryEmbedding,
            ALiBi, RelativePositionBias, RelativePositionEmbedding), its config, or
            one of `"rotary"`, `"alibi"`, `"t5"`, `"shaw"`.
        kernel_initializer, bias_initializer: projection initializers.
        kernel_regularizer, bias_regularizer, activity_regularizer: projection
            regularizers (the activity regularizer acts on each projection's output).
        kernel_constraint, bias_constraint: projection constraints.
        seed: seed of the attention dropout.
        output_dim: deprecated former name of `output_shape` (an int); still
            accepted so that older configs load.
        **kwargs: base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        use_gate=False,
        position_encoding=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        output_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _positive_int("num_heads", num_heads)
        self.key_dim = _positive_int("key_dim", key_dim)
        self.value_dim = _positive_int("value_dim", value_dim, allow_none=True)
        self.num_key_value_heads = _positive_int(
            "num_key_value_heads", num_key_value_heads, allow_none=True
        )
        kv_heads = self.num_key_value_heads or self.num_heads
        if self.num_heads % kv_heads:
            raise ValueError(
                "`num_heads` must be a multiple of `num_key_value_heads`. "
                f"Received: num_heads={num_heads}, num_key_value_heads={num_key_value_heads}"
            )
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        # Stored privately, as in Keras: a public `output_shape` attribute would
        # shadow the one Keras reads from models in `summary()`.
        self._output_shape = _output_shape(output_shape, output_dim)
        self.attention_axes = _attention_axes(attention_axes)
        self.use_gate = bool(use_gate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self._activity_regularizer = keras.regularizers.get(activity_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = seed
        self.position_encoding = resolve_position_encoding(position_encoding, self.num_heads)
        if not self.supports_logits_bias and adds_logits_bias(self.position_encoding):
            raise ValueError(
                f"{type(self).__name__} never forms the (T, S) attention logits, so it "
                "cannot use a position encoding that adds a logits bias (ALiBi, T5, "
                f"Shaw); use 'rotary'. Received: position_encoding={position_encoding!r}"
            )
        self._kv_heads = kv_heads
        self._value_dim = self.value_dim or self.key_dim
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None

    @property
    def output_dim(self):
        """The output features when `output_shape` has one axis (deprecated name)."""
        shape = self._output_shape
        return shape if shape is None or len(shape) > 1 else shape[0]

    # ------------------------------------------------------------------ projections
    @property
    def query_dense(self):
        """The query projection `(B, T, F) -> (B, T, N, H)`, an `EinsumDense`."""
        return self._query_dense

    @property
    def key_dense(self):
        """The key projection `(B, S, F_k) -> (B, S, K, H)`, an `EinsumDense`."""
        return self._key_dense

    @property
    def value_dense(self):
        """The value projection `(B, S, F_v) -> (B, S, K, V)`, an `EinsumDense`."""
        return self._value_dense

    @property
    def output_dense(self):
        """The output projection `(B, T, N, V) -> (B, T, *O)`, an `EinsumDense`."""
        return self._output_dense

    def __dir__(self):
        # Keras saves a sublayer's weights under the first attribute name that
        # reaches it, public names first: listing the public aliases would move
        # them from `_query_dense/vars` to `query_dense/vars`, and files written
        # before the aliases existed would no longer load.
        return [name for name in super().__dir__() if name not in _PROJECTIONS]

    def _dense(self, name, equation, output_shape, bias_axes, activation=None):
        """A projection sublayer with the layer's initializers, regularizers and
        constraints (fresh initializer instances, so weights differ)."""
        return _Projection(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            activation=activation,
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            bias_initializer=keras.initializers.get(
                keras.initializers.serialize(self.bias_initializer)
            ),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            activity_regularizer=self._activity_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_key_value_shapes(value_shape, key_shape)
        if len(query_shape) > 3:
            self._attention_layout(len(query_shape), query_shape)  # checks the axes
        else:
            # The layer's shape checks (its own included) see the symbolic shapes here;
            # when `call` is traced, unknown lengths have been given sizes.
            self._check_input_shapes(query_shape, value_shape, key_shape)
        # Heads project the last axis only; higher-rank inputs are folded to rank 3.
        query_shape = (None, None, query_shape[-1])
        value_shape = (None, None, value_shape[-1])
        key_shape = (None, None, key_shape[-1])
        n, k, h, v = self.num_heads, self._kv_heads, self.key_dim, self._value_dim
        out = self._output_shape or (query_shape[-1],)
        self._query_dense = self._dense("query", "btf,fnh->btnh", (None, n, h), "nh")
        self._query_dense.build(query_shape)
        self._key_dense = self._dense("key", "bsf,fkh->bskh", (None, k, h), "kh")
        self._key_dense.build(key_shape)
        if self.use_gate:  # built between key and value, in Keras's weight order
            self._gate_dense = self._dense("gate", "btf,fnv->btnv", (None, n, v), "nv",
                                           activation="sigmoid")
            self._gate_dense.build(query_shape)
        self._value_dense = self._dense("value", "bsf,fkv->bskv", (None, k, v), "kv")
        self._value_dense.build(value_shape)
        letters = string.ascii_lowercase[14:14 + len(out)]  # o, p, ...
        self._output_dense = self._dense(
            "attention_output", f"btnv,nv{letters}->bt{letters}", (None, *out), letters
        )
        self._output_dense.build((None, None, n, v))
        if self.position_encoding is not None:
            self.position_encoding.check_attention_shapes(n, h, v)
            if not self.position_encoding.built:
                self.position_encoding.build((None, None, n, h))
        self.built = True

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_key_value_shapes(value_shape, key_shape)
        query_shape = tuple(query_shape)
        if self._output_shape:
            return query_shape[:-1] + self._output_shape
        return query_shape

    def compute_output_spec(self, *args, **kwargs):
        # Traced from `call` (the result's structure depends on the call's flags),
        # not from `compute_output_shape` as `Layer` would.
        return super(keras.layers.Layer, self).compute_output_spec(*args, **kwargs)

    # ------------------------------------------------------------------ attention axes
    def _folds_axes(self):
        return True

    def _attention_layout(self, rank, query_shape=None):
        """`(other axes, attention axes)` of an input of rank `rank` > 3."""
        middle = range(1, rank - 1)
        axes = tuple(middle) if self.attention_axes is None else tuple(
            a + rank if a < 0 else a for a in self.attention_axes
        )
        if not axes or len(set(axes)) != len(axes) or any(a not in middle for a in axes):
            raise ValueError(
                "`attention_axes` must be distinct axes of the query other than the "
                f"batch (0) and the features ({rank - 1}). Received: "
                f"attention_axes={self.attention_axes} for query_shape="
                f"{None if query_shape is None else tuple(query_shape)}"
            )
        axes = tuple(sorted(axes))
        return tuple(a for a in middle if a not in axes), axes

    # ------------------------------------------------------------------ pipeline
    def _project(self, query, key, value, query_start, key_start):
        """Per-head projections `(B, T, N, H)`, `(B, S, K, H)`, `(B, S, K, V)`,
        transformed by the position encoding."""
        q = self._query_dense(query)  # (B, T, N, H)
        k = self._key_dense(key)  # (B, S, K, H)
        v = self._value_dense(value)  # (B, S, K, V)
        if self.position_encoding is not None:
            q, k = self.position_encoding.transform_query_key(q, k, query_start, key_start)
        return q, k, v

    def _logits_bias(self, q, key_length, query_start):
        if self.position_encoding is None:
            return None
        return self.position_encoding.attention_bias(q, key_length, query_start,
                                                     1.0 / math.sqrt(self.key_dim))

    def _needs_weights(self):
        pe = self.position_encoding
        return pe is not None and pe.requires_weights

    def _add_value_term(self, output, weights, query_start):
        if not self._needs_weights():
            return output
        term = self.position_encoding.value_term(weights, query_start)  # (B, T, N, V)
        return output + ops.cast(term, output.dtype)

    def _combine_heads(self, output, gate):
        """Head mask, gate, and the output projection `(B, T, N, V) -> (B, T, *O)`."""
        output = self._mask_heads(output)
        if gate is not None:
            output = output * ops.cast(gate, output.dtype)
        return self._output_dense(output)

    def _use_cache(self, cache, cache_index, key, value):
        """`(key, value, updated cache, written (1, S_max))` of a cache; layers that
        declare `supports_cache` implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement _use_cache")

    def _forward(self, query, value, key, query_mask, value_mask, key_mask,
                 attention_mask, use_causal_mask, return_attention_scores, training,
                 cache, cache_index):
        fold = None
        if len(query.shape) > 3:
            fold = _AxesFold(self, query, key)
            query, key, value = fold.inputs(query), fold.inputs(key, True), fold.inputs(
                value, True)
            query_mask = fold.vector(query_mask)
            value_mask = fold.vector(value_mask, True)
            key_mask = fold.vector(key_mask, True)
            attention_mask = fold.full(attention_mask)
        t = ops.shape(query)[1]
        s = ops.shape(key)[1] if cache is None else ops.shape(cache)[2]
        masks = self._split_masks(query, s, query_mask, value_mask, key_mask,
                                  attention_mask)
        gate = self._gate_dense(query) if self.use_gate else None  # (B, T, N, V)
        if cache is None:
            query_start, key_start = ops.shape(key)[1] - t, 0
        else:
            query_start = key_start = cache_index
        q, k, v = self._project(query, key, value, query_start, key_start)
        if cache is not None:
            k, v, cache, written = self._use_cache(cache, cache_index, k, v)
            masks = masks._replace(key=masks_lib.merge_masks(masks.key, written),
                                   query_start=cache_index)
        want_weights = return_attention_scores or self._needs_weights()
        output, weights, rows = self._attend_heads(
            q, k, v, masks, use_causal_mask=use_causal_mask, training=training,
            return_weights=want_weights, bias=self._logits_bias(q, s, query_start),
        )
        output = self._add_value_term(output, weights, query_start)
        if rows is None:
            rows = self._rows(masks, use_causal_mask, t, s)
        rows = masks_lib.merge_masks(rows, masks.query)  # (B|1, T) or None
        output = self._combine_heads(output, gate)  # (B, T, *O)
        if rows is not None:
            expand = (slice(None), slice(None)) + (None,) * (len(output.shape) - 2)
            output = ops.where(rows[expand], output, ops.zeros_like(output))
            if return_attention_scores:
                weights = ops.where(rows[:, None, :, None], weights,
                                    ops.zeros_like(weights))
        if fold is not None:
            output = fold.output(output)
            if return_attention_scores:
                weights = fold.weights(weights)
        result = (output, weights) if return_attention_scores else (output,)
        if cache is not None:
            result = result + (cache,)
        return result if len(result) > 1 else output

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "num_key_value_heads": self.num_key_value_heads,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_shape": self._output_shape,
                "attention_axes": self.attention_axes,
                "use_gate": self.use_gate,
                "position_encoding": (
                    None if self.position_encoding is None
                    else keras.saving.serialize_keras_object(self.position_encoding)
                ),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(
                    self._activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "seed": self.seed,
            }
        )
        return config


def _product(sizes):
    total = 1
    for size in sizes:
        total = total * size
    return total


class _AxesFold:
    """Inputs of rank > 3 as sequences: `(B, *D, F) -> (B', L, F)`, the other axes
    moved into the batch and the attention axes flattened, and back."""

    def __init__(self, layer, query, key):
        rank = len(query.shape)
        self.other, self.axes = layer._attention_layout(rank, query.shape)
        self.perm = (0,) + self.other + self.axes
        self.inverse = tuple(self.perm.index(i) for i in range(rank - 1))
        q_shape, k_shape = ops.shape(query), ops.shape(key)
        self.lead = [q_shape[0]] + [q_shape[a] for a in self.other]  # B, other axes
        self.q_axes = [q_shape[a] for a in self.axes]
        self.k_axes = [k_shape[a] for a in self.axes]
        self.num_heads = layer.num_heads

    def _fold(self, x, sizes, transpose):
        x = transpose(x, self.perm + tuple(range(len(self.perm), len(x.shape))))
        tail = tuple(ops.shape(x)[len(self.perm):])
        return ops.reshape(x, (-1, _product(sizes)) + tail)

    def inputs(self, x, keys=False):
        """`(B, *D, F) -> (B', L, F)`."""
        return self._fold(x, self.k_axes if keys else self.q_axes, ops.transpose)

    def vector(self, mask, keys=False):
        """A mask `(B, *D) -> (B', L)`, or None."""
        if mask is None:
            return None
        mask = ops.cast(ops.convert_to_tensor(mask), "bool")
        return self._fold(mask, self.k_axes if keys else self.q_axes,
                          masks_lib.transpose_mask)

    def full(self, mask):
        """An attention mask broadcastable to `(B, *other, *query axes, *key axes)`
        (Keras's layout without heads) -> `(B', L_q, L_k)`, or None."""
        if mask is None:
            return None
        target = tuple(self.lead + self.q_axes + self.k_axes)
        mask = ops.cast(ops.convert_to_tensor(mask), "bool")
        if len(mask.shape) > len(target):
            raise ValueError(
                "`attention_mask` must broadcast to (batch, *other axes, *query "
                f"attention axes, *key attention axes). Received: shape={tuple(mask.shape)}"
            )
        mask = ops.broadcast_to(mask, target)
        return ops.reshape(mask, (-1, _product(self.q_axes), _product(self.k_axes)))

    def output(self, x):
        """`(B', L, *O) -> (B, *D, *O)`."""
        tail = tuple(ops.shape(x)[2:])
        x = ops.reshape(x, tuple(self.lead + self.q_axes) + tail)
        n = len(self.perm)
        return ops.transpose(x, self.inverse + tuple(range(n, n + len(tail))))

    def weights(self, w):
        """`(B', N, L_q, L_k) -> (B, *other, N, *query axes, *key axes)`, Keras's layout."""
        shape = tuple(self.lead + [self.num_heads] + self.q_axes + self.k_axes)
        return ops.reshape(w, shape)
