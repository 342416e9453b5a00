"""Logits processors: rules applied to the next-token logits before a sampler
chooses, usable by every sampler in `keras_attention.samplers`.

A processor is called once per decoding step as
`processor(logits, tokens, index, length, stop_token_ids)`:

- `logits`: `(R, V)` float32 next-token logits, one row per sequence (R is the
  batch, or batch times beams in beam search).
- `tokens`: `(R, T)` int token buffer; `tokens[:, index - 1]` is each row's
  previous token.
- `index`: scalar int32, the position about to be written.
- `length`: `(R,)` int32, the number of tokens each row has generated so far
  (0 for the first generated token).
- `stop_token_ids`: tuple of Python ints, or None.

It returns `(R, V)` logits; a banned token gets `-inf`. A rule that bans every
token of a row leaves nothing to choose from: the rules must leave one token.
"""

import keras
from keras import ops

from keras_attention.utils.validation import check_positive_int

_PACKAGE = "keras_attention"


def check_token_ids(name, ids, allow_none=False):
    """Return `ids` (a list of non-negative ints) as a tuple, or None when allowed."""
    if ids is None and allow_none:
        return None
    if isinstance(ids, int) and not isinstance(ids, bool):
        ids = (ids,)
    try:
        ids = tuple(ids)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a list of token ids. Received: {name}={ids!r}"
        ) from None
    if not ids:
        raise ValueError(f"`{name}` must not be empty. Received: {name}={ids!r}")
    for i in ids:
        check_positive_int(name, i, allow_zero=True)
    return tuple(int(i) for i in ids)


def is_any_of(x, ids):
    """Elementwise `x in ids` for an int tensor `x` and a tuple of ints `ids`."""
    ids = ops.convert_to_tensor(ids, dtype=x.dtype)
    return ops.any(ops.equal(ops.expand_dims(x, -1), ids), axis=-1)


def previous_tokens(tokens, index):
    """`(R,)` token at `index - 1` (position 0 when `index` is 0)."""
    return ops.take(tokens, ops.maximum(index - 1, 0), axis=1)


def ban(logits, banned):
    """`logits` with `-inf` where the boolean `banned` (broadcast to `(R, V)`) is True."""
    return ops.where(banned, float("-inf"), logits)


def vocabulary(logits):
    """`(1, V)` int32 token ids of the logits' last axis."""
    return ops.arange(ops.shape(logits)[-1], dtype="int32")[None, :]


class LogitsProcessor:
    """Base class: subclasses override `__call__` (and `get_config` when they take
    arguments). See the module docstring for the call arguments."""

    def __call__(self, logits, tokens, index, length, stop_token_ids):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BannedIds(LogitsProcessor):
    """Never generate the tokens `ids` (padding, start or unknown tokens)."""

    def __init__(self, ids):
        self.ids = check_token_ids("ids", ids)

    def __call__(self, logits, tokens, index, length, stop_token_ids):
        return ban(logits, is_any_of(vocabulary(logits), self.ids))

    def get_config(self):
        return {"ids": list(self.ids)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoImmediateRepeat(LogitsProcessor):
    """Never generate the token just before (no "the the"). The rule starts with the
    first generated token, which may not repeat the prompt's last token either."""

    def __call__(self, logits, tokens, index, length, stop_token_ids):
        previous = ops.cast(previous_tokens(tokens, index), "int32")  # (R,)
        repeat = ops.equal(vocabulary(logits), previous[:, None])  # (R, V)
        return ban(logits, ops.logical_and(repeat, index > 0))


class _EndRule(LogitsProcessor):
    """Shared by the rules that decide when the end tokens may be generated."""

    def __init__(self, end_ids=None):
        self.end_ids = check_token_ids("end_ids", end_ids, allow_none=True)

    def _end_mask(self, logits, stop_token_ids):
        """`(1, V)` bool, True on the end tokens, or None when there are none."""
        ids = self.end_ids if self.end_ids is not None else stop_token_ids
        return None if not ids else is_any_of(vocabulary(logits), tuple(ids))

    def get_config(self):
        return {"end_ids": None if self.end_ids is None else list(self.end_ids)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MinLength(_EndRule):
    """The end tokens are banned until `min_length` other tokens have been generated.

    Args:
        min_length: int >= 0.
        end_ids: the end tokens; default the sampler's `stop_token_ids`.
    """

    def __init__(self, min_length, end_ids=None):
        super().__init__(end_ids)
        self.min_length = check_positive_int("min_length", min_length, allow_zero=True)

    def __call__(self, logits, tokens, index, length, stop_token_ids):
        is_end = self._end_mask(logits, stop_token_ids)
        if is_end is None:
            return logits
        short = ops.less(length, self.min_length)[:, None]  # (R, 1)
        return ban(logits, ops.logical_and(short, is_end))

    def get_config(self):
        return {"min_length": self.min_length, **super().get_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AllowedEnds(_EndRule):
    """An end token may only follow the tokens `allowed_previous` (a result never
    stops on "a" or "the").

    Args:
        allowed_previous: token ids after which an end token may follow.
        allowed_single: optional token ids that may form a one-token result: after
            exactly one generated token, an end token also needs that token here.
        end_ids: the end tokens; default the sampler's `stop_token_ids`.
    """

    def __init__(self, allowed_previous, allowed_single=None, end_ids=None):
        super().__init__(end_ids)
        self.allowed_previous = check_token_ids("allowed_previous", allowed_previous)
        self.allowed_single = check_token_ids("allowed_single", allowed_single,
                                              allow_none=True)

    def __call__(self, logits, tokens, index, length, stop_token_ids):
        is_end = self._end_mask(logits, stop_token_ids)
        if is_end is None:
            return logits
        previous = ops.cast(previous_tokens(tokens, index), "int32")  # (R,)
        allowed = is_any_of(previous, self.allowed_previous)
        if self.allowed_single is not None:
            single = is_any_of(previous, self.allowed_single)
            allowed = ops.logical_and(
                allowed, ops.logical_or(ops.not_equal(length, 1), single))
        return ban(logits, ops.logical_and(ops.logical_not(allowed)[:, None], is_end))

    def get_config(self):
        return {
            "allowed_previous": list(self.allowed_previous),
            "allowed_single": None if self.allowed_single is None
            else list(self.allowed_single),
            **super().get_config(),
        }
