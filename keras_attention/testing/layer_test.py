"""The shared layer test helper: one call runs the checks every layer must pass.

`run_layer_test` covers config round-trip, symbolic and eager calls, XLA parity,
`.keras` save/load, mixed precision and a training step with finite gradients.
`run_attention_layer_test` adds the checks of the MultiHeadAttention call
convention: padding, causal and fully masked rows, implicit Keras masks, attention
weights and the error paths shared by every attention layer.
"""

import os
import tempfile

import keras
import numpy as np
from keras import ops

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def _to_numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def _flatten(outputs):
    return [o for o in keras.tree.flatten(outputs) if o is not None]


def assert_all_close(actual, expected, atol=1e-5, rtol=1e-5, msg=""):
    """Compare two (nested) outputs as float32 numpy arrays."""
    actual, expected = _flatten(actual), _flatten(expected)
    assert len(actual) == len(expected), f"{msg}: {len(actual)} vs {len(expected)} outputs"
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(_to_numpy(a), _to_numpy(e), atol=atol, rtol=rtol,
                                   err_msg=msg)


def assert_finite(outputs, msg=""):
    for o in _flatten(outputs):
        assert np.all(np.isfinite(_to_numpy(o))), f"{msg}: non-finite values"


def _split_kwargs(call_kwargs):
    """Array-valued call kwargs become model inputs; the rest stay Python values."""
    tensors = {k: v for k, v in call_kwargs.items() if isinstance(v, np.ndarray)}
    static = {k: v for k, v in call_kwargs.items() if k not in tensors}
    return tensors, static


def _functional_model(layer, inputs, call_kwargs):
    """Wrap `layer` in a functional model taking every array as a named input."""
    tensors, static = _split_kwargs(call_kwargs)
    arrays = {f"input_{i}": x for i, x in enumerate(inputs)}
    arrays.update(tensors)
    sym = {
        name: keras.Input(shape=x.shape[1:], dtype=str(x.dtype), name=name)
        for name, x in arrays.items()
    }
    positional = [sym[f"input_{i}"] for i in range(len(inputs))]
    kw = {k: sym[k] for k in tensors}
    outputs = layer(*positional, **kw, **static)
    return keras.Model(sym, outputs), arrays


def _first(outputs):
    return _flatten(outputs)[0]


def run_layer_test(
    layer_cls,
    init_kwargs,
    inputs,
    call_kwargs=None,
    *,
    expected_output_shape=None,
    run_training=True,
    run_mixed_precision=True,
    run_jit=True,
    run_save=True,
    atol=1e-5,
    rtol=1e-5,
):
    """Run the checks every layer must pass and return the eager outputs.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        inputs: list of NumPy arrays passed positionally.
        call_kwargs: extra call arguments; NumPy arrays among them become model
            inputs, other values are passed as they are.
        expected_output_shape: shape of the first output, if given.
        run_training: check that a few Adam steps on a regression target lower
            the loss and keep every weight finite (skipped automatically for
            layers without trainable weights).
        run_mixed_precision: check `mixed_float16` and `mixed_bfloat16`.
        run_jit: compare `jit_compile=True` predictions with eager outputs.
        run_save: compare a `.keras` save/load round trip.
    """
    call_kwargs = dict(call_kwargs or {})
    inputs = [np.asarray(x) for x in inputs]

    # Config round trip, through the registered name.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config, "get_config/from_config round trip changed"
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("keras_attention>"), serialized
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls

    # Eager call.
    eager = layer(*inputs, **call_kwargs)
    assert_finite(eager, "eager call")
    if expected_output_shape is not None:
        assert tuple(_first(eager).shape) == tuple(expected_output_shape), (
            f"output shape {tuple(_first(eager).shape)} != {expected_output_shape}"
        )

    # Symbolic call through a functional model sharing the same weights.
    model, arrays = _functional_model(layer, inputs, call_kwargs)
    assert_all_close(model(arrays), eager, atol, rtol, "functional vs eager")

    if run_save:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
        assert_all_close(loaded(arrays), eager, atol, rtol, ".keras save/load")

    if run_jit:
        model.compile(jit_compile=True)
        batch = len(inputs[0])
        jitted = model.predict(arrays, batch_size=batch, verbose=0)
        assert_all_close(jitted, eager, max(atol, 1e-4), max(rtol, 1e-4),
                         "jit_compile=True vs eager")

    if run_mixed_precision:
        for policy in MIXED_POLICIES:
            mp_layer = layer_cls(**{**init_kwargs, "dtype": policy})
            out = mp_layer(*inputs, **call_kwargs)
            assert_finite(out, policy)
            compute = keras.dtype_policies.get(policy).compute_dtype
            got = keras.backend.standardize_dtype(_first(out).dtype)
            assert got == compute, f"{policy}: output dtype {got}"

    if run_training and layer.trainable_weights:
        check_training_step(layer_cls, init_kwargs, inputs, call_kwargs)
    return eager


def check_training_step(layer_cls, init_kwargs, inputs, call_kwargs, steps=8):
    """A few Adam steps on a fixed random target lower the loss; weights stay finite."""
    keras.utils.set_random_seed(0)
    layer = layer_cls(**init_kwargs)
    model, arrays = _functional_model(layer, inputs, call_kwargs)
    first = model.outputs[0]
    head = keras.Model(model.inputs, first)
    target = np.random.default_rng(0).normal(size=(len(inputs[0]),) + tuple(first.shape[1:]))
    # Under TensorFlow, eager steps: tracing a training graph for a tiny model takes
    # several times longer than running it (graph and XLA execution are checked on
    # predictions). Under JAX, eager steps compile every primitive; one jitted step
    # is cheaper.
    head.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                 run_eagerly=keras.backend.backend() == "tensorflow")
    target = target.astype("float32")
    losses = [float(head.train_on_batch(arrays, target)) for _ in range(steps)]
    assert np.all(np.isfinite(losses)), f"non-finite training loss: {losses}"
    assert losses[-1] < losses[0], f"training did not lower the loss: {losses}"
    for w in layer.weights:
        assert np.all(np.isfinite(_to_numpy(w))), f"non-finite weight {w.path}"
