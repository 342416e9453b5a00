"""Greedy, top-k, top-p and random samplers on the hand-set chain of `tables`:
exact for greedy, statistical (seeded) for the random ones."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_attention import samplers
from tests.samplers.tables import (
    END, PAD, START, VOCAB, greedy_path, log_softmax, make_next, random_table,
    start_prompt)

ROWS = 4000
# One step from [start]: the first-token logits of `random_table(0)`.
FIRST = random_table(0)[START, START].astype("float64")


def first_tokens(sampler):
    """Tokens drawn at position 1 for ROWS rows, and their scores."""
    prompt, cache = start_prompt(ROWS, 2)
    tokens, scores = sampler.sample_with_scores(
        make_next(random_table(0)), prompt, cache, index=1)
    return np.asarray(tokens)[:, 1], np.asarray(scores)


def assert_frequencies(tokens, probs):
    counts = np.bincount(tokens, minlength=VOCAB) / len(tokens)
    assert (counts[probs == 0] == 0).all()
    # 4000 draws: a standard error below 0.008 for every probability.
    np.testing.assert_allclose(counts, probs, atol=0.035)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_follows_the_argmax_path(seed):
    table = random_table(seed)
    prompt, cache = start_prompt(3, 6)
    tokens, scores = samplers.GreedySampler().sample_with_scores(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    expected, log_prob = greedy_path(table, 6)
    np.testing.assert_array_equal(tokens, [expected] * 3)
    np.testing.assert_allclose(scores, [log_prob] * 3, rtol=1e-5)


def test_finished_rows_keep_their_padding():
    """Rows that end early are left alone while the others go on."""
    probs = np.full((5, 5, 5), 1e-3)
    probs[:, START, END] = 1.0  # row 0: start -> end
    probs[:, 3, 3] = 1.0  # row 1: "a" -> "a"
    table = np.log(probs).astype("float32")
    prompt, cache = start_prompt(2, 5)
    prompt[:, :] = [[START, PAD, PAD, PAD, PAD], [START, 3, PAD, PAD, PAD]]
    mask = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], bool)
    tokens = samplers.GreedySampler()(make_next(table), prompt, cache, index=1,
                                      mask=mask, stop_token_ids=[END])
    np.testing.assert_array_equal(tokens, [[START, END, PAD, PAD, PAD],
                                           [START, 3, 3, 3, 3]])


def test_random_sampler_draws_the_softmax():
    tokens, scores = first_tokens(samplers.RandomSampler(seed=7))
    probs = np.exp(log_softmax(FIRST))
    assert_frequencies(tokens, probs)
    np.testing.assert_allclose(scores, np.log(probs[tokens]), rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_random_sampler_temperature(temperature):
    tokens, _ = first_tokens(samplers.RandomSampler(temperature=temperature, seed=3))
    assert_frequencies(tokens, np.exp(log_softmax(FIRST / temperature)))


def test_top_k_draws_among_the_k_best():
    tokens, scores = first_tokens(samplers.TopKSampler(k=2, seed=5))
    probs = np.exp(log_softmax(FIRST))
    keep = np.argsort(-probs)[:2]
    expected = np.zeros(VOCAB)
    expected[keep] = probs[keep] / probs[keep].sum()
    assert_frequencies(tokens, expected)
    np.testing.assert_allclose(scores, np.log(expected[tokens]), rtol=1e-5)


@pytest.mark.parametrize("p", [0.3, 0.8, 1.0])
def test_top_p_draws_the_smallest_set_covering_p(p):
    tokens, _ = first_tokens(samplers.TopPSampler(p=p, seed=5))
    probs = np.exp(log_softmax(FIRST))
    order = np.argsort(-probs)
    before = np.cumsum(probs[order]) - probs[order]
    keep = order[before < p]
    expected = np.zeros(VOCAB)
    expected[keep] = probs[keep] / probs[keep].sum()
    assert_frequencies(tokens, expected)


def test_top_k_of_one_is_greedy():
    table = random_table(1)
    prompt, cache = start_prompt(8, 6)
    top1 = samplers.TopKSampler(k=1, seed=0)(make_next(table), prompt, cache, index=1,
                                             stop_token_ids=[END])
    np.testing.assert_array_equal(top1, [greedy_path(table, 6)[0]] * 8)


def test_seeded_samplers_repeat():
    a = first_tokens(samplers.TopPSampler(p=0.9, seed=11))[0]
    b = first_tokens(samplers.TopPSampler(p=0.9, seed=11))[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", [
    samplers.GreedySampler(temperature=0.7),
    samplers.RandomSampler(temperature=1.5, seed=3),
    samplers.TopKSampler(k=3, seed=1),
    samplers.TopPSampler(p=0.5, seed=2, logits_processors=[samplers.MinLength(2)]),
])
def test_config_round_trip(sampler):
    clone = type(sampler).from_config(sampler.get_config())
    assert clone.get_config() == sampler.get_config()
    # keras-hub's `samplers.get` (what `causal_lm.compile(sampler=config)` uses).
    clone = keras_hub.samplers.get(keras.saving.serialize_keras_object(sampler))
    assert type(clone) is type(sampler) and clone.get_config() == sampler.get_config()
