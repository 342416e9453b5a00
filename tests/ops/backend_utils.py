"""Backend-specific helpers for the op tests: gradients, XLA compilation, graph sizes."""

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def output_and_grads(fn, args, cotangent):
    """`fn(*args)` and the gradients of `sum(fn(*args) * cotangent)` w.r.t. `args`."""
    if BACKEND == "jax":
        import jax

        out, vjp = jax.vjp(fn, *args)
        return to_numpy(out), [to_numpy(g) for g in vjp(ops.cast(cotangent, out.dtype))]
    import tensorflow as tf

    args = [tf.convert_to_tensor(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = fn(*args)
        loss = tf.reduce_sum(out * tf.cast(cotangent, out.dtype))
    return to_numpy(out), [to_numpy(g) for g in tape.gradient(loss, args)]


def jit(fn):
    """`fn` compiled with XLA: `jax.jit` or `tf.function(jit_compile=True)`."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


def jit_output_and_grads(fn, args, cotangent):
    """`output_and_grads` with the forward and backward passes under XLA."""
    if BACKEND == "jax":
        import jax

        def both(*a):
            out, vjp = jax.vjp(fn, *a)
            return out, vjp(cotangent)

        out, grads = jax.jit(both)(*args)
        return to_numpy(out), [to_numpy(g) for g in grads]
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def both(*a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = fn(*a)
            loss = tf.reduce_sum(out * tf.cast(cotangent, out.dtype))
        return out, tape.gradient(loss, a)

    out, grads = both(*[tf.convert_to_tensor(a) for a in args])
    return to_numpy(out), [to_numpy(g) for g in grads]


def quick(fn):
    """`fn`, compiled on JAX only (eager JAX compiles each primitive, slowly)."""
    return jit(fn) if BACKEND == "jax" else fn


def quick_output_and_grads(fn, args, cotangent):
    """`output_and_grads`, compiled on JAX (eager JAX compiles each primitive, slowly)."""
    if BACKEND == "jax":
        return jit_output_and_grads(fn, args, cotangent)
    return output_and_grads(fn, args, cotangent)


def largest_intermediate(fn, args, cotangent):
    """JAX only: the most elements of any array in the traced forward + backward pass.

    Walks every equation of the jaxpr, including the bodies of loops, maps and
    custom-gradient rules, so a `(T, S)` intermediate anywhere would show up.
    """
    import jax

    def both(*a):
        out, vjp = jax.vjp(fn, *a)
        return out, vjp(cotangent)

    largest = 0

    def visit(jaxpr):
        nonlocal largest
        for eqn in jaxpr.eqns:
            for var in list(eqn.outvars) + [v for v in eqn.invars if hasattr(v, "aval")]:
                shape = getattr(var.aval, "shape", ())
                largest = max(largest, int(np.prod(shape)) if shape else 1)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        visit(inner if hasattr(inner, "eqns") else inner.jaxpr)
                    elif hasattr(sub, "eqns"):
                        visit(sub)

    visit(jax.make_jaxpr(both)(*args).jaxpr)
    return largest
