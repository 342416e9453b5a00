"""Recording the attention weights of a model's attention layers without rewriting it.

Shape legend: B batch, N heads, T query length, S key length.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_attention.analysis._model_layers import layer_hook, select_layers


class AttentionRecorder:
    """The attention weights recorded by `capture_attention`.

    Attributes:
        records: list of `(path, weights)` in call order, one per call of an
            attention layer; `weights` is a NumPy array `(B, N, T, S)`.
        paths: the paths of the layers being recorded.
    """

    def __init__(self, layers):
        self._paths = {id(layer): path for path, layer in layers}
        self.paths = [path for path, _ in layers]
        self.records = []

    @property
    def weights(self):
        """`{path: [weights of each call]}`, layers in the order of their first call."""
        result = {}
        for path, weights in self.records:
            result.setdefault(path, []).append(weights)
        return result

    def clear(self):
        """Forget the recorded weights (the layers keep recording)."""
        self.records = []

    def record(self, layer, scores):
        """Store the weights of one call of `layer` (called by the layer)."""
        path = self._paths.get(id(layer), layer.name)
        if scores is None:
            raise RuntimeError(f"Layer '{path}' returned no attention weights to record.")
        if keras.backend.is_keras_tensor(scores):
            raise _traced_error(path)
        try:
            weights = np.array(ops.convert_to_numpy(scores))
        except Exception as error:  # a traced tensor: tf.function, jax.jit, ...
            raise _traced_error(path) from error
        self.records.append((path, weights))

    def refusal(self, layer, reason):
        """The error for a layer that cannot record its weights (raised by the layer)."""
        path = self._paths.get(id(layer), layer.name)
        return _refusal(path, reason)

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return f"AttentionRecorder(layers={self.paths}, calls={len(self.records)})"


def _refusal(path, reason):
    return ValueError(
        f"capture_attention cannot record layer '{path}': {reason}. Leave it out with "
        f"`layer_names=`. Received: layer '{path}'"
    )


def _traced_error(path):
    return RuntimeError(
        f"capture_attention records eager calls only, but layer '{path}' was called "
        "inside a traced function (tf.function, jax.jit, a functional model being "
        "built, or Model.predict/fit/evaluate), where its weights are symbolic. Call "
        "the model directly, `model(x)`, inside the `with` block."
    )


@contextlib.contextmanager
def capture_attention(model, layer_names=None):
    """Record the attention weights of every attention layer of `model`.

    Inside the `with` block each attention layer of this package found in `model`
    (searched recursively through submodels and blocks such as
    `TransformerEncoderBlock` and `TransformerDecoderBlock`) computes its attention
    weights on every call and appends them, as a NumPy array `(B, N, T, S)`, to the
    recorder, keyed by the layer's path (`"encoder_block/self_attention"`). The
    layers return what the caller asked for, so the model runs unchanged; outside
    the block nothing is recorded and calls take their usual path.

    Calls must be eager: call the model directly, `model(x)`. Inside a traced
    function (`Model.predict`, `fit`, `evaluate`, `tf.function`, `jax.jit`,
    `jit_compile=True` steps) the weights are symbolic and a `RuntimeError` is
    raised. Layers that never form a full weight matrix (`LinearAttention`,
    `LowRankAttention`, `NystromAttention`, `LSHAttention`,
    `MultiHeadAttention(implementation="chunked")`) cannot be recorded: entering the
    block raises a `ValueError` naming them; leave them out with `layer_names`.
    Recording makes layers that normally skip the weights (fused or block-wise
    paths) compute them densely, so outputs may differ by float rounding and cost
    O(T * S) memory per head.

    Args:
        model: a Keras model or layer.
        layer_names: optional list of layer paths (or unique layer names) to record;
            all attention layers by default.

    Returns:
        A context manager yielding an `AttentionRecorder`.

    Example:

    >>> with capture_attention(model) as recorder:
    ...     model(x)
    >>> maps = [w for _, w in recorder.records]  # first layer first
    >>> rollout = attention_rollout(maps)
    """
    layers = select_layers(model, layer_names)
    if not layers:
        raise ValueError(
            "`model` contains no attention layer of keras_attention to record. "
            f"Received: model={getattr(model, 'name', model)!r}"
        )
    for path, layer in layers:
        reason = layer._attention_scores_unavailable()
        if reason is not None:
            raise _refusal(path, reason)
    recorder = AttentionRecorder(layers)
    with layer_hook([layer for _, layer in layers], "_attention_recorder",
                    [recorder] * len(layers)):
        yield recorder


def with_attention_outputs(model, layer_names=None):
    """A function `f(*args, **kwargs) -> (outputs, {path: weights})` that calls `model`
    eagerly and returns its outputs with the attention weights of that call.

    The weights are NumPy arrays `(B, N, T, S)` keyed by layer path, in call order. A
    layer called several times in one forward pass gets the keys `path`,
    `path[1]`, `path[2]`, ... . See `capture_attention` for which layers can be
    recorded and why calls must be eager.

    Example:

    >>> run = with_attention_outputs(model)
    >>> outputs, maps = run(x)
    >>> maps["encoder_block/self_attention"].shape
    (2, 4, 16, 16)
    """
    select_layers(model, layer_names)  # checks the names now, not at the first call

    def run(*args, **kwargs):
        with capture_attention(model, layer_names) as recorder:
            outputs = model(*args, **kwargs)
        maps, counts = {}, {}
        for path, weights in recorder.records:
            count = counts.get(path, 0)
            maps[path if count == 0 else f"{path}[{count}]"] = weights
            counts[path] = count + 1
        return outputs, maps

    return run
