"""Keras layers: attention, position encodings and Transformer blocks."""

# --- attention (core) ---
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.attention.projected_attention import ProjectedAttention

# --- attention (seq2seq) ---
from keras_attention.layers.attention.additive_attention import AdditiveAttention
from keras_attention.layers.attention.luong_attention import LuongAttention
from keras_attention.layers.attention.monotonic_attention import MonotonicAttention

# --- attention (efficient and structured) ---
from keras_attention.layers.attention.global_local_attention import GlobalLocalAttention
from keras_attention.layers.attention.linear_attention import LinearAttention
from keras_attention.layers.attention.local_attention import LocalAttention
from keras_attention.layers.attention.block_sparse_attention import BlockSparseAttention
from keras_attention.layers.attention.sparse_attention import SparseAttention
from keras_attention.layers.attention.adaptive_span_attention import AdaptiveSpanAttention
from keras_attention.layers.attention.low_rank_attention import LowRankAttention
from keras_attention.layers.attention.lsh_attention import LSHAttention
from keras_attention.layers.attention.nystrom_attention import NystromAttention
from keras_attention.layers.attention.attention_pooling import AttentionPooling
from keras_attention.layers.attention.cross_modal_attention import CrossModalAttention
from keras_attention.layers.attention.hierarchical_attention import HierarchicalAttention
from keras_attention.layers.attention.talking_heads_attention import TalkingHeadsAttention

# --- position encodings ---
from keras_attention.layers.encodings.alibi import ALiBi
from keras_attention.layers.encodings.attention_position_encoding import (
    AttentionPositionEncoding,
)
from keras_attention.layers.encodings.learned_position_embedding import (
    LearnedPositionEmbedding,
)
from keras_attention.layers.encodings.patch_position_embedding_2d import (
    PatchPositionEmbedding2D,
)
from keras_attention.layers.encodings.relative_position_bias import RelativePositionBias
from keras_attention.layers.encodings.relative_position_embedding import (
    RelativePositionEmbedding,
)
from keras_attention.layers.encodings.rotary_embedding import RotaryEmbedding
from keras_attention.layers.encodings.sinusoidal_position_encoding import (
    SinusoidalPositionEncoding,
)
from keras_attention.layers.encodings.time2vec import Time2Vec

# --- blocks ---
from keras_attention.layers.blocks.feed_forward import FeedForward
from keras_attention.layers.blocks.transformer_decoder_block import TransformerDecoderBlock
from keras_attention.layers.blocks.transformer_encoder_block import TransformerEncoderBlock
