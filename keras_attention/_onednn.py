"""Keep TensorFlow's oneDNN CPU kernels on wherever they have been seen to be safe.

TensorFlow 2.21's oneDNN kernels corrupted the heap during training on an Intel
CPU with AVX-512 and AMX (glibc "corrupted double-linked list" aborts in about one
quickstart run in four with XLA off, and 13 of 13 runs of the upstream reproducer
`tf.matmul` of a `(13, 1, 3, 4)` and a `(4, 16)` tensor, tensorflow/tensorflow#117700).
On an AVX2-only CPU the same runs never failed (60 of 60 quickstart runs and 13 of
13 reproducer runs finished; `docs/reliability.md` gives the commands). oneDNN picks
its kernels by instruction set, so the guard turns oneDNN off only on CPUs that
report AVX-512 (AMX CPUs all do), and only when the user has not chosen:
`TF_ENABLE_ONEDNN_OPTS` set to anything is left alone.

TensorFlow reads the variable when it is first imported, so the guard must run
before that: `import keras_attention` runs it first thing, and so do the recipes
and the command line. If TensorFlow was imported earlier on such a CPU, the guard
can only warn.

This module imports neither Keras nor TensorFlow.
"""

import os
import sys
import warnings

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# CPU flags (as /proc/cpuinfo spells them) of the instruction sets whose oneDNN
# kernels corrupted the heap.
AFFECTED_FLAGS = frozenset({"avx512f", "amx_tile", "amx_bf16", "amx_int8"})


def cpu_flags(path="/proc/cpuinfo"):
    """The flags of the first CPU in `path`, or an empty set where it cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def needs_guard(flags):
    """True when oneDNN would use the kernels that corrupted the heap."""
    return bool(AFFECTED_FLAGS & set(flags))


def guard(environ=None, flags=None, modules=None):
    """Set `TF_ENABLE_ONEDNN_OPTS=0` on affected CPUs unless the user chose a value.

    Returns the value now in force for this process ("0", the user's value) or None
    when oneDNN keeps TensorFlow's default (on). Warns once when TensorFlow was
    imported before the guard on an affected CPU and the user did not choose.
    """
    environ = os.environ if environ is None else environ
    if VARIABLE in environ:
        return environ[VARIABLE]
    flags = cpu_flags() if flags is None else flags
    if not needs_guard(flags):
        return None
    modules = sys.modules if modules is None else modules
    if "tensorflow" in modules:
        warnings.warn(
            "TensorFlow was imported before keras_attention on a CPU with AVX-512, "
            "where TensorFlow's oneDNN kernels can corrupt the heap during training; "
            f"set {VARIABLE}=0 before TensorFlow is imported (or import keras_attention "
            "first). See docs/reliability.md.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    environ[VARIABLE] = "0"
    return "0"
