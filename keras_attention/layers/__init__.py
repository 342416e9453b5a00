"""Keras layers: attention, position encodings and Transformer blocks."""

# --- attention (core) ---
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention

# --- attention (seq2seq) ---

# --- attention (efficient and structured) ---

# --- position encodings ---
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)

# --- blocks ---
