"""Golden tests of `BeamSampler` on the hand-set chain of `tables`: a beam as wide as
the search space must give exactly the brute-force ranking of all results."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_attention import samplers
from tests.samplers.tables import (
    A, B, END, PAD, START, make_next, random_table, ranked, start_prompt)

LENGTH = 5  # start + 4 generated positions: 31 possible results


@pytest.mark.parametrize("length_penalty,length_offset",
                         [(0.0, 0.0), (1.0, 0.0), (-0.5, 0.0), (0.6, 5.0)])
@pytest.mark.parametrize("seed", [0, 3])
def test_exhaustive_beam_equals_brute_force_ranking(length_penalty, length_offset, seed):
    table = random_table(seed)
    prompt, cache = start_prompt(2, LENGTH)
    sampler = samplers.BeamSampler(num_beams=16, length_penalty=length_penalty,
                                   length_offset=length_offset)
    tokens, scores = sampler.sample_all_beams(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    expected = ranked(table, LENGTH, 16, length_penalty, length_offset)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    assert tokens.shape == (2, 16, LENGTH) and scores.shape == (2, 16)
    for row in range(2):
        assert [tuple(t) for t in tokens[row]] == [r[0] for r in expected]
        np.testing.assert_allclose(scores[row], [r[1] for r in expected], rtol=1e-5)


def _table_with_trap():
    """From start: "a" 0.6, "b" 0.4. After "a": end, "a", "b" a third each. After
    "b": end 0.9. Greedy says "a end" (0.2); the best is "b end" (0.36)."""
    probs = np.full((5, 5, 5), 1e-6)
    probs[:, START, A], probs[:, START, B] = 0.6, 0.4
    probs[:, A, [END, A, B]] = 1 / 3
    probs[:, B, END], probs[:, B, A] = 0.9, 0.1
    return np.log(probs).astype("float32")


def test_beam_finds_what_greedy_misses():
    table = _table_with_trap()
    prompt, cache = start_prompt(1, 4)
    greedy, _ = samplers.GreedySampler().sample_with_scores(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    beam, score = samplers.BeamSampler(num_beams=2).sample_with_scores(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    np.testing.assert_array_equal(greedy, [[START, A, END, PAD]])
    np.testing.assert_array_equal(beam, [[START, B, END, PAD]])
    np.testing.assert_allclose(score, [np.log(0.36)], rtol=1e-4)


def test_length_penalty_prefers_longer_results():
    """log p("b end") = log 0.36 = -1.02 beats "a b end" (log 0.6/3*0.9 = -1.71) at
    length_penalty 0, but not at length_penalty 2: -1.02/4 > -1.71/9 is false."""
    table = _table_with_trap()
    prompt, cache = start_prompt(1, 4)
    short = samplers.BeamSampler(num_beams=4, length_penalty=0.0)(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    long = samplers.BeamSampler(num_beams=4, length_penalty=2.0)(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    np.testing.assert_array_equal(short, [[START, B, END, PAD]])
    np.testing.assert_array_equal(long, [[START, A, B, END]])


def test_finished_beams_are_frozen_and_keep_their_place():
    """A result found at the first step stays the best, unchanged, although the live
    beams go on for three more steps (keras-hub's BeamSampler would append tokens
    after its end token)."""
    probs = np.full((5, 5, 5), 1e-6)
    probs[:, START, END], probs[:, START, A] = 0.5, 0.5
    probs[:, A, A], probs[:, A, END] = 0.6, 0.4
    table = np.log(probs).astype("float32")
    prompt, cache = start_prompt(1, 5)
    sampler = samplers.BeamSampler(num_beams=2)
    tokens, scores = sampler.sample_all_beams(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    np.testing.assert_array_equal(tokens[0, 0], [START, END, PAD, PAD, PAD])
    np.testing.assert_array_equal(tokens[0, 1], [START, A, END, PAD, PAD])
    np.testing.assert_allclose(scores[0], np.log([0.5, 0.2]), rtol=1e-4)


def test_without_stop_tokens_beams_fill_the_buffer():
    table = random_table(2)
    prompt, cache = start_prompt(1, 4)
    tokens, scores = samplers.BeamSampler(num_beams=3).sample_all_beams(
        make_next(table), prompt, cache, index=1)
    tokens = np.asarray(tokens)
    assert (tokens[0, :, 1:] != PAD).all()
    assert np.all(np.diff(np.asarray(scores)[0]) <= 0)


def test_call_returns_keras_hub_structures():
    table = random_table(0)
    prompt, cache = start_prompt(2, LENGTH)
    best = samplers.BeamSampler(num_beams=3)(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    assert tuple(best.shape) == (2, LENGTH)
    tokens, scores = samplers.BeamSampler(num_beams=3, return_all_beams=True)(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    assert tuple(tokens.shape) == (2, 3, LENGTH) and tuple(scores.shape) == (2, 3)
    np.testing.assert_array_equal(tokens[:, 0], best)


def test_prompt_positions_are_kept_and_cost_nothing():
    """Row 1's prompt is one token longer ("b" at position 1): the search keeps it
    and scores only the tokens after it."""
    table = random_table(4)
    prompt, cache = start_prompt(2, LENGTH)
    prompt[1, 1] = B
    mask = np.zeros_like(prompt, dtype=bool)
    mask[:, 0], mask[1, 1] = True, True
    tokens, scores = samplers.BeamSampler(num_beams=16).sample_all_beams(
        make_next(table), prompt, cache, index=1, mask=mask, stop_token_ids=[END])
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    assert (tokens[1, :, 1] == B).all()
    # Row 0 is the plain search; row 1 is the search that starts after "b".
    expected = ranked(table, LENGTH, 16)
    assert [tuple(t) for t in tokens[0]] == [r[0] for r in expected]
    log_probs = table - np.log(np.exp(table.astype("float64")).sum(-1, keepdims=True))
    best = tokens[1, 0]
    total = sum(log_probs[best[i - 2], best[i - 1], best[i]]
                for i in range(2, LENGTH) if best[i - 1] != END and best[i] != PAD)
    np.testing.assert_allclose(scores[1, 0], total, rtol=1e-5)


def test_one_beam_is_greedy():
    table = random_table(5)
    prompt, cache = start_prompt(2, 6)
    greedy = samplers.GreedySampler().sample_with_scores(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    beam = samplers.BeamSampler(num_beams=1).sample_with_scores(
        make_next(table), prompt, cache, index=1, stop_token_ids=[END])
    np.testing.assert_array_equal(greedy[0], beam[0])
    np.testing.assert_allclose(greedy[1], beam[1], rtol=1e-6)


def test_config_round_trip():
    sampler = samplers.BeamSampler(num_beams=3, length_penalty=0.6, length_offset=5.0,
                                   logits_processors=[samplers.BannedIds([0, 1])])
    clone = samplers.BeamSampler.from_config(sampler.get_config())
    assert clone.get_config() == sampler.get_config()
    assert isinstance(clone.logits_processors[0], samplers.BannedIds)
    clone = keras_hub.samplers.get(keras.saving.serialize_keras_object(sampler))
    assert clone.get_config() == sampler.get_config()
