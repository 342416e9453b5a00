"""keras-attention: a Keras 3 layer for every attention type and positional encoding."""

from keras_attention import layers, masks, ops

__version__ = "0.1.0"
