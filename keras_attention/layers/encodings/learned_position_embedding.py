"""Trainable absolute position embedding.

Shape legend: B batch, T sequence length, F features, L max_length.
"""

import keras
from keras import ops

from keras_attention.layers.encodings._utils import check_position, positions, static_int
from keras_attention.utils.validation import check_positive_int, check_rank


@keras.saving.register_keras_serializable(package="keras_attention")
class LearnedPositionEmbedding(keras.layers.Layer):
    """A trainable table with one vector per position, as in BERT (Devlin et al.
    2019) and GPT-2.

    The table has `max_length` rows of `features` values. The layer returns the
    rows for the input's positions, broadcastable to the input, for the caller
    to add. Positions past `max_length` raise a `ValueError`: in `build` when the
    sequence length is static, and at call time whenever the length and
    `start_index` are known (eager execution). Inside a compiled function whose
    length or `start_index` is only known at run time the check cannot run;
    reading past the table is then backend-defined (TensorFlow raises an error,
    JAX returns NaN rows).

    Args:
        max_length: the number of positions in the table, a positive int.
        initializer: initializer of the table. Defaults to `"glorot_uniform"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, seq, features)`; only its shape is used.
        start_index: position of the first row, a non-negative int or scalar
            integer tensor (for decoding one step at a time). Defaults to 0.

    Returns:
        `(1, seq, features)` embeddings in the compute dtype.

    Example:

    >>> x = keras.random.normal((2, 8, 16))
    >>> y = x + LearnedPositionEmbedding(max_length=128)(x)
    >>> tuple(y.shape)
    (2, 8, 16)
    """

    def __init__(self, max_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_length = check_positive_int("max_length", max_length)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        check_rank("inputs", input_shape, 3, "(batch, seq, features)")
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "`inputs` must have a known number of features (last axis). "
                f"Received: shape={tuple(input_shape)}"
            )
        self._check_length(input_shape[1], 0, input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, features),
            initializer=self.initializer,
        )

    def _check_length(self, length, start, shape):
        if start is not None and start < 0:
            raise ValueError(
                f"`start_index` must be a non-negative integer. Received: start_index={start}"
            )
        if length is None or start is None:
            return
        if start + length > self.max_length:
            first = f"start_index={start} plus " if start else ""
            raise ValueError(
                f"`inputs` has {first}sequence length {length}, more than "
                f"max_length={self.max_length} positions. Received: shape={tuple(shape)}"
            )

    def call(self, inputs, start_index=0):
        start_index = check_position("start_index", start_index, allow_negative=False)
        check_rank("inputs", inputs.shape, 3, "(batch, seq, features)")
        features = self.embeddings.shape[-1]
        if inputs.shape[-1] is not None and inputs.shape[-1] != features:
            raise ValueError(
                f"`inputs` must have {features} features, the size the layer was "
                f"built with. Received: shape={tuple(inputs.shape)}"
            )
        length = ops.shape(inputs)[1]
        self._check_length(static_int(length), static_int(start_index), inputs.shape)
        p = positions(length, start_index, "int32")  # (T,)
        table = ops.take(self.embeddings, p, axis=0)  # (T, F)
        return ops.cast(table[None], self.compute_dtype)  # (1, T, F)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_length": self.max_length,
            "initializer": keras.initializers.serialize(self.initializer),
        })
        return config
