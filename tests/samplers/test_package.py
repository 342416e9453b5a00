"""`keras_attention.samplers` and `keras_attention.analysis` after `import keras_attention`."""

import keras_hub

import keras_attention


def test_subpackages_are_attributes():
    assert issubclass(keras_attention.samplers.BeamSampler, keras_hub.samplers.Sampler)
    assert callable(keras_attention.analysis.attention_entropy)
    assert {"samplers", "analysis", "layers"} <= set(dir(keras_attention))


def test_every_sampler_is_a_keras_hub_sampler():
    for name in ["GreedySampler", "BeamSampler", "TopKSampler", "TopPSampler",
                 "RandomSampler"]:
        assert issubclass(getattr(keras_attention.samplers, name), keras_hub.samplers.Sampler)
