"""The base of the samplers: keras-hub's sampler protocol, one token per row per step.

Shape legend: B batch, T buffer length (prompt plus generated tokens), V vocabulary.
"""

import numbers

import keras
import keras_hub
from keras import ops

from keras_attention.samplers.processors import (
    LogitsProcessor,
    check_token_ids,
    is_any_of,
)

_PACKAGE = "keras_attention"


def check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"`temperature` must be a positive float. Received: temperature={temperature!r}"
        )
    if not temperature > 0:
        raise ValueError(
            f"`temperature` must be a positive float. Received: temperature={temperature}"
        )
    return float(temperature)


def check_processors(processors):
    processors = () if processors is None else tuple(processors)
    for p in processors:
        if not isinstance(p, LogitsProcessor):
            raise TypeError(
                "`logits_processors` must be a list of "
                "`keras_attention.samplers.LogitsProcessor` instances. "
                f"Received: logits_processors={list(processors)!r}"
            )
    return processors


def check_prompt(prompt):
    rank = len(ops.shape(prompt))
    if rank != 2:
        raise ValueError(
            "`prompt` must have rank 2 (batch, length). "
            f"Received: shape={tuple(ops.shape(prompt))}"
        )


def prepare_call(prompt, cache, index, mask, stop_token_ids):
    """The call arguments as the sampling loops use them."""
    check_prompt(prompt)
    stop = check_token_ids("stop_token_ids", stop_token_ids, allow_none=True)
    index = ops.cast(index, "int32")
    mask = ops.zeros_like(prompt, dtype="bool") if mask is None else ops.cast(mask, "bool")
    cache = () if cache is None else cache
    return prompt, cache, index, mask, stop


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Sampler(keras_hub.samplers.Sampler):
    """Base class of the samplers: keras-hub's call protocol plus logits processors.

    A sampler fills `prompt` from position `index` on, one token per step, with
    `next(prompt, cache, index) -> (logits (B, V), hidden_states, cache)` giving
    the logits of the token at `index`. Positions where `mask` is True hold the
    prompt and are kept. A row is finished once it generates one of
    `stop_token_ids`; its later positions are left as they were (the padding of
    the prompt buffer), and the loop ends once every row is finished, or at the
    end of the buffer.

    Subclasses implement `next_token_log_probs` (the distribution to draw from)
    and `choose` (one token per row).

    Args:
        temperature: float > 0; logits are divided by it before the softmax.
        logits_processors: list of `LogitsProcessor`, applied in order to the
            logits of every step (before the temperature).

    Call arguments (keras-hub's):
        next: the step function above.
        prompt: `(B, T)` int token buffer.
        cache: optional structure of tensors with the batch on axis 0.
        index: int, the first position to fill.
        mask: optional `(B, T)` bool, True on the prompt tokens.
        stop_token_ids: optional list of ints.
        hidden_states, model: as in keras-hub (`model` gives the variables
            that the JAX loop threads through).

    Returns:
        `(B, T)` tokens. `sample_with_scores` returns `(tokens, scores)` instead.
    """

    def __init__(self, temperature=1.0, logits_processors=None):
        super().__init__(temperature=check_temperature(temperature))
        self.logits_processors = check_processors(logits_processors)

    def __call__(self, next, prompt, cache=None, index=0, mask=None, stop_token_ids=None,
                 hidden_states=None, model=None, **kwargs):
        tokens, _ = self.sample_with_scores(
            next, prompt, cache=cache, index=index, mask=mask,
            stop_token_ids=stop_token_ids, model=model)
        return tokens

    def sample_with_scores(self, next, prompt, cache=None, index=0, mask=None,
                           stop_token_ids=None, model=None):
        """As a call, but returns `(tokens (B, T), scores (B,))`.

        A row's score is the sum of the log-probabilities of its generated tokens
        (the stop token included) under the distribution each was drawn from:
        after the processors, the temperature and any top-k/top-p cut.
        """
        prompt, cache, index, mask, stop = prepare_call(
            prompt, cache, index, mask, stop_token_ids)
        rows = ops.shape(prompt)[0]
        done = ops.zeros((rows,), dtype="bool")
        length = ops.zeros((rows,), dtype="int32")
        scores = ops.zeros((rows,), dtype="float32")

        def cond(prompt, cache, index, mask, done, length, scores):
            if stop is None:
                return ops.convert_to_tensor(True)
            return ops.logical_not(ops.all(done))

        def body(prompt, cache, index, mask, done, length, scores):
            logits, _, cache = next(prompt, cache, index)
            log_probs = self.next_token_log_probs(
                self.process_logits(logits, prompt, index, length, stop))  # (B, V)
            token = ops.cast(self.choose(log_probs), "int32")  # (B,)
            token_log_prob = ops.take_along_axis(log_probs, token[:, None], axis=1)[:, 0]
            kept = ops.logical_or(ops.take(mask, index, axis=1), done)  # (B,)
            generated = ops.logical_not(kept)
            column = ops.where(kept, ops.take(prompt, index, axis=1),
                               ops.cast(token, prompt.dtype))
            prompt = ops.slice_update(prompt, [0, index], column[:, None])
            scores = scores + ops.where(generated, token_log_prob, 0.0)
            length = length + ops.cast(generated, "int32")
            if stop is not None:
                done = ops.logical_or(done, ops.logical_and(generated, is_any_of(token, stop)))
            return prompt, cache, index + 1, mask, done, length, scores

        max_length = ops.cast(ops.shape(prompt)[1], "int32")
        prompt, _, _, _, _, _, scores = self.run_loop(
            cond, body, loop_vars=(prompt, cache, index, mask, done, length, scores),
            maximum_iterations=max_length - index, model=model)
        return prompt, scores

    def process_logits(self, logits, tokens, index, length, stop_token_ids):
        """float32 logits after every processor."""
        logits = ops.cast(logits, "float32")
        for processor in self.logits_processors:
            logits = processor(logits, tokens, index, length, stop_token_ids)
        return logits

    def log_softmax(self, logits):
        """Log-probabilities at this sampler's temperature."""
        return ops.log_softmax(logits / self.temperature, axis=-1)

    def next_token_log_probs(self, logits):
        """`(B, V)` processed logits -> `(B, V)` log-probabilities to draw from."""
        return self.log_softmax(logits)

    def choose(self, log_probs):
        """`(B, V)` log-probabilities -> `(B,)` int32 token ids."""
        raise NotImplementedError

    def get_next_token(self, probabilities):
        """keras-hub's hook: `(B, V)` probabilities -> `(B,)` ids."""
        return self.choose(ops.log(probabilities))

    def get_config(self):
        return {
            "temperature": self.temperature,
            "logits_processors": [keras.saving.serialize_keras_object(p)
                                  for p in self.logits_processors],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["logits_processors"] = [
            keras.saving.deserialize_keras_object(p)
            for p in config.get("logits_processors") or ()]
        return cls(**config)
