"""Hierarchical attention pooling: words -> sentences -> document.

Shape legend: B batch (documents), S sentences per document, W words per
sentence, F word features, E sentence features (F, or the sentence encoder's
output width), U attention units.
"""

import inspect

import keras
from keras import ops

from keras_attention.layers.attention.base_attention import CheckedInputs
from keras_attention.ops.masked_softmax import masked_softmax
from keras_attention.utils.initializers import clone_initializer
from keras_attention.utils.validation import check_floating, check_positive_int, check_rank


@keras.saving.register_keras_serializable(package="keras_attention")
class HierarchicalAttention(CheckedInputs, keras.layers.Layer):
    """Hierarchical attention network pooling (Yang et al. 2016, "Hierarchical
    Attention Networks for Document Classification").

    Two levels of additive attention pooling with learned context vectors. Within
    each sentence, word `t` of sentence `i` gets
    `u_it = tanh(W_w h_it + b_w)`, `a_it = softmax_t(u_it . u_w)` and the sentence
    vector is `s_i = sum_t a_it h_it`; over the sentences, `u_i = tanh(W_s s_i +
    b_s)`, `a_i = softmax_i(u_i . u_s)` and the document vector is
    `v = sum_i a_i s_i`.

    The input holds already-encoded word features (the paper's bidirectional GRU
    word encoder, or any other, is the caller's choice). The sentence encoder of
    the paper sits between the two levels, so it can be passed as
    `sentence_encoder`: a Keras layer mapping the `(B, S, F)` sentence vectors to
    `(B, S, E)` (e.g. `Bidirectional(GRU(..., return_sequences=True))`); it is
    given the sentence mask when its `call` takes a `mask` argument.

    This layer does not follow the `query, value` call convention of the other
    attention layers: it pools a single input with learned queries (the context
    vectors), so there is no query sequence and its output has no sequence axis.

    Args:
        units: size U of the attention hidden layer at both levels.
        use_bias: whether the two attention projections have biases.
        sentence_encoder: optional Keras layer (or its serialized config) applied
            to the sentence vectors; None pools the word-level vectors directly.
        kernel_initializer, bias_initializer: initializers of the projections.
        context_initializer: initializer of the context vectors `u_w` and `u_s`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, S, W, F)` word features.
        mask: optional boolean `(B, S, W)`, True on real words; filled from a
            Keras implicit mask when not given.
        return_attention_scores: also return the word and sentence weights.
        training: passed to the sentence encoder.

    Returns:
        `document (B, E)`, or `(document, (word_weights (B, S, W),
        sentence_weights (B, S)))` with `return_attention_scores=True`. Masked
        words get zero weight; fully masked sentences get zero sentence weight
        (and a zero sentence vector); a fully masked document gives zeros.

    Example:

    >>> words = keras.random.normal((2, 5, 12, 16))  # 5 sentences of 12 words
    >>> han = HierarchicalAttention(units=32)
    >>> han(words).shape
    (2, 16)
    """

    def __init__(
        self,
        units,
        use_bias=True,
        sentence_encoder=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        context_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.use_bias = bool(use_bias)
        if isinstance(sentence_encoder, dict):
            sentence_encoder = keras.saving.deserialize_keras_object(sentence_encoder)
        if sentence_encoder is not None and not isinstance(
            sentence_encoder, keras.layers.Layer
        ):
            raise TypeError(
                "`sentence_encoder` must be a Keras layer, its serialized config, or "
                f"None. Received: sentence_encoder={sentence_encoder!r}"
            )
        self.sentence_encoder = sentence_encoder
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.context_initializer = keras.initializers.get(context_initializer)

    def _projection(self, name):
        return keras.layers.Dense(
            self.units,
            activation="tanh",
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, inputs_shape):
        check_rank("inputs", inputs_shape, 4, "(batch, sentences, words, features)")
        f = inputs_shape[-1]
        if f is None:
            raise ValueError(
                "`inputs` must have a known feature dimension. "
                f"Received: shape={tuple(inputs_shape)}"
            )
        b, s = inputs_shape[0], inputs_shape[1]
        self.word_projection = self._projection("word_projection")
        self.word_projection.build((b, s, inputs_shape[2], f))
        self.word_context = self.add_weight(
            name="word_context", shape=(self.units,),
            initializer=clone_initializer(self.context_initializer),
        )
        sentence_shape = (b, s, f)
        if self.sentence_encoder is not None:
            if not self.sentence_encoder.built:
                self.sentence_encoder.build(sentence_shape)
            sentence_shape = tuple(self.sentence_encoder.compute_output_shape(sentence_shape))
            if len(sentence_shape) != 3 or sentence_shape[-1] is None:
                raise ValueError(
                    "`sentence_encoder` must map (batch, sentences, features) to "
                    "(batch, sentences, features') with a known feature size. "
                    f"Received: output shape={sentence_shape}"
                )
        self.sentence_projection = self._projection("sentence_projection")
        self.sentence_projection.build(sentence_shape)
        self.sentence_context = self.add_weight(
            name="sentence_context", shape=(self.units,),
            initializer=clone_initializer(self.context_initializer),
        )
        self.built = True

    def _check_mask(self, inputs, mask):
        mask = ops.convert_to_tensor(mask)
        expected = tuple(inputs.shape[:3])
        shape = tuple(mask.shape)
        if len(shape) != 3 or any(
            a is not None and e is not None and a != e for a, e in zip(shape, expected)
        ):
            raise ValueError(
                f"`mask` must have shape (batch, sentences, words) = {expected}. "
                f"Received: shape={shape}"
            )
        return ops.cast(mask, "bool")

    @staticmethod
    def _pool(features, projected, context, mask):
        """Attention pooling over axis -2.

        features `(..., L, D)`, projected `(..., L, U)`, mask `(..., L)` or None.
        Returns pooled `(..., D)` in float32 and weights `(..., L)` in float32.
        """
        logits = ops.einsum(
            "...lu,u->...l", ops.cast(projected, "float32"), ops.cast(context, "float32")
        )  # (..., L)
        weights = masked_softmax(logits, mask)  # (..., L); fully masked -> zeros
        pooled = ops.einsum("...l,...ld->...d", weights, ops.cast(features, "float32"))
        return pooled, weights

    def call(self, inputs, mask=None, return_attention_scores=False, training=None):
        inputs = ops.convert_to_tensor(inputs)
        check_rank("inputs", inputs.shape, 4, "(batch, sentences, words, features)")
        check_floating("inputs", inputs)  # word features, not token ids
        inputs = ops.cast(inputs, self.compute_dtype)
        word_mask = None if mask is None else self._check_mask(inputs, mask)  # (B, S, W)

        u_words = self.word_projection(inputs)  # (B, S, W, U)
        sentences, word_weights = self._pool(
            inputs, u_words, self.word_context, word_mask
        )  # (B, S, F), (B, S, W)
        sentences = ops.cast(sentences, self.compute_dtype)
        sentence_mask = None if word_mask is None else ops.any(word_mask, axis=-1)  # (B, S)

        if self.sentence_encoder is not None:
            sentences = self._encode_sentences(sentences, sentence_mask, training)  # (B, S, E)
        u_sentences = self.sentence_projection(sentences)  # (B, S, U)
        document, sentence_weights = self._pool(
            sentences, u_sentences, self.sentence_context, sentence_mask
        )  # (B, E), (B, S)
        document = ops.cast(document, self.compute_dtype)
        if return_attention_scores:
            return document, (word_weights, sentence_weights)
        return document

    def _encode_sentences(self, sentences, sentence_mask, training):
        kwargs = {}
        params = inspect.signature(self.sentence_encoder.call).parameters
        if sentence_mask is not None and "mask" in params:
            kwargs["mask"] = sentence_mask
        if "training" in params:
            kwargs["training"] = training
        encoded = self.sentence_encoder(sentences, **kwargs)  # (B, S, E)
        return ops.cast(encoded, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        # The sentence and word axes are pooled away: nothing to propagate.
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "use_bias": self.use_bias,
                "sentence_encoder": (
                    None if self.sentence_encoder is None
                    else keras.saving.serialize_keras_object(self.sentence_encoder)
                ),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "context_initializer": keras.initializers.serialize(self.context_initializer),
            }
        )
        return config
