"""The samplers give the same results eagerly and compiled (tf.function with XLA on
TensorFlow, jax.jit on JAX), and inside a reloaded TensorFlow SavedModel."""

import keras
import numpy as np
import pytest

from keras_attention import samplers
from tests.samplers.tables import END, PAD, START, make_next, random_table, start_prompt

LENGTH = 7
TABLE = random_table(6)


def deterministic_samplers():
    rules = [samplers.BannedIds([PAD, START]), samplers.NoImmediateRepeat(),
             samplers.MinLength(2), samplers.AllowedEnds([3, 4], allowed_single=[4])]
    return [
        samplers.GreedySampler(),
        samplers.GreedySampler(logits_processors=rules),
        samplers.BeamSampler(num_beams=3, length_penalty=0.7),
        samplers.BeamSampler(num_beams=4, length_penalty=0.6, length_offset=5.0,
                             logits_processors=rules),
    ]


def compiled(function):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function, jit_compile=True)


@pytest.mark.parametrize("index", range(4))
def test_eager_and_compiled_agree(index):
    sampler = deterministic_samplers()[index]
    prompt, cache = start_prompt(3, LENGTH)
    prompt[1, 1] = 4  # row 1 has a longer prompt
    mask = np.zeros_like(prompt, dtype=bool)
    mask[:, 0], mask[1, 1] = True, True

    def run(prompt, cache, mask):
        return sampler.sample_with_scores(make_next(TABLE), prompt, cache, index=1,
                                          mask=mask, stop_token_ids=[END])

    eager_tokens, eager_scores = run(prompt, cache, mask)
    tokens, scores = compiled(run)(prompt, cache, mask)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(eager_tokens))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(eager_scores), rtol=1e-5)


@pytest.mark.parametrize("sampler", [
    samplers.RandomSampler(seed=1), samplers.TopKSampler(k=2, seed=1),
    samplers.TopPSampler(p=0.7, seed=1)])
def test_random_samplers_compile(sampler):
    prompt, cache = start_prompt(16, LENGTH)

    def run(prompt, cache):
        return sampler(make_next(TABLE), prompt, cache, index=1, stop_token_ids=[END])

    if keras.backend.backend() == "jax":
        # The seed generator's state is a variable: under jax.jit it is threaded
        # through statelessly, as keras-hub's causal LMs do.
        import jax

        def stateless(state, prompt, cache):
            with keras.StatelessScope(
                    state_mapping=list(zip(sampler.variables, state))) as scope:
                tokens = run(prompt, cache)
            return tokens, [scope.get_current_value(v) for v in sampler.variables]

        state = [v.value for v in sampler.variables]
        tokens, state = jax.jit(stateless)(state, prompt, cache)
    else:
        tokens = compiled(run)(prompt, cache)
    tokens = np.asarray(tokens)
    assert tokens.shape == (16, LENGTH) and (tokens[:, 0] == START).all()
    assert len({tuple(t) for t in tokens}) > 1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="SavedModel export is TensorFlow's")
def test_saved_model_round_trip(tmp_path):
    import tensorflow as tf

    greedy, beam = samplers.GreedySampler(), samplers.BeamSampler(num_beams=3,
                                                                  length_penalty=1.0)
    table = tf.constant(TABLE)

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, LENGTH), tf.int32)])
        def greedy(self, prompt):
            return greedy(make_next(table), prompt, tf.zeros_like(prompt), index=1,
                          stop_token_ids=[END])

        @tf.function(input_signature=[tf.TensorSpec((None, LENGTH), tf.int32)])
        def beam(self, prompt):
            return beam.sample_with_scores(make_next(table), prompt, tf.zeros_like(prompt),
                                           index=1, stop_token_ids=[END])

    prompt, _ = start_prompt(2, LENGTH)
    module = Decoder()
    expected_greedy, expected_beam = module.greedy(prompt), module.beam(prompt)
    tf.saved_model.save(module, str(tmp_path / "decoder"))
    loaded = tf.saved_model.load(str(tmp_path / "decoder"))
    np.testing.assert_array_equal(loaded.greedy(prompt), expected_greedy)
    tokens, scores = loaded.beam(prompt)
    np.testing.assert_array_equal(tokens, expected_beam[0])
    np.testing.assert_allclose(scores, expected_beam[1], rtol=1e-6)
    # A different batch size goes through the same exported loop.
    np.testing.assert_array_equal(loaded.greedy(start_prompt(5, LENGTH)[0])[:2],
                                  expected_greedy)
