"""keras-attention: a Keras 3 layer for every attention type and positional encoding."""

import importlib

from keras_attention import _onednn

_onednn.guard()  # before anything imports TensorFlow; see keras_attention/_onednn.py

from keras_attention import analysis, layers, masks, ops  # noqa: E402

__version__ = "0.1.0"

# Imported on first use: `samplers` imports keras-hub, which most users of the
# layers never need.
_LAZY_MODULES = ("samplers",)


def __getattr__(name):
    if name in _LAZY_MODULES:
        module = importlib.import_module(f"keras_attention.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_attention' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES))
