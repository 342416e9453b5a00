"""Shared check of the blocks' `remat` option: one optimizer step of a model built
with `remat=True` equals the same step without it."""

import keras
import numpy as np

from keras_attention.testing import assert_all_close


def _weights(build, remat, step=None, jit_compile=False):
    """Weights of `build(remat)` (the seed is reset first, so both values of
    `remat` start from the same weights), after one SGD step on `step=(x, y)`."""
    keras.utils.set_random_seed(7)
    model = build(remat)
    if step is not None:
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse",
                      jit_compile=jit_compile)
        model.train_on_batch(*step)
    return {w.path: np.asarray(w) for w in model.weights}


def assert_remat_step_matches(build, inputs, target, jit_compile):
    """Every weight moves in the step, and by the same amount with remat (dropout
    included: the recomputation draws the same masks). (A key
    bias is the exception: it adds the same logit to a whole softmax row, so its
    gradient is zero.)"""
    initial = _weights(build, False)
    plain = _weights(build, False, (inputs, target), jit_compile)
    remat = _weights(build, True, (inputs, target), jit_compile)
    assert list(initial) == list(plain) == list(remat)
    for path, before in initial.items():
        if not path.endswith("/key/bias"):
            assert not np.allclose(plain[path], before), f"{path} got no gradient"
        assert_all_close(remat[path], plain[path], atol=1e-5, rtol=1e-5)
