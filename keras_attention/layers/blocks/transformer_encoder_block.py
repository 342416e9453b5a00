"""Transformer encoder block: self-attention and a feed-forward network, each with a
residual connection and layer normalization.

Shape legend: B batch, T sequence length, F features, N heads.

The module also holds the helpers shared with `TransformerDecoderBlock`:
`resolve_attention` (an attention layer from an instance or its config),
`default_key_dim`, `merge_padding_mask` and `rematerialized`.
"""

import numbers

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.blocks.feed_forward import ACTIVATIONS, FeedForward
from keras_attention.utils.validation import (
    check_bool,
    check_choice,
    check_positive_int,
    check_rank,
    check_rate,
)


def resolve_attention(name, attention):
    """An attention layer (a `BaseAttention` subclass) from an instance, a config
    dict (`keras.saving.serialize_keras_object` output) or None."""
    if attention is None or isinstance(attention, BaseAttention):
        return attention
    layer = None
    if isinstance(attention, dict):
        try:
            layer = keras.saving.deserialize_keras_object(attention)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(
                f"`{name}` config could not be deserialized ({error}). "
                f"Received: {name}={attention!r}"
            ) from error
    if not isinstance(layer, BaseAttention):
        raise TypeError(
            f"`{name}` must be a keras_attention attention layer (a BaseAttention "
            "subclass such as MultiHeadAttention), its serialized config "
            f"(keras.saving.serialize_keras_object), or None. Received: {name}={attention!r}"
        )
    return layer


def serialize_attention(attention):
    """The config dict stored in `get_config` for an attention argument."""
    return None if attention is None else keras.saving.serialize_keras_object(attention)


