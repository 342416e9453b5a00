"""Top-p (nucleus) sampling: draw among the most likely tokens that cover mass p."""

import numbers

import keras
from keras import ops

from keras_attention.samplers.random_sampler import SeededSampler


@keras.saving.register_keras_serializable(package="keras_attention")
class TopPSampler(SeededSampler):
    """Draws each token from the smallest set of most likely tokens whose
    probabilities sum to at least `p` (Holtzman et al. 2020), renormalised.

    Args:
        p: float in (0, 1]; 1 keeps every token.
        seed: optional int for reproducible draws.
        temperature, logits_processors: as `Sampler`.
    """

    def __init__(self, p=0.9, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"`p` must be a float in (0, 1]. Received: p={p!r}")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"`p` must be in (0, 1]. Received: p={p}")
        self.p = float(p)

    def next_token_log_probs(self, logits):
        log_probs = self.log_softmax(logits)  # (B, V)
        if self.p == 1.0:
            return log_probs
        order = ops.argsort(-log_probs, axis=-1)  # (B, V), most likely first
        sorted_probs = ops.exp(ops.take_along_axis(log_probs, order, axis=-1))
        # A token is kept when the tokens before it cover less than p.
        before = ops.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = ops.less(before, self.p)
        keep = ops.take_along_axis(keep_sorted, ops.argsort(order, axis=-1), axis=-1)
        return ops.log_softmax(ops.where(keep, log_probs, float("-inf")), axis=-1)

    def get_config(self):
        return {**super().get_config(), "p": self.p}
