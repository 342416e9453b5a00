"""Greedy decoding: the most likely token at every step."""

import keras
from keras import ops

from keras_attention.samplers.sampler import Sampler


@keras.saving.register_keras_serializable(package="keras_attention")
class GreedySampler(Sampler):
    """Chooses the most likely token at every step.

    Args:
        temperature, logits_processors: as `Sampler` (the temperature only changes
            the scores of `sample_with_scores`, not the tokens).

    Example:

    ```python
    sampler = keras_attention.samplers.GreedySampler(
        logits_processors=[keras_attention.samplers.NoImmediateRepeat()])
    causal_lm.compile(sampler=sampler)
    ```
    """

    def choose(self, log_probs):
        return ops.cast(ops.argmax(log_probs, axis=-1), "int32")
