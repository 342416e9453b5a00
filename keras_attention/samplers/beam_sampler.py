"""Beam search with frozen finished beams, a length penalty and logits processors.

Shape legend: B batch, K beams, C candidates per step, T buffer length,
V vocabulary.
"""

import numbers

import keras
from keras import ops, tree

from keras_attention.samplers.processors import is_any_of
from keras_attention.samplers.sampler import Sampler, prepare_call
from keras_attention.utils.validation import check_bool, check_positive_int

_INF = float("inf")


def _check_real(name, value, low=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float. Received: {name}={value!r}")
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be at least {low}. Received: {name}={value}")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_attention")
class BeamSampler(Sampler):
    """Beam search that keeps its finished results apart and compares them fairly.

    Every step extends each of the `num_beams` live beams by every token and keeps
    the best candidates. A candidate that ends with a stop token leaves the search:
    it is frozen (nothing is appended to it, its buffer keeps the prompt's padding
    after the stop token) and enters a pool of the `num_beams` best finished
    results, ranked by

        score = log_prob / ((length + length_offset) / (1 + length_offset)) ** length_penalty

    where `log_prob` is the sum of its tokens' log-probabilities and `length` the
    number of generated tokens, the stop token included. With the default
    `length_offset=0` the divisor is `length ** length_penalty`; `length_offset=5`
    gives the GNMT normalisation `((5 + length) / 6) ** alpha` (Wu et al. 2016).
    `length_penalty=0` ranks by `log_prob` alone; a larger value favours longer
    results. The live beams only compete with each other, so a finished result
    never takes the place of a live beam. The search stops at the end of the
    buffer, or once no live beam can still beat the worst result of a full pool
    (the bound is exact: the log-probabilities are never positive). At the end of
    the buffer the unfinished beams are ranked with the finished ones.

    Prompt positions (`mask` True) are kept and cost nothing.

    Args:
        num_beams: K >= 1 (1 is greedy decoding with the same scores).
        length_penalty: float, the exponent above.
        length_offset: float >= 0, the offset above.
        return_all_beams: as keras-hub: the call returns `(tokens (B, K, T),
            scores (B, K))`, best first, instead of the best `(B, T)`.
        temperature, logits_processors: as `Sampler`.

    `sample_with_scores` returns the best result and its score
    `(tokens (B, T), scores (B,))` whatever `return_all_beams`;
    `sample_all_beams` returns all K results and scores, best first.

    Note: `next` is called on `B * K` rows (each prompt repeated K times, beams
    of one prompt next to each other), so any context it closes over (an encoder
    output) must be repeated `num_beams` times along the batch, or carried in the
    cache, which the sampler repeats and reorders with the beams.

    Example:

    ```python
    sampler = keras_attention.samplers.BeamSampler(num_beams=4, length_penalty=0.6)
    causal_lm.compile(sampler=sampler)
    causal_lm.generate(["The quick brown"], max_length=32)
    ```
    """

    def __init__(self, num_beams=4, length_penalty=0.0, length_offset=0.0,
                 return_all_beams=False, **kwargs):
        super().__init__(**kwargs)
        self.num_beams = check_positive_int("num_beams", num_beams)
        self.length_penalty = _check_real("length_penalty", length_penalty)
        self.length_offset = _check_real("length_offset", length_offset, low=0.0)
        self.return_all_beams = check_bool("return_all_beams", return_all_beams)

    def __call__(self, next, prompt, cache=None, index=0, mask=None, stop_token_ids=None,
                 hidden_states=None, model=None, **kwargs):
        tokens, scores = self.sample_all_beams(
            next, prompt, cache=cache, index=index, mask=mask,
            stop_token_ids=stop_token_ids, model=model)
        if self.return_all_beams:
            return tokens, scores
        return tokens[:, 0]

    def sample_with_scores(self, next, prompt, cache=None, index=0, mask=None,
                           stop_token_ids=None, model=None):
        """The best result and its score: `(tokens (B, T), scores (B,))`."""
        tokens, scores = self.sample_all_beams(
            next, prompt, cache=cache, index=index, mask=mask,
            stop_token_ids=stop_token_ids, model=model)
        return tokens[:, 0], scores[:, 0]

    def length_norm(self, length):
        """The divisor of the log-probability for results of `length` tokens."""
        length = ops.cast(length, "float32")
        base = (length + self.length_offset) / (1.0 + self.length_offset)
        return ops.power(ops.maximum(base, 1e-9), self.length_penalty)

    def sample_all_beams(self, next, prompt, cache=None, index=0, mask=None,
                         stop_token_ids=None, model=None):
        """All `num_beams` results, best first: `(tokens (B, K, T), scores (B, K))`.

        A score is `-inf` where fewer than K distinct results exist (the tokens
        of such a row are then meaningless).
        """
        prompt, cache, index, mask, stop = prepare_call(
            prompt, cache, index, mask, stop_token_ids)
        k = self.num_beams
        batch, length_t = ops.shape(prompt)[0], ops.shape(prompt)[1]
        n_stop = 0 if stop is None else len(stop)

        def beams(x):  # (B, ...) -> (B * K, ...), the K copies of a row together
            return ops.repeat(x, k, axis=0)

        live_tokens = beams(prompt)  # (B*K, T)
        cache = tree.map_structure(beams, cache)
        first = ops.convert_to_tensor([0.0] + [-_INF] * (k - 1), "float32")
        live_scores = ops.tile(first[None, :], [batch, 1])  # (B, K)
        pool_tokens = ops.repeat(ops.expand_dims(prompt, 1), k, axis=1)  # (B, K, T)
        pool_scores = ops.full((batch, k), -_INF, dtype="float32")  # (B, K)
        length = ops.zeros((batch,), dtype="int32")  # generated tokens so far
        rows = ops.arange(batch, dtype="int32")[:, None] * k  # (B, 1)

        def live_bound(live_scores, length, index):
            """`(B,)` the best score a live beam could still reach when it ends."""
            best = ops.max(live_scores, axis=1)
            if self.length_penalty > 0:
                longest = length + ops.cast(length_t, "int32") - index
                return best / self.length_norm(longest)
            return best / self.length_norm(length + 1)

        def cond(live_tokens, cache, index, live_scores, pool_tokens, pool_scores, length):
            if stop is None:
                return ops.convert_to_tensor(True)
            full = pool_scores[:, k - 1] > -_INF
            bound = live_bound(live_scores, length, index)
            done = ops.logical_or(
                ops.logical_and(full, pool_scores[:, k - 1] >= bound),
                ops.max(live_scores, axis=1) == -_INF)
            return ops.logical_not(ops.all(done))

        def body(live_tokens, cache, index, live_scores, pool_tokens, pool_scores, length):
            logits, _, cache = next(live_tokens, cache, index)  # (B*K, V)
            logits = self.process_logits(
                logits, live_tokens, index, beams(length), stop)
            log_probs = self.next_token_log_probs(logits)  # (B*K, V)
            vocab = ops.shape(log_probs)[-1]
            log_probs = ops.reshape(log_probs, (batch, k, vocab))
            # A prompt position keeps the prompt token at no cost.
            forced = ops.take(mask, index, axis=1)  # (B,)
            prompt_token = ops.cast(ops.take(prompt, index, axis=1), "int32")  # (B,)
            is_prompt_token = ops.equal(ops.arange(vocab, dtype="int32")[None, :],
                                        prompt_token[:, None])  # (B, V)
            prompt_log_probs = ops.where(is_prompt_token, 0.0, -_INF)[:, None, :]
            log_probs = ops.where(forced[:, None, None], prompt_log_probs, log_probs)
            candidates = ops.reshape(live_scores[..., None] + log_probs,
                                     (batch, k * vocab))  # (B, K*V)
            n_candidates = k * (1 + n_stop)
            if isinstance(vocab, int):
                n_candidates = min(n_candidates, k * vocab)
            scores, flat = ops.top_k(candidates, n_candidates)  # (B, C)
            flat = ops.cast(flat, "int32")
            source = rows + flat // vocab  # (B, C) rows of the live buffers
            token = ops.where(forced[:, None], prompt_token[:, None], flat % vocab)
            if stop is None:
                ends = ops.zeros_like(token, dtype="bool")
            else:
                ends = ops.logical_and(is_any_of(token, stop),
                                       ops.logical_not(forced)[:, None])  # (B, C)
            new_length = length + ops.cast(ops.logical_not(forced), "int32")  # (B,)

            def extend(picked_source, picked_token):
                """Buffers `(B, n, T)` of the live rows `(B, n)` with the tokens appended."""
                n = ops.shape(picked_source)[1]
                out = ops.take(live_tokens, ops.reshape(picked_source, (-1,)), axis=0)
                column = ops.cast(ops.reshape(picked_token, (-1, 1)), out.dtype)
                out = ops.slice_update(out, [0, index], column)
                return ops.reshape(out, (batch, n, length_t))

            # Finished candidates join the pool of results.
            if stop is not None:
                finished = ops.where(ends, scores / self.length_norm(new_length)[:, None],
                                     -_INF)  # (B, C)
                merged_scores = ops.concatenate([pool_scores, finished], axis=1)
                merged_tokens = ops.concatenate(
                    [pool_tokens, extend(source, token)], axis=1)  # (B, K+C, T)
                pool_scores, best = ops.top_k(merged_scores, k)  # (B, K)
                pool_tokens = ops.take_along_axis(merged_tokens, best[..., None], axis=1)
            # The other candidates compete for the live beams.
            live_scores, best = ops.top_k(ops.where(ends, -_INF, scores), k)  # (B, K)
            live_source = ops.take_along_axis(source, best, axis=1)  # (B, K)
            live_token = ops.take_along_axis(token, best, axis=1)
            live_tokens = ops.reshape(extend(live_source, live_token), (-1, length_t))
            order = ops.reshape(live_source, (-1,))
            cache = tree.map_structure(lambda c: ops.take(c, order, axis=0), cache)
            return (live_tokens, cache, index + 1, live_scores, pool_tokens, pool_scores,
                    new_length)

        loop_vars = (live_tokens, cache, index, live_scores, pool_tokens, pool_scores,
                     length)
        max_length = ops.cast(length_t, "int32")
        outputs = self.run_loop(cond, body, loop_vars=loop_vars,
                                maximum_iterations=max_length - index, model=model)
        live_tokens, _, index, live_scores, pool_tokens, pool_scores, length = outputs
        # Beams still live at the end of the buffer are results too; a search that
        # stopped early has none that could enter the pool.
        at_end = ops.greater_equal(index, max_length)
        ended = ops.where(at_end, live_scores / self.length_norm(length)[:, None], -_INF)
        merged_scores = ops.concatenate([pool_scores, ended], axis=1)  # (B, 2K)
        merged_tokens = ops.concatenate(
            [pool_tokens, ops.reshape(live_tokens, (batch, k, length_t))], axis=1)
        scores, best = ops.top_k(merged_scores, k)
        tokens = ops.take_along_axis(merged_tokens, best[..., None], axis=1)
        return tokens, scores

    def get_config(self):
        return {
            **super().get_config(),
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "length_offset": self.length_offset,
            "return_all_beams": self.return_all_beams,
        }
