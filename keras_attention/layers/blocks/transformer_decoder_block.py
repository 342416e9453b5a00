"""Transformer decoder block: causal self-attention, cross-attention over encoder
outputs and a feed-forward network, each with a residual connection and layer
normalization; supports a key/value cache for incremental decoding.

Shape legend: B batch, T decoder length (new tokens when decoding with a cache),
S encoder length, S_max cache length, F decoder features, F_e encoder features,
N heads, K key/value heads, H head dim.
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.blocks.feed_forward import ACTIVATIONS, FeedForward
from keras_attention.layers.blocks.transformer_encoder_block import (
    check_attention_output,
    check_epsilon,
    check_sequence_shape,
    rematerialized,
    default_key_dim,
    implicit_mask,
    merge_padding_mask,
    resolve_attention,
    seed_for,
    serialize_attention,
)
from keras_attention.utils.validation import (
    check_bool,
    check_choice,
    check_positive_int,
    check_rank,
    check_rate,
)


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerDecoderBlock(keras.layers.Layer):
    """Transformer decoder block (Vaswani et al. 2017, "Attention Is All You Need").

    Three sublayers, each with a residual connection and layer normalization
    (pre-norm `x = x + drop(f(ln(x)))` when `norm_first=True`, post-norm
    `x = ln(x + drop(f(x)))` otherwise): causal self-attention, cross-attention
    from the decoder sequence to `encoder_outputs`, and a position-wise
    feed-forward network.

    The block's structure is fixed by its first call: called with
    `encoder_outputs` it builds the cross-attention sublayer and then always needs
    encoder outputs; called without, it is a decoder-only (GPT-style) block with
    no cross-attention, and passing encoder outputs later is an error.

    Incremental decoding: `init_cache(batch_size, max_length)` gives an empty
    `(B, 2, S_max, K, H)` key/value cache of the self-attention; pass it as
    `self_attention_cache` with `self_attention_cache_index` (position of the first
    new token) and the block returns the updated cache. The self-attention must
    then be a `MultiHeadAttention` (or a subclass). Cross-attention keys and values
    are recomputed from `encoder_outputs` at each step.

    `dropout` is used as the attention-weight dropout of the default attention
    layers, the residual dropout on each sublayer output and the feed-forward
    hidden dropout. `num_heads` and `key_dim` configure the default attention
    layers only; they are ignored for a sublayer given as `attention` or
    `cross_attention`.

    Args:
        num_heads: number of heads N of the default attention layers.
        intermediate_dim: hidden size of the feed-forward network.
        key_dim: head size of the default attention layers; defaults to
            `features // num_heads`.
        dropout: dropout rate (attention weights, residual branches, FFN hidden).
        norm_first: pre-norm when True, post-norm when False.
        attention: the self-attention: None (a `MultiHeadAttention(num_heads,
            key_dim, dropout=dropout)`), an attention layer instance (a
            `BaseAttention` subclass) or its serialized config dict.
        cross_attention: the cross-attention, same forms as `attention`.
        activation: feed-forward activation, `"relu"`, `"gelu"` or `"swiglu"`.
        layer_norm_epsilon: epsilon of the layer normalizations.
        use_bias: whether the dense projections have biases.
        kernel_initializer, bias_initializer: initializers of the default
            attention layers and of the feed-forward network.
        seed: seed of the dropouts (each sublayer gets a distinct offset).
        remat: gradient checkpointing, as in `TransformerEncoderBlock`: the forward
            pass runs under `keras.remat` and is recomputed in the backward pass.
            Calls with a cache (decoding) run without it.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: decoder sequence `(B, T, F)`.
        encoder_outputs: `(B, S, F_e)`, or None for a decoder-only block.
        decoder_padding_mask: boolean, True on real tokens; `(B, T)` (query and
            key mask of the self-attention, query mask of the cross-attention), or
            `(B, S_max)` over the whole cache when decoding with a cache (key
            mask; its slice at the new positions is the query mask). ANDed with
            the Keras implicit mask of `x`, which masks query rows only when a
            cache is used and is passed on to the output.
        encoder_padding_mask: boolean `(B, S)`, True on real encoder tokens;
            defaults to the Keras implicit mask of `encoder_outputs`.
        self_attention_mask: boolean `(B, T, T)`, or `(B, T, S_max)` with a
            cache; True where attention is allowed.
        cross_attention_mask: boolean `(B, T, S)`.
        use_causal_mask: causal self-attention (default True); with a cache, the
            new token at position `self_attention_cache_index + i` attends cache
            positions up to its own.
        return_attention_scores: also return the attention weights.
        training: enables dropout.
        self_attention_cache: `(B, 2, S_max, K, H)` key/value cache, or None.
        self_attention_cache_index: position of `x[:, 0]` in the cache (int or
            scalar tensor); required with `self_attention_cache`.
        mask: the Keras implicit mask of `x`; filled in by Keras.

    Returns:
        A fixed structure per call signature: `x (B, T, F)`, followed, with
        `return_attention_scores=True`, by `self_scores (B, N, T, T)` (`(B, N, T,
        S_max)` with a cache) and, when `encoder_outputs` is given, `cross_scores
        (B, N, T, S)`, followed, with a cache, by `new_cache (B, 2, S_max, K, H)`:

        - no cache: `x`, `(x, self_scores, cross_scores)`, or decoder-only
          `(x, self_scores)`.
        - with a cache: `(x, new_cache)`, `(x, self_scores, cross_scores,
          new_cache)`, or decoder-only `(x, self_scores, new_cache)`.

    Example:

    >>> block = TransformerDecoderBlock(num_heads=4, intermediate_dim=64)
    >>> x, memory = keras.random.normal((2, 6, 32)), keras.random.normal((2, 9, 32))
    >>> block(x, memory).shape
    (2, 6, 32)
    >>> cache = block.init_cache(batch_size=2, max_length=6)
    >>> y, cache = block(x[:, :1], memory, self_attention_cache=cache,
    ...                  self_attention_cache_index=0)
    >>> y.shape, cache.shape
    ((2, 1, 32), (2, 2, 6, 4, 8))
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        key_dim=None,
        dropout=0.0,
        norm_first=True,
        attention=None,
        cross_attention=None,
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
        self.cross_attention = resolve_attention("cross_attention", cross_attention)
        if self.attention is not None and self.attention is self.cross_attention:
            raise ValueError(
                "`attention` and `cross_attention` must be different layer instances. "
                f"Received: attention=cross_attention={self.attention!r}"
            )
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.layer_norm_epsilon = check_epsilon(layer_norm_epsilon)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = check_positive_int("seed", seed, allow_none=True, allow_zero=True)
        self.remat = check_bool("remat", remat)
        self.supports_masking = True
        self._has_cross_attention = None  # fixed by build

    # ------------------------------------------------------------------ build
    def _default_attention(self, name, features, seed):
        return MultiHeadAttention(
            self.num_heads,
            default_key_dim(features, self.num_heads, self.key_dim),
            dropout=self.dropout,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=seed,
            dtype=self.dtype_policy,
            name=name,
        )

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

    def build(self, x_shape, encoder_outputs_shape=None):
        x_shape = tuple(x_shape)
        features = check_sequence_shape("x", x_shape)

        self._self_attention = self.attention
        if self._self_attention is None:
            self._self_attention = self._default_attention("self_attention", features,
                                                           self.seed)
        check_attention_output("attention", self._self_attention, features)
        if not self._self_attention.built:
            self._self_attention.build(x_shape, x_shape)
        self._self_attention_norm = self._layer_norm("self_attention_norm", x_shape)
        self._self_attention_dropout = self._dropout_layer("self_attention_dropout", 1)

        self._has_cross_attention = encoder_outputs_shape is not None
        if self._has_cross_attention:
            encoder_outputs_shape = tuple(encoder_outputs_shape)
            check_sequence_shape("encoder_outputs", encoder_outputs_shape)
            self._cross_attention = self.cross_attention
            if self._cross_attention is None:
                self._cross_attention = self._default_attention(
                    "cross_attention", features, seed_for(self.seed, 2)
                )
            check_attention_output("cross_attention", self._cross_attention, features)
            if not self._cross_attention.built:
                self._cross_attention.build(x_shape, encoder_outputs_shape)
            self._cross_attention_norm = self._layer_norm("cross_attention_norm", x_shape)
            self._cross_attention_dropout = self._dropout_layer("cross_attention_dropout", 3)

        self._feed_forward = FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            dropout=self.dropout,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=seed_for(self.seed, 4),
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self._feed_forward.build(x_shape)
        self._feed_forward_norm = self._layer_norm("feed_forward_norm", x_shape)
        self._feed_forward_dropout = self._dropout_layer("feed_forward_dropout", 5)
        self.built = True

    # ------------------------------------------------------------------ cache
    def _cache_layer(self):
        """The self-attention layer if it supports a cache, else a ValueError."""
        layer = getattr(self, "_self_attention", None)
        layer = self.attention if layer is None else layer
        if layer is not None and not isinstance(layer, MultiHeadAttention):
            raise ValueError(
                "A self-attention cache needs a MultiHeadAttention self-attention. "
                f"Received: attention={layer!r}"
            )
        return layer

    def init_cache(self, batch_size, max_length, dtype=None):
        """An all-zeros self-attention key/value cache `(B, 2, S_max, K, H)`.

        Args:
            batch_size: B, an int or a scalar integer tensor (a dynamic batch
                size inside a traced function).
            max_length: S_max, the number of positions the cache holds.
            dtype: defaults to the block's compute dtype.

        The block must be built, or have `key_dim` (or an `attention` layer), so
        that the head layout is known.
        """
        if not ops.is_tensor(batch_size):
            batch_size = check_positive_int("batch_size", batch_size)
        max_length = check_positive_int("max_length", max_length)
        layer = self._cache_layer()
        if layer is not None:
            kv_heads = layer.num_key_value_heads or layer.num_heads
            head_dim = layer.key_dim
        elif self.key_dim is not None:
            kv_heads, head_dim = self.num_heads, self.key_dim
        else:
            raise ValueError(
                "init_cache needs the head size: build or call the block first, or "
                "pass `key_dim`. Received: key_dim=None"
            )
        shape = (batch_size, 2, max_length, kv_heads, head_dim)
        return ops.zeros(shape, dtype=dtype or self.compute_dtype)

    # ------------------------------------------------------------------ call
    def _check_structure(self, encoder_outputs, encoder_padding_mask, cross_attention_mask):
        if encoder_outputs is None:
            if self._has_cross_attention:
                raise ValueError(
                    "This block was built with cross-attention, so it needs "
                    "`encoder_outputs`. Received: encoder_outputs=None"
                )
            for name, value in (("encoder_padding_mask", encoder_padding_mask),
                                ("cross_attention_mask", cross_attention_mask)):
                if value is not None:
                    raise ValueError(
                        f"`{name}` is only used with `encoder_outputs`. "
                        f"Received: encoder_outputs=None, {name}.shape={tuple(value.shape)}"
                    )
        elif not self._has_cross_attention:
            raise ValueError(
                "This block was built as a decoder-only block (first called without "
                "`encoder_outputs`), so it has no cross-attention. Received: "
                f"encoder_outputs.shape={tuple(encoder_outputs.shape)}"
            )

    def _self_attention_masks(self, x, decoder_padding_mask, keras_mask, cache, cache_index):
        """Query and key masks of the self-attention, `(B, T)` / `(B, T|S_max)` or None."""
        b, t = x.shape[0], x.shape[1]
        if cache is None:
            padding = merge_padding_mask("decoder_padding_mask", decoder_padding_mask,
                                         keras_mask, b, t)  # (B, T)
            return padding, padding
        key_mask = merge_padding_mask("decoder_padding_mask", decoder_padding_mask, None,
                                      b, cache.shape[2])  # (B, S_max)
        query_mask = None
        if key_mask is not None:
            shape = ops.shape(x)
            query_mask = ops.slice(key_mask, [0, cache_index], [shape[0], shape[1]])  # (B, T)
        return masks_lib.merge_masks(query_mask, keras_mask), key_mask

    def call(
        self,
        x,
        encoder_outputs=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_mask=None,
        cross_attention_mask=None,
        use_causal_mask=True,
        return_attention_scores=False,
        training=None,
        self_attention_cache=None,
        self_attention_cache_index=None,
        mask=None,
    ):
        check_sequence_shape("x", x.shape)
        self._check_structure(encoder_outputs, encoder_padding_mask, cross_attention_mask)
        cache, cache_index = self_attention_cache, self_attention_cache_index
        if cache is None and cache_index is not None:
            raise ValueError(
                "`self_attention_cache_index` is only used with `self_attention_cache`. "
                f"Received: self_attention_cache=None, "
                f"self_attention_cache_index={cache_index!r}"
            )
        if cache is not None:
            if cache_index is None:
                raise ValueError(
                    "`self_attention_cache_index` is required with `self_attention_cache`. "
                    "Received: self_attention_cache_index=None"
                )
            self._cache_layer()
            check_rank("self_attention_cache", cache.shape, 5,
                       "(batch, 2, max_length, kv_heads, head_dim)")
        keras_mask = implicit_mask(x) if mask is None else mask
        query_mask, key_mask = self._self_attention_masks(
            x, decoder_padding_mask, keras_mask, cache, cache_index
        )

        encoder_mask = None
        if encoder_outputs is not None:
            encoder_mask = merge_padding_mask(
                "encoder_padding_mask", encoder_padding_mask, implicit_mask(encoder_outputs),
                encoder_outputs.shape[0], encoder_outputs.shape[1],
            )  # (B, S)

        def forward(x, *encoder_outputs):
            return self._sublayers(
                x, encoder_outputs[0] if encoder_outputs else None, query_mask, key_mask,
                encoder_mask, self_attention_mask, cross_attention_mask, use_causal_mask,
                return_attention_scores, training, cache, cache_index,
            )

        # The encoder outputs are an argument, not a closure, so that gradients reach
        # them through the checkpoint on every backend.
        inputs = (x,) if encoder_outputs is None else (x, encoder_outputs)
        return rematerialized(self, forward, self.remat and cache is None)(*inputs)

    def _sublayers(self, x, encoder_outputs, query_mask, key_mask, encoder_mask,
                   self_attention_mask, cross_attention_mask, use_causal_mask,
                   return_attention_scores, training, cache, cache_index):
        # Causal self-attention sublayer.
        residual = x
        h = self._self_attention_norm(x) if self.norm_first else x  # (B, T, F)
        cache_kwargs = {}
        if cache is not None:
            cache_kwargs = {"cache": cache, "cache_index": cache_index}
        result = self._self_attention(
            h, h, query_mask=query_mask, value_mask=key_mask,
            attention_mask=self_attention_mask, use_causal_mask=use_causal_mask,
            return_attention_scores=return_attention_scores, training=training,
            **cache_kwargs,
        )
        self_scores = new_cache = None
        if cache is not None and return_attention_scores:
            h, self_scores, new_cache = result  # (B, N, T, S_max), (B, 2, S_max, K, H)
        elif cache is not None:
            h, new_cache = result
        elif return_attention_scores:
            h, self_scores = result  # (B, N, T, T)
        else:
            h = result  # (B, T, F)
        x = residual + self._self_attention_dropout(h, training=training)
        if not self.norm_first:
            x = self._self_attention_norm(x)

        # Cross-attention sublayer.
        cross_scores = None
        if encoder_outputs is not None:
            residual = x
            h = self._cross_attention_norm(x) if self.norm_first else x
            result = self._cross_attention(
                h, encoder_outputs, query_mask=query_mask, value_mask=encoder_mask,
                attention_mask=cross_attention_mask,
                return_attention_scores=return_attention_scores, training=training,
            )
            h, cross_scores = result if return_attention_scores else (result, None)
            x = residual + self._cross_attention_dropout(h, training=training)  # (B, T, F)
            if not self.norm_first:
                x = self._cross_attention_norm(x)

        # Feed-forward sublayer.
        residual = x
        h = self._feed_forward_norm(x) if self.norm_first else x
        h = self._feed_forward(h, training=training)  # (B, T, F)
        x = residual + self._feed_forward_dropout(h, training=training)  # (B, T, F)
        if not self.norm_first:
            x = self._feed_forward_norm(x)

        scores = ()
        if return_attention_scores:
            scores = (self_scores,) if encoder_outputs is None else (self_scores, cross_scores)
        if cache is None:
            return (x, *scores) if scores else x
        return (x, *scores, new_cache)

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
                "cross_attention": serialize_attention(self.cross_attention),
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
