"""The logits processors, called directly and inside every sampler."""

import numpy as np
import pytest
from keras import ops

from keras_attention import samplers
from tests.samplers.tables import (
    A, B, END, PAD, START, VOCAB, make_next, random_table, start_prompt)

NEG = -np.inf


def call(processor, tokens, index, length, stop=(END,)):
    logits = ops.zeros((len(tokens), VOCAB))
    out = processor(logits, ops.convert_to_tensor(np.array(tokens, "int32")),
                    ops.convert_to_tensor(index, "int32"),
                    ops.convert_to_tensor(np.array(length, "int32")), stop)
    return np.asarray(out)


def banned(out):
    return [list(np.flatnonzero(np.isneginf(row))) for row in out]


def test_banned_ids():
    out = call(samplers.BannedIds([PAD, START]), [[START, A]], 2, [1])
    assert banned(out) == [[PAD, START]]


def test_no_immediate_repeat_bans_the_previous_token():
    out = call(samplers.NoImmediateRepeat(), [[START, A, PAD], [START, B, PAD]], 2, [1, 1])
    assert banned(out) == [[A], [B]]
    assert banned(call(samplers.NoImmediateRepeat(), [[START]], 0, [0])) == [[]]


def test_min_length_bans_the_end_until_enough_tokens():
    out = call(samplers.MinLength(2), [[START, A, PAD]] * 3, 2, [0, 1, 2])
    assert banned(out) == [[END], [END], []]
    # Its own end ids win over the sampler's stop tokens; without any it does nothing.
    assert banned(call(samplers.MinLength(2, end_ids=[B]), [[START, A]], 2, [1])) == [[B]]
    assert banned(call(samplers.MinLength(2), [[START, A]], 2, [1], stop=None)) == [[]]


def test_allowed_ends():
    rule = samplers.AllowedEnds(allowed_previous=[A, B], allowed_single=[B])
    tokens = [[START, A, B, PAD], [START, A, B, PAD], [START, A, A, PAD]]
    # After one token the end needs a single-token result ("b"), later any of "a b".
    assert banned(call(rule, [[START, A], [START, B]], 2, [1, 1])) == [[END], []]
    assert banned(call(rule, tokens, 3, [2, 2, 2])) == [[], [], []]
    assert banned(call(rule, [[START]], 1, [0])) == [[END]]


def test_processors_config_round_trip():
    for p in [samplers.BannedIds([0, 1]), samplers.NoImmediateRepeat(),
              samplers.MinLength(3, end_ids=[2]),
              samplers.AllowedEnds([3, 4], allowed_single=[4])]:
        assert type(p).from_config(p.get_config()).get_config() == p.get_config()
        assert type(p).__name__ in repr(p)


def _every_sampler(processors):
    return [
        samplers.GreedySampler(logits_processors=processors),
        samplers.BeamSampler(num_beams=3, logits_processors=processors),
        samplers.RandomSampler(seed=1, logits_processors=processors),
        samplers.TopKSampler(k=3, seed=1, logits_processors=processors),
        samplers.TopPSampler(p=0.95, seed=1, logits_processors=processors),
    ]


@pytest.mark.parametrize("index", range(5))
def test_every_sampler_obeys_the_processors(index):
    """With pad and start banned, no repeats, at least two tokens and an end only
    after "b", no result breaks a rule (the rules always leave a token)."""
    processors = [samplers.BannedIds([PAD, START]), samplers.NoImmediateRepeat(),
                  samplers.MinLength(2), samplers.AllowedEnds([B])]
    sampler = _every_sampler(processors)[index]
    prompt, cache = start_prompt(64, 7)
    tokens = np.asarray(sampler(make_next(random_table(index)), prompt, cache, index=1,
                                stop_token_ids=[END]))
    for row in tokens:
        words = list(row[1:])
        if END in words:
            n = words.index(END)
            assert n >= 2 and words[n - 1] == B
            assert all(w == PAD for w in words[n + 1:])
            words = words[:n]
        assert PAD not in words and START not in words
        assert all(x != y for x, y in zip(words, words[1:]))
