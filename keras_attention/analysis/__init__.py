"""Attention analysis: capturing maps, rollout and flow, entropy, head importance,
plots and attention distillation.

The functions take attention weights `(batch, heads, query_len, key_len)`, as the
layers return them with `return_attention_scores=True` or as `capture_attention`
records them, and return NumPy arrays (the distillation loss works on tensors).
"""

from keras_attention.analysis.capture import (
    AttentionRecorder,
    capture_attention,
    with_attention_outputs,
)
from keras_attention.analysis.distillation_loss import AttentionDistillationLoss
from keras_attention.analysis.entropy import attention_entropy
from keras_attention.analysis.flow import attention_flow
from keras_attention.analysis.head_importance import head_importance
from keras_attention.analysis.head_mask import mask_heads
from keras_attention.analysis.plot import plot_attention
from keras_attention.analysis.rollout import attention_rollout
