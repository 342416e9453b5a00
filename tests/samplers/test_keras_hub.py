"""Our samplers inside a keras-hub causal LM: a tiny randomly initialised GPT-2 with
a byte-pair tokenizer built from an in-memory vocabulary."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_attention import samplers

# GPT-2 pads with id 0, which must not be the end token.
VOCABULARY = {"!": 0, "a": 1, "b": 2, "c": 3, "Ġ": 4, "Ġa": 5, "Ġb": 6, "Ġc": 7, "ab": 8,
              "Ġab": 9, "ca": 10, "Ġca": 11, "<|endoftext|>": 12}
END = VOCABULARY["<|endoftext|>"]
MERGES = ["Ġ a", "Ġ b", "Ġ c", "a b", "Ġa b", "c a", "Ġc a"]
PROMPTS = ["ab ca", "c"]


@pytest.fixture(scope="module")
def causal_lm():
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=VOCABULARY, merges=MERGES)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=12)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(VOCABULARY), num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=12)
    # Larger (tied) embeddings, so the tiny model mostly repeats its input token,
    # and an end token close to "c", so that "c" is followed by the end.
    embeddings = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings) * 300.0
    embeddings[END] = 1.3 * embeddings[VOCABULARY["c"]]
    backbone.token_embedding.embeddings.assign(embeddings)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def token_generate(causal_lm, sampler):
    causal_lm.compile(sampler=sampler)
    inputs = causal_lm.preprocessor.generate_preprocess(PROMPTS, sequence_length=12)
    preprocessor, causal_lm.preprocessor = causal_lm.preprocessor, None
    try:
        out = causal_lm.generate(
            {k: keras.ops.convert_to_numpy(v) for k, v in inputs.items()},
            stop_token_ids=[END])
    finally:
        causal_lm.preprocessor = preprocessor
    return np.asarray(out["token_ids"]), np.asarray(out["padding_mask"])


def test_greedy_matches_keras_hub_greedy(causal_lm):
    ours, ours_mask = token_generate(causal_lm, samplers.GreedySampler())
    theirs, theirs_mask = token_generate(causal_lm, keras_hub.samplers.GreedySampler())
    np.testing.assert_array_equal(ours_mask, theirs_mask)
    assert ours_mask[0].all() and not ours_mask[1].all()  # "c" ends, "ab ca" runs on
    np.testing.assert_array_equal(np.where(ours_mask, ours, -1),
                                  np.where(theirs_mask, theirs, -1))
    causal_lm.compile(sampler=samplers.GreedySampler())
    text = causal_lm.generate(PROMPTS, max_length=12)
    causal_lm.compile(sampler="greedy")
    assert text == causal_lm.generate(PROMPTS, max_length=12)


@pytest.mark.parametrize("sampler", [
    samplers.BeamSampler(num_beams=3, length_penalty=0.6),
    samplers.TopKSampler(k=3, seed=1),
    samplers.TopPSampler(p=0.9, seed=1,
                         logits_processors=[samplers.NoImmediateRepeat()]),
])
def test_samplers_generate(causal_lm, sampler):
    tokens, mask = token_generate(causal_lm, sampler)
    assert tokens.shape == (2, 12)
    causal_lm.compile(sampler=sampler)
    text = causal_lm.generate(PROMPTS, max_length=12)
    assert [t.startswith(p) for t, p in zip(text, PROMPTS)] == [True, True]


def test_beam_scores_with_the_causal_lm_step(causal_lm):
    """`sample_with_scores` on the causal LM's own cached step function: one beam
    scores as greedy, and a wider beam finds a result at least as good."""
    inputs = causal_lm.preprocessor.generate_preprocess(PROMPTS, sequence_length=12)
    token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
    _, cache = causal_lm._build_cache(token_ids)
    index = int(keras.ops.min(keras.ops.sum(keras.ops.cast(padding_mask, "int32"), -1)))

    def next(prompt, cache, index):
        step = keras.ops.slice(prompt, [0, index - 1], [keras.ops.shape(prompt)[0], 1])
        logits, hidden, cache = causal_lm.call_with_cache(step, cache, index - 1)
        return logits[:, 0], hidden[:, 0], cache

    def run(sampler):
        return sampler.sample_with_scores(next, token_ids, cache, index=index,
                                          mask=padding_mask, stop_token_ids=[END],
                                          model=causal_lm)

    greedy_tokens, greedy_scores = run(samplers.GreedySampler())
    one_tokens, one_scores = run(samplers.BeamSampler(num_beams=1))
    _, wide_scores = run(samplers.BeamSampler(num_beams=4))
    np.testing.assert_array_equal(np.asarray(one_tokens), np.asarray(greedy_tokens))
    np.testing.assert_allclose(one_scores, greedy_scores, rtol=1e-5)
    assert (np.asarray(wide_scores) >= np.asarray(greedy_scores) - 1e-5).all()
