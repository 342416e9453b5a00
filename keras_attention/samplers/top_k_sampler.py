"""Top-k sampling: draw among the k most likely tokens."""

import keras
from keras import ops

from keras_attention.samplers.random_sampler import SeededSampler
from keras_attention.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class TopKSampler(SeededSampler):
    """Draws each token among the `k` most likely ones, renormalised.

    Args:
        k: int >= 1 (at most the vocabulary size).
        seed: optional int for reproducible draws.
        temperature, logits_processors: as `Sampler`.
    """

    def __init__(self, k=5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.k = check_positive_int("k", k)

    def next_token_log_probs(self, logits):
        log_probs = self.log_softmax(logits)  # (B, V)
        vocab = ops.shape(log_probs)[-1]
        if isinstance(vocab, int) and self.k > vocab:
            raise ValueError(
                f"`k` must be at most the vocabulary size {vocab}. Received: k={self.k}")
        _, top = ops.top_k(log_probs, self.k)  # (B, k)
        keep = ops.any(ops.equal(top[..., None], ops.arange(vocab, dtype=top.dtype)),
                       axis=1)  # (B, V)
        return ops.log_softmax(ops.where(keep, log_probs, float("-inf")), axis=-1)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
