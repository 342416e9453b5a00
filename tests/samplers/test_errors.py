"""Every argument check of the samplers and processors names the argument."""

import numpy as np
import pytest

from keras_attention import samplers
from tests.samplers.tables import END, make_next, random_table, start_prompt


@pytest.mark.parametrize("make,error,match", [
    (lambda: samplers.GreedySampler(temperature=0), ValueError, "temperature=0"),
    (lambda: samplers.GreedySampler(temperature="hot"), TypeError, "temperature='hot'"),
    (lambda: samplers.GreedySampler(logits_processors=[lambda x: x]), TypeError,
     "logits_processors="),
    (lambda: samplers.BeamSampler(num_beams=0), ValueError, "num_beams=0"),
    (lambda: samplers.BeamSampler(num_beams=2.5), TypeError, "num_beams=2.5"),
    (lambda: samplers.BeamSampler(length_penalty="long"), TypeError,
     "length_penalty='long'"),
    (lambda: samplers.BeamSampler(length_offset=-1.0), ValueError, "length_offset=-1.0"),
    (lambda: samplers.BeamSampler(return_all_beams=1), TypeError, "return_all_beams=1"),
    (lambda: samplers.TopKSampler(k=0), ValueError, "k=0"),
    (lambda: samplers.TopPSampler(p=0.0), ValueError, "p=0.0"),
    (lambda: samplers.TopPSampler(p=1.5), ValueError, "p=1.5"),
    (lambda: samplers.TopPSampler(p=None), TypeError, "p=None"),
    (lambda: samplers.RandomSampler(seed=-1), ValueError, "seed=-1"),
    (lambda: samplers.BannedIds([]), ValueError, r"ids=\(\)"),
    (lambda: samplers.BannedIds([-1]), ValueError, "ids=-1"),
    (lambda: samplers.BannedIds(None), TypeError, "ids=None"),
    (lambda: samplers.MinLength(-1), ValueError, "min_length=-1"),
    (lambda: samplers.MinLength(2, end_ids=["x"]), TypeError, "end_ids='x'"),
    (lambda: samplers.AllowedEnds([3], allowed_single=[]), ValueError, "allowed_single="),
])
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match="Received: " + match):
        make()


@pytest.mark.parametrize("sampler", [samplers.GreedySampler(), samplers.BeamSampler()])
def test_call_errors(sampler):
    prompt, cache = start_prompt(2, 4)
    with pytest.raises(ValueError, match=r"`prompt` must have rank 2.*Received: shape=\(8,\)"):
        sampler(make_next(random_table(0)), prompt.reshape(-1), index=1)
    with pytest.raises(ValueError, match="Received: stop_token_ids=-2"):
        sampler(make_next(random_table(0)), prompt, cache, index=1, stop_token_ids=[-2])


def test_top_k_larger_than_the_vocabulary():
    prompt, cache = start_prompt(2, 4)
    with pytest.raises(ValueError, match="vocabulary size 5. Received: k=6"):
        samplers.TopKSampler(k=6)(make_next(random_table(0)), prompt, cache, index=1,
                                  stop_token_ids=[END])
    assert np.asarray(samplers.TopKSampler(k=5, seed=0)(
        make_next(random_table(0)), prompt, cache, index=1)).shape == (2, 4)
