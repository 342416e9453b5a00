"""Initializer helpers."""

import keras


def clone_initializer(initializer):
    """A fresh initializer with the same config (each weight gets its own)."""
    return keras.initializers.get(keras.initializers.serialize(initializer))
