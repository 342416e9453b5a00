"""Position-wise feed-forward network of a Transformer block.

Shape legend: B batch, T sequence length, F input features, I intermediate
features, O output features.
"""

import keras
from keras import ops

from keras_attention.utils.validation import check_choice, check_positive_int, check_rate

ACTIVATIONS = ("relu", "gelu", "swiglu")


def _fresh_initializer(initializer):
    """A new instance of `initializer`, so that sublayers never share one object."""
    return keras.initializers.get(keras.initializers.serialize(initializer))


@keras.saving.register_keras_serializable(package="keras_attention")
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward network (Vaswani et al. 2017), with a SwiGLU
    variant (Shazeer 2020, "GLU Variants Improve Transformer").

    The same two-layer MLP is applied at every position:

    - `"relu"` / `"gelu"`: `act(x W1 + b1) W2 + b2` (GELU is the exact, erf form).
    - `"swiglu"`: `(silu(x W + b) * (x V + c)) W2 + b2`, a gated linear unit with
      a SiLU (Swish) gate; it has three weight matrices instead of two.

    Dropout is applied to the intermediate activations. Keras masks pass through
    unchanged, since every position is processed on its own.

    Args:
        intermediate_dim: size I of the hidden layer.
        activation: `"relu"`, `"gelu"` or `"swiglu"`.
        dropout: dropout rate on the intermediate activations.
        use_bias: whether the dense layers have biases.
        output_dim: output features O; defaults to the input features F.
        kernel_initializer, bias_initializer: dense layer initializers.
        seed: seed of the dropout.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, T, F)` (any rank >= 2 works: the MLP acts on the last axis).
        training: enables dropout.

    Returns:
        `(B, T, O)`.

    Example:

    >>> x = keras.random.normal((2, 8, 16))
    >>> FeedForward(intermediate_dim=64, activation="swiglu")(x).shape
    (2, 8, 16)
    """

    def __init__(
        self,
        intermediate_dim,
        activation="relu",
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.intermediate_dim = check_positive_int("intermediate_dim", intermediate_dim)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = check_positive_int("output_dim", output_dim, allow_none=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.supports_masking = True

    def _dense(self, name, units):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=_fresh_initializer(self.kernel_initializer),
            bias_initializer=_fresh_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                "`inputs` must have rank >= 2 (batch, ..., features). "
                f"Received: shape={input_shape}"
            )
        if input_shape[-1] is None:
            raise ValueError(
                "The last axis (features) of `inputs` must be known. "
                f"Received: shape={input_shape}"
            )
        hidden_shape = input_shape[:-1] + (self.intermediate_dim,)
        if self.activation == "swiglu":
            self._gate_dense = self._dense("gate", self.intermediate_dim)
            self._gate_dense.build(input_shape)
        self._intermediate_dense = self._dense("intermediate", self.intermediate_dim)
        self._intermediate_dense.build(input_shape)
        self._dropout_layer = keras.layers.Dropout(
            self.dropout, seed=self.seed, dtype=self.dtype_policy, name="dropout"
        )
        self._output_dense = self._dense("output", self.output_dim or input_shape[-1])
        self._output_dense.build(hidden_shape)
        self.built = True

    def call(self, inputs, training=None):
        hidden = self._intermediate_dense(inputs)  # (B, T, I)
        if self.activation == "swiglu":
            gate = self._gate_dense(inputs)  # (B, T, I)
            hidden = ops.silu(gate) * hidden  # (B, T, I)
        elif self.activation == "gelu":
            hidden = ops.gelu(hidden, approximate=False)  # (B, T, I)
        else:
            hidden = ops.relu(hidden)  # (B, T, I)
        hidden = self._dropout_layer(hidden, training=training)
        return self._output_dense(hidden)  # (B, T, O)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "activation": self.activation,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config
