"""Argument and shape checks shared by ops and layers.

Every check raises `ValueError` (or `TypeError`) naming the argument and showing
what was received, so users never see a backend-internal error.
"""

import inspect
import numbers

import keras
import numpy as np


def check_positive_int(name, value, allow_none=False, allow_zero=False):
    """Return `value` if it is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer. Received: {name}={value!r}")
    low = 0 if allow_zero else 1
    if value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a {kind} integer. Received: {name}={value}")
    return int(value)


def check_bool(name, value):
    """Return `value` if it is a Python bool."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def check_rate(name, value):
    """Return `value` if it is a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")
    return float(value)


def check_choice(name, value, choices):
    """Return `value` if it is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {sorted(choices)}. Received: {name}={value!r}"
        )
    return value


def check_rank(name, shape, rank, layout=None):
    """Raise if `shape` does not have `rank` dimensions."""
    if shape is None or len(shape) != rank:
        what = f" {layout}" if layout else ""
        got = None if shape is None else tuple(shape)
        raise ValueError(f"`{name}` must have rank {rank}{what}. Received: shape={got}")


def check_dim(name, shape, axis, expected, what):
    """Raise if the static size of `shape[axis]` is known and differs from `expected`."""
    size = shape[axis]
    if size is not None and expected is not None and size != expected:
        raise ValueError(
            f"`{name}` must have {what} {expected} (axis {axis}). "
            f"Received: shape={tuple(shape)}"
        )


def check_floating(name, x):
    """Raise `TypeError` unless `x` has a floating-point dtype."""
    dtype = getattr(x, "dtype", None)
    dtype = keras.backend.standardize_dtype(dtype) if dtype is not None else None
    if dtype is None or "float" not in dtype:
        raise TypeError(
            f"`{name}` must be a floating-point tensor. Received: dtype={dtype or type(x)}"
        )


def _is_text(x):
    dtype = getattr(x, "dtype", None)
    return isinstance(dtype, np.dtype) and dtype.kind in "USO"


def check_not_text(name, x):
    """Raise `TypeError` when `x` is an array of strings, bytes or Python objects.

    Backends fail on such arrays while converting them, with errors that do not
    say which argument was wrong (JAX), so they are refused before conversion.
    """
    if _is_text(x):
        raise TypeError(f"`{name}` must be a floating-point tensor. Received: dtype={x.dtype}")


def check_call_inputs(call, args, kwargs):
    """`check_not_text` on the arguments of a layer call, named by `call`'s signature.

    Runs on every call, so the signature is read only when an argument fails.
    """
    for i, x in enumerate(args):
        if _is_text(x):
            names = list(inspect.signature(call).parameters)
            check_not_text(names[i] if i < len(names) else f"argument {i}", x)
    for name, x in kwargs.items():
        check_not_text(name, x)
