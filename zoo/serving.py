"""Runs an exported SavedModel the way a TensorFlow-only server would.

`run_saved_model` loads a SavedModel in a fresh Python process in which
`keras`, `keras_attention`, `zoo`, `recipes`, `keras_hub` and `tf_keras` cannot
be imported, calls one of its signatures, and returns the outputs as Python
lists. It is the check every zoo export test uses: an export that needs any of
these packages at load or call time fails it.

How the packages are blocked: the child process puts `None` in `sys.modules`
under each blocked name before importing TensorFlow. An import of such a name
then raises `ModuleNotFoundError`, and `importlib.util.find_spec(name)` returns
`None`. TensorFlow only probes for Keras with `find_spec` when it is imported
(to set up the lazy `tf.keras`), so it imports normally. A meta-path finder
that raises would not do: it breaks that probe and TensorFlow fails to import.
After the call the child checks that every blocked name still maps to `None`
and that no submodule of one is loaded.

Example:

```python
from zoo.serving import run_saved_model

outputs = run_saved_model(
    "/tmp/translator_export",
    {"text": ["The cat sleeps."]},
)
outputs["translation"]                 # a list of str
```
"""

import json
import os
import pathlib
import subprocess
import sys

BLOCKED_MODULES = ("keras", "keras_attention", "zoo", "recipes", "keras_hub", "tf_keras")

_STDERR_TAIL = 4000

# The program of the child process. It reads the request as JSON on stdin and
# writes {"outputs": ...} as JSON on the original stdout; everything else,
# including anything printed by TensorFlow, goes to stderr.
_CHILD_PROGRAM = r"""
import json, os, sys

BLOCKED = json.loads(sys.argv[1])
loaded_early = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
if loaded_early:
    sys.exit(f"error: already imported at start-up: {loaded_early}")
for name in BLOCKED:
    sys.modules[name] = None

result_stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)

request = json.load(sys.stdin)

import tensorflow as tf


def to_python(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


loaded = tf.saved_model.load(request["path"])
signatures = loaded.signatures
name = request["signature"]
if name not in signatures:
    sys.exit(
        f"error: the SavedModel has no signature {name!r}. "
        f"Available: {sorted(signatures.keys())}"
    )
function = signatures[name]
specs = function.structured_input_signature[1]
given = request["inputs"]
if set(given) != set(specs):
    sys.exit(
        f"error: signature {name!r} takes inputs {sorted(specs)}. "
        f"Received: {sorted(given)}"
    )
tensors = {}
for key, item in given.items():
    dtype = item["dtype"] or specs[key].dtype
    tensors[key] = tf.constant(item["values"], dtype=dtype)
outputs = function(**tensors)
if not isinstance(outputs, dict):
    outputs = {"output_0": outputs}
result = {key: to_python(value.numpy().tolist()) for key, value in outputs.items()}

leaked = sorted(
    m for m in sys.modules
    if m.split(".")[0] in BLOCKED and (m not in BLOCKED or sys.modules[m] is not None)
)
assert not leaked, f"blocked modules were imported: {leaked}"

json.dump({"outputs": result}, result_stream)
result_stream.flush()
"""


def _jsonable(value):
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    raise TypeError(f"cannot be sent to the serving process: {type(value).__name__}")


def _normalise_inputs(inputs):
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        raise TypeError(
            "`inputs` must be a dict from input name (str) to values. "
            f"Received: inputs of type {type(inputs).__name__}"
        )
    request = {}
    for key, item in inputs.items():
        dtype = None
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise ValueError(
                    "A tuple input must be (values, dtype_name), e.g. "
                    f"([[1.0, 2.0]], 'float32'); give plain values as a list. "
                    f"Received: {key}={item!r}"
                )
            item, dtype = item
        request[key] = {"values": item, "dtype": dtype}
    return request


def run_saved_model(path, inputs, signature="serving_default", timeout=600):
    """Runs a SavedModel signature in a fresh TensorFlow-only Python process.

    Args:
        path: the SavedModel folder.
        inputs: dict from signature input name to its values: a (nested) list
            or NumPy array, strings for string inputs; or a tuple
            `(values, dtype_name)` such as `([[1, 2]], "float32")`. Without a
            dtype the dtype of the signature's input is used.
        signature: the signature to call.
        timeout: seconds before the process is stopped.

    Returns:
        Dict from output name to its value as (nested) Python lists; strings
        come back as `str`.

    Raises:
        FileNotFoundError: `path` is not a folder.
        RuntimeError: the process failed (TensorFlow error, unknown signature
            or input names, a blocked package imported, timeout); the message
            ends with the tail of its stderr.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"SavedModel folder not found: {path}")
    request = {
        "path": str(path.resolve()),
        "signature": signature,
        "inputs": _normalise_inputs(inputs),
    }
    payload = json.dumps(request, default=_jsonable)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    command = [sys.executable, "-c", _CHILD_PROGRAM, json.dumps(list(BLOCKED_MODULES))]
    try:
        process = subprocess.run(
            command,
            check=False,
            input=payload,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode("utf-8", "replace") if isinstance(e.stderr, bytes) else e.stderr
        raise RuntimeError(
            f"SavedModel {path}: the serving process did not finish within {timeout} s. "
            f"stderr tail:\n{(stderr or '')[-_STDERR_TAIL:]}"
        ) from None
    stderr_tail = process.stderr[-_STDERR_TAIL:]
    if process.returncode != 0:
        raise RuntimeError(
            f"SavedModel {path}: signature {signature!r} failed in a TensorFlow-only "
            f"process (exit code {process.returncode}). stderr tail:\n{stderr_tail}"
        )
    try:
        return json.loads(process.stdout)["outputs"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(
            f"SavedModel {path}: the serving process gave no result. "
            f"stdout: {process.stdout[-_STDERR_TAIL:]!r}. stderr tail:\n{stderr_tail}"
        ) from None