def check_epsilon(value):
    """Return `layer_norm_epsilon` if it is a positive float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            "`layer_norm_epsilon` must be a positive float. "
            f"Received: layer_norm_epsilon={value!r}"
        )
    if value <= 0:
        raise ValueError(
            f"`layer_norm_epsilon` must be positive. Received: layer_norm_epsilon={value}"
        )
    return float(value)


def check_sequence_shape(name, shape):
    """Rank 3 `(B, T, F)` with known features; returns F."""
    check_rank(name, shape, 3, "(batch, seq, features)")
    if shape[-1] is None:
        raise ValueError(
            f"The last axis (features) of `{name}` must be known. Received: shape={tuple(shape)}"
        )
    return shape[-1]


def default_key_dim(features, num_heads, key_dim):
    """`key_dim`, or `features // num_heads` when it is None."""
    if key_dim is not None:
        return key_dim
    if features % num_heads:
        raise ValueError(
            "`key_dim` defaults to features // num_heads, so the features must be "
            "divisible by `num_heads`; pass `key_dim` explicitly otherwise. "
            f"Received: features={features}, num_heads={num_heads}, key_dim=None"
        )
    return features // num_heads


def check_attention_output(name, attention, features):
    """The residual connection needs the attention to return `features` features."""
    output_dim = getattr(attention, "output_dim", None)
    if output_dim is not None and output_dim != features:
        raise ValueError(
            f"`{name}` must return as many features as the block input ({features}) for "
            f"the residual connection. Received: {name}.output_dim={output_dim}"
        )


def implicit_mask(x):
    """The Keras implicit mask a tensor carries, or None."""
    return getattr(x, "_keras_mask", None)


def merge_padding_mask(name, padding_mask, keras_mask, batch, length):
    """AND of an explicit `(B, T)` padding mask and an implicit Keras mask, or None."""
    if padding_mask is not None:
        padding_mask = ops.convert_to_tensor(padding_mask)
        shape = tuple(padding_mask.shape)
        if len(shape) != 2 or any(
            a is not None and b is not None and a != b for a, b in zip(shape, (batch, length))
        ):
            raise ValueError(
                f"`{name}` must have shape {(batch, length)} (batch, seq). "
                f"Received: shape={shape}"
            )
    return masks_lib.merge_masks(padding_mask, keras_mask)


def rematerialized(layer, forward, remat):
    """`forward` itself, or (when `remat` is True) `forward` under `keras.remat`:
    gradient checkpointing, its intermediate values recomputed in the backward pass
    instead of kept.

    `forward` takes tensors and reads `layer`'s variables. They enter the
    checkpoint as explicit inputs (through a `keras.StatelessScope`), and the new
    values of the non-trainable ones (the dropout seed states) leave it as
    outputs, assigned afterwards: so the recomputation draws the same dropout
    masks as the forward pass, and under JAX no traced value escapes the
    checkpoint. Masks and flags reach `forward` by closure.
    """
    if not remat:
        return forward
    variables = list(layer.variables)

    def pure(*values_and_args):
        values, args = values_and_args[:len(variables)], values_and_args[len(variables):]
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            outputs = forward(*args)
            updated = [scope.get_current_value(v) for v in variables]
        new_values = [value if new is None else new for value, new in zip(values, updated)]
        return outputs, new_values

    checkpointed = keras.remat(pure)

    def call(*args):
        values = [ops.convert_to_tensor(v) for v in variables]
        outputs, new_values = checkpointed(*values, *args)
        for variable, value in zip(variables, new_values):
            if not variable.trainable:
                variable.assign(value)
        return outputs

    return call


def seed_for(seed, offset):
    """A distinct seed per sublayer from the block's seed (None stays None)."""
    return None if seed is None else seed + offset


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerEncoderBlock(keras.layers.Layer):
    """Transformer encoder block (Vaswani et al. 2017, "Attention Is All You Need").

    Self-attention followed by a position-wise feed-forward network, each wrapped
    in a residual connection with layer normalization:

    - `norm_first=True` (pre-norm, Xiong et al. 2020):
      `x = x + drop(attn(ln1(x)))`, then `x = x + drop(ffn(ln2(x)))`. A stack of
      pre-norm blocks usually ends with one final `LayerNormalization`.
    - `norm_first=False` (post-norm, the original Transformer):
      `x = ln1(x + drop(attn(x)))`, then `x = ln2(x + drop(ffn(x)))`.

    `dropout` is used as the attention-weight dropout of the default attention,
    the residual dropout on each sublayer output and the feed-forward hidden
    dropout.

    Any keras_attention attention layer with the MultiHeadAttention call
    convention can replace the default attention through `attention=`; the block
    owns that layer (do not share one instance between blocks unless weight
    sharing is intended). `num_heads` and `key_dim` only configure the default
    `MultiHeadAttention` and are ignored when `attention` is given.

    Args:
        num_heads: number of attention heads N of the default attention.
        intermediate_dim: hidden size of the feed-forward network.
        key_dim: head size of the default attention; defaults to
            `features // num_heads`.
        dropout: dropout rate (attention weights, residual branches, FFN hidden).
        norm_first: pre-norm when True, post-norm when False.
        attention: None (a `MultiHeadAttention(num_heads, key_dim,
            dropout=dropout)` is built), an attention layer instance (a
            `BaseAttention` subclass), or its serialized config dict. Its output
            must have the input's feature size.
        activation: feed-forward activation, `"relu"`, `"gelu"` or `"swiglu"`.
        layer_norm_epsilon: epsilon of the layer normalizations.
        use_bias: whether the dense projections have biases.
        kernel_initializer, bias_initializer: initializers of the default
            attention and of the feed-forward network.
        seed: seed of the dropouts (each sublayer gets a distinct offset).
        remat: gradient checkpointing: when True the block's forward pass runs
            under `keras.remat`, so training keeps only the block's input for the
            backward pass and recomputes the rest (attention weights, feed-forward
            hidden units) there, trading one more forward pass for memory. Outputs
            and gradients are unchanged.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: `(B, T, F)`.
        padding_mask: boolean `(B, T)`, True on real tokens; used as the query and
            the value mask. ANDed with the Keras implicit mask of `x` (e.g. from
            `Embedding(mask_zero=True)`), which is also passed on to the output.
        attention_mask: boolean `(B, T, T)`, True where attention is allowed.
        use_causal_mask: position i attends positions `j <= i` only.
        return_attention_scores: also return the attention weights.
        training: enables dropout.
        mask: the Keras implicit mask; filled in by Keras.

    Returns:
        `x (B, T, F)`, or `(x, scores (B, N, T, T))` with
        `return_attention_scores=True`.

    Example:

    >>> x = keras.random.normal((2, 10, 32))
    >>> block = TransformerEncoderBlock(num_heads=4, intermediate_dim=64)
    >>> block(x, padding_mask=keras.ops.ones((2, 10), "bool")).shape
    (2, 10, 32)
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        key_dim=None,
        dropout=0.0,
        norm_first=True,
        attention=None,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.intermediate_dim = check_positive_int("intermediate_dim", intermediate_dim)
        self.key_dim = check_positive_int("key_dim", key_dim, allow_none=True)
        self.dropout = check_rate("dropout", dropout)
        self.norm_first = bool(norm_first)
        self.attention = resolve_attention("attention", attention)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.layer_norm_epsilon = check_epsilon(layer_norm_epsilon)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = check_positive_int("seed", seed, allow_none=True, allow_zero=True)
        self.remat = check_bool("remat", remat)
        self.supports_masking = True

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        features = check_sequence_shape("x", input_shape)
        if self.attention is None:
            self._self_attention = MultiHeadAttention(
                self.num_heads,
                default_key_dim(features, self.num_heads, self.key_dim),
                dropout=self.dropout,
                use_bias=self.use_bias,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                bias_initializer=keras.initializers.serialize(self.bias_initializer),
                seed=self.seed,
                dtype=self.dtype_policy,
                name="self_attention",
            )
        else:
            self._self_attention = self.attention
        check_attention_output("attention", self._self_attention, features)
        if not self._self_attention.built:
            self._self_attention.build(input_shape, input_shape)
        self._self_attention_norm = self._layer_norm("self_attention_norm", input_shape)
        self._self_attention_dropout = self._dropout_layer("self_attention_dropout", 1)
        self._feed_forward = FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            dropout=self.dropout,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=seed_for(self.seed, 2),
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self._feed_forward.build(input_shape)
        self._feed_forward_norm = self._layer_norm("feed_forward_norm", input_shape)
        self._feed_forward_dropout = self._dropout_layer("feed_forward_dropout", 3)
        self.built = True

    def _layer_norm(self, name, input_shape):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build(input_shape)
        return norm

    def _dropout_layer(self, name, seed_offset):
        return keras.layers.Dropout(
            self.dropout, seed=seed_for(self.seed, seed_offset), dtype=self.dtype_policy,
            name=name,
        )

    # ------------------------------------------------------------------ call
    def call(
        self,
        x,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
        mask=None,
    ):
        check_sequence_shape("x", x.shape)
        keras_mask = implicit_mask(x) if mask is None else mask
        padding = merge_padding_mask(
            "padding_mask", padding_mask, keras_mask, x.shape[0], x.shape[1]
        )  # (B, T) or None

        def forward(x):
            return self._sublayers(
                x, padding, attention_mask, use_causal_mask, return_attention_scores, training
            )

        return rematerialized(self, forward, self.remat)(x)

    def _sublayers(self, x, padding, attention_mask, use_causal_mask,
                   return_attention_scores, training):
        # Self-attention sublayer.
        residual = x
        h = self._self_attention_norm(x) if self.norm_first else x  # (B, T, F)
        result = self._self_attention(
            h, h, query_mask=padding, value_mask=padding, attention_mask=attention_mask,
            use_causal_mask=use_causal_mask, return_attention_scores=return_attention_scores,
            training=training,
        )
        h, scores = result if return_attention_scores else (result, None)  # (B, T, F)
        x = residual + self._self_attention_dropout(h, training=training)  # (B, T, F)
        if not self.norm_first:
            x = self._self_attention_norm(x)

        # Feed-forward sublayer.
        residual = x
        h = self._feed_forward_norm(x) if self.norm_first else x
        h = self._feed_forward(h, training=training)  # (B, T, F)
        x = residual + self._feed_forward_dropout(h, training=training)  # (B, T, F)
        if not self.norm_first:
            x = self._feed_forward_norm(x)
        return (x, scores) if return_attention_scores else x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "norm_first": self.norm_first,
                "attention": serialize_attention(self.attention),
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
                "remat": self.remat,
            }
        )
        return config
