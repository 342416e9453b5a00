"""Attention functions on per-head tensors, written with `keras.ops` only."""

from keras_attention.ops.attention import scaled_dot_product_attention
from keras_attention.ops.band import GlobalKeys, blocked_band_attention
from keras_attention.ops.chunked import chunked_attention
from keras_attention.ops.linear import favor_random_features, linear_attention
from keras_attention.ops.masked_softmax import MASK_VALUE, mask_value, masked_softmax
from keras_attention.ops.sliding_window import sliding_window_attention
