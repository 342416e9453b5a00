"""Sampling from the whole next-token distribution."""

import keras
from keras import ops, random

from keras_attention.samplers.sampler import Sampler
from keras_attention.utils.validation import check_positive_int


def draw(sampler, log_probs):
    """`(B,)` int32 ids drawn from `(B, V)` log-probabilities with the sampler's seed."""
    return ops.cast(random.categorical(log_probs, 1, dtype="int32",
                                       seed=sampler.seed_generator)[:, 0], "int32")


class SeededSampler(Sampler):
    """A sampler that draws at random, from a `keras.random.SeedGenerator`."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = check_positive_int("seed", seed, allow_none=True, allow_zero=True)
        self.seed_generator = random.SeedGenerator(self.seed)

    def choose(self, log_probs):
        return draw(self, log_probs)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_attention")
class RandomSampler(SeededSampler):
    """Draws each token from the softmax of `logits / temperature`.

    Args:
        temperature: float > 0; below 1 sharpens the distribution, above 1
            flattens it.
        seed: optional int for reproducible draws.
        logits_processors: as `Sampler`.
    """

    def __init__(self, temperature=1.0, seed=None, **kwargs):
        super().__init__(temperature=temperature, seed=seed, **kwargs)
