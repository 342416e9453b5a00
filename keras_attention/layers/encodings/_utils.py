"""Helpers shared by the position encodings (private to this package).

Shape legend: P positions, D encoding depth.
"""

import numbers

import keras
import numpy as np
from keras import ops


def check_positive_number(name, value):
    """Return `value` as a float if it is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    if not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value}")
    return float(value)


def check_position(name, value, allow_negative=True):
    """Validate a position offset: a Python int or a scalar integer tensor.

    Returns the value unchanged. Negative Python ints raise unless
    `allow_negative`; tensors are only checked for rank and dtype, since their
    value may not be known until run time. Symbolic dimensions (JAX shape
    polymorphism while a functional model is built) pass unchecked.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if not allow_negative and value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer. "
                             f"Received: {name}={value}")
        return value
    if value is None or isinstance(value, (bool, numbers.Number, str, bytes, list, tuple)):
        raise TypeError(f"`{name}` must be an integer or a scalar integer tensor. "
                        f"Received: {name}={value!r}")
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return value  # a symbolic dimension
    if len(shape) != 0:
        raise ValueError(f"`{name}` must be a scalar. Received: shape={tuple(shape)}")
    dtype = keras.backend.standardize_dtype(dtype)
    if "int" not in dtype:
        raise TypeError(f"`{name}` must have an integer dtype. Received: dtype={dtype}")
    return value


def static_int(value):
    """The Python int value of `value` when it is known now, else None.

    Python ints and eager tensors have a value; symbolic or traced tensors (inside
    `tf.function`, `jax.jit` or a functional model) do not.
    """
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        return int(ops.convert_to_numpy(value))
    except Exception:  # each backend raises its own error type for traced values
        return None


def positions(length, start, dtype="float32"):
    """Positions `start .. start + length - 1` as a `(P,)` tensor of `dtype`."""
    p = ops.arange(length, dtype="int32") + ops.cast(start, "int32")  # (P,)
    return ops.cast(p, dtype)


def sinusoid(position, depth, base):
    """The Vaswani et al. table for float32 positions `(P,)` -> `(P, D)` float32.

    Column `2i` is `sin(p / base^(2i / D))` and column `2i + 1` the cosine of the
    same angle; an odd `D` ends with a sine column.
    """
    half = (depth + 1) // 2
    inv_freq = base ** (-np.arange(half, dtype="float64") * 2.0 / depth)  # (D/2,)
    inv_freq = ops.convert_to_tensor(inv_freq.astype("float32"))
    angles = ops.cast(position, "float32")[:, None] * inv_freq[None, :]  # (P, D/2)
    table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # (P, D/2, 2)
    table = ops.reshape(table, (-1, 2 * half))  # (P, 2 * ceil(D/2))
    return table[:, :depth]  # (P, D)


def check_length(name, value):
    """Validate a sequence length: a positive Python int or a scalar tensor."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    return check_position(name, value)


def relative_positions(query_length, key_length, query_start):
    """Key position minus query position, `(T, S)` int32.

    Queries sit at `query_start + arange(T)` and keys at `arange(S)`; a None
    `query_start` aligns the last query with the last key (`S - T`).
    """
    if query_start is None:
        query_start = key_length - query_length  # bottom-right alignment
    q = positions(query_length, query_start, "int32")  # (T,)
    k = ops.arange(key_length, dtype="int32")  # (S,)
    return k[None, :] - q[:, None]  # (T, S)
