"""Samplers for autoregressive decoding, following keras-hub's sampler protocol.

Each sampler subclasses `keras_hub.samplers.Sampler`, so it plugs into any keras-hub
causal LM (`causal_lm.compile(sampler=...)`) and into our own cached decoders;
logits processors add decoding rules to any of them. See docs/samplers.md.
"""

from keras_attention.samplers.beam_sampler import BeamSampler
from keras_attention.samplers.greedy_sampler import GreedySampler
from keras_attention.samplers.processors import (
    AllowedEnds,
    BannedIds,
    LogitsProcessor,
    MinLength,
    NoImmediateRepeat,
)
from keras_attention.samplers.random_sampler import RandomSampler
from keras_attention.samplers.sampler import Sampler
from keras_attention.samplers.top_k_sampler import TopKSampler
from keras_attention.samplers.top_p_sampler import TopPSampler
