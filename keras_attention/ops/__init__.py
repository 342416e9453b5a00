"""Attention functions on per-head tensors, written with `keras.ops` only."""

from keras_attention.ops.attention import scaled_dot_product_attention
