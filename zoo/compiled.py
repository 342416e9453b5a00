"""Compiled inference functions that call Keras layers, on any backend."""

import keras


def compile_inference(fn, variables):
    """A compiled `fn(*args, **kwargs)` that sees the current values of `variables`.

    On TensorFlow `fn` is traced with `tf.function` (variables are read inside
    the graph). On JAX it is compiled with `jax.jit` in stateless form: the
    variables' values are passed in at every call through a
    `keras.StatelessScope`, so weights that change between calls (training in
    between, loading new weights) are used, not baked in as constants. Other
    backends run `fn` as it is.

    Arguments that are not arrays (None, Python numbers) may be passed; a Python
    object that is not an array must be closed over by `fn` instead.

    Args:
        fn: the function; it may call layers whose weights are in `variables`.
        variables: the Keras variables `fn` reads, e.g. `model.variables`.

    Returns:
        A callable with the signature of `fn`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if backend != "jax":
        return fn
    import jax

    variables = list(variables)

    def stateless(values, *args, **kwargs):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args, **kwargs)

    jitted = jax.jit(stateless)

    def call(*args, **kwargs):
        return jitted([variable.value for variable in variables], *args, **kwargs)

    return call
