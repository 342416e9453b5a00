"""One table of every attention layer: a small valid config and what it supports.

`SPECS` has one entry per public layer class of `keras_attention.layers.attention`
(`discover_layers` finds them, and a test fails when a class has no entry, so a new
layer cannot be skipped silently). `VARIANTS` adds more configs of the same classes
(other heads layouts, patterns, modes and implementations).

Shape legend: B batch, T query length, S key length, F features.
"""

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable

import keras
import numpy as np

import keras_attention.layers
import keras_attention.layers.attention as attention_package
from keras_attention import masks

QUERY_FEATURES = 8
CONTEXT_FEATURES = 6  # cross-attention context width (differs from the query's)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How to build and call one attention layer configuration.

    Attributes:
        name: the class name in `keras_attention.layers`.
        config: constructor arguments (small and valid).
        variant: a label for extra configurations of the same class.
        kind: `"attention"` (the `layer(query, value, ...)` convention),
            `"pooling"` (`layer(inputs, mask=(B, T))`) or `"hierarchical"`
            (`layer(inputs (B, S, W, F), mask=(B, S, W))`).
        cross: takes a context of another length and width than the query.
        causal: `"exact"` (future positions never change earlier rows),
            `"loose"` (accepted, not strictly causal) or None (raises).
        attention_mask: accepts a `(B, T, S)` attention mask.
        pattern: `pattern(layer, T, S, causal) -> (T, S)` boolean NumPy array when
            the layer equals a dense `MultiHeadAttention` (implementation="full",
            the layer's own first weights) under that mask, else None.
        fixed_weights: weight names kept at their initial values when the
            property tests draw random weights (the dense equivalence needs them).
        max_length: the longest sequence the config accepts.
    """

    name: str
    config: dict
    variant: str = ""
    kind: str = "attention"
    cross: bool = True
    causal: str | None = "exact"
    attention_mask: bool = True
    pattern: Callable | None = None
    fixed_weights: tuple = ()
    max_length: int = 9

    @property
    def id(self):
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    @property
    def cls(self):
        return getattr(keras_attention.layers, self.name)

    def make(self, **kwargs):
        return self.cls(**{**self.config, **kwargs})



# ---------------------------------------------------------------------- patterns
def _full(layer, t, s, causal):
    return np.ones((t, s), bool)


def _local(layer, t, s, causal):
    causal = causal or layer.causal
    return _np(masks.sliding_window_mask(t, layer.window_size, s, causal=causal))


def _global_local(layer, t, s, causal):
    count = layer.num_global_tokens
    band = _np(masks.sliding_window_mask(t, layer.window_size, s, causal=causal))
    pattern = band | (np.arange(t) < count)[:, None] | (np.arange(s) < count)[None, :]
    if causal:
        pattern &= _np(masks.causal_mask(t, s))
    return pattern


def _sparse(layer, t, s, causal):
    causal = causal or layer.causal
    if layer.pattern == "strided":
        return _np(masks.strided_sparse_mask(t, layer.block_size, causal))
    return _np(masks.fixed_sparse_mask(t, layer.block_size, layer.num_summary, causal))


def _block_sparse(layer, t, s, causal):
    return _np(masks.block_sparse_mask(t, layer.block_size, layer.num_window_blocks,
                                       layer.num_global_blocks, layer.num_random_blocks,
                                       layer.seed, causal))


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), bool)


# ---------------------------------------------------------------------- the table
_HEADS = {"num_heads": 2, "key_dim": 4}

SPECS = {
    spec.name: spec
    for spec in [
        LayerSpec("MultiHeadAttention",
                  {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2},
                  pattern=_full),
        LayerSpec("AdditiveAttention", {"units": 8}),
        LayerSpec("LuongAttention", {"score": "general"}),
        LayerSpec("MonotonicAttention", {"units": 8, "score_bias_init": -1.0}),
        LayerSpec("GlobalLocalAttention",
                  {**_HEADS, "window_size": 1, "num_global_tokens": 1},
                  pattern=_global_local),
        LayerSpec("LinearAttention", _HEADS, attention_mask=False),
        LayerSpec("LocalAttention",
                  {**_HEADS, "window_size": 2, "num_key_value_heads": 1},
                  pattern=_local),
        LayerSpec("BlockSparseAttention",
                  {**_HEADS, "block_size": 2, "num_window_blocks": 3,
                   "num_global_blocks": 1, "num_random_blocks": 1, "seed": 3},
                  cross=False, pattern=_block_sparse),
        LayerSpec("SparseAttention", {**_HEADS, "block_size": 2}, cross=False,
                  pattern=_sparse),
        LayerSpec("AdaptiveSpanAttention", {**_HEADS, "max_span": 4, "ramp_size": 2}),
        LayerSpec("LowRankAttention",
                  {**_HEADS, "projected_length": 3, "max_length": 16},
                  causal=None, attention_mask=False),
        LayerSpec("LSHAttention",
                  {**_HEADS, "bucket_size": 4, "num_buckets": 4, "seed": 1},
                  cross=False, causal="loose"),
        LayerSpec("NystromAttention", {**_HEADS, "num_landmarks": 2}, causal=None,
                  attention_mask=False),
        LayerSpec("AttentionPooling", {"num_heads": 2, "num_queries": 2},
                  kind="pooling", cross=False, causal=None, attention_mask=False),
        LayerSpec("CrossModalAttention", _HEADS),
        LayerSpec("HierarchicalAttention", {"units": 8}, kind="hierarchical",
                  cross=False, causal=None, attention_mask=False),
        LayerSpec("TalkingHeadsAttention", _HEADS),
    ]
}

VARIANTS = [
    LayerSpec("MultiHeadAttention",
              {"num_heads": 3, "key_dim": 2, "num_key_value_heads": 1, "value_dim": 3,
               "output_dim": 5},
              variant="mqa", pattern=_full),
    LayerSpec("MultiHeadAttention",
              {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2,
               "implementation": "chunked", "query_chunk_size": 3, "key_chunk_size": 2},
              variant="chunked", pattern=_full),
    LayerSpec("LuongAttention",
              {"score": "concat", "mode": "local-p", "window": 2, "units": 8},
              variant="local-p"),
    LayerSpec("MonotonicAttention", {"score": "luong", "mode": "parallel"},
              variant="parallel"),
    LayerSpec("LinearAttention",
              {**_HEADS, "feature_map": "favor+", "num_random_features": 8, "seed": 3,
               "num_key_value_heads": 1, "chunk_size": 3},
              variant="favor+", attention_mask=False),
    LayerSpec("LocalAttention", {**_HEADS, "window_size": 1, "causal": True,
                                 "block_size": 3},
              variant="causal", pattern=_local),
    LayerSpec("SparseAttention",
              {**_HEADS, "pattern": "fixed", "block_size": 3, "num_summary": 2,
               "causal": False},
              variant="fixed", cross=False, pattern=_sparse),
    LayerSpec("AdaptiveSpanAttention",
              {**_HEADS, "max_span": 32, "ramp_size": 2, "span_init": 1.0},
              variant="full-span", pattern=_full, fixed_weights=("span_fraction",)),
    LayerSpec("TalkingHeadsAttention", _HEADS, variant="identity-mixing", pattern=_full,
              fixed_weights=("pre_softmax_kernel", "post_softmax_kernel")),
]

ALL_SPECS = list(SPECS.values()) + VARIANTS


def spec_ids(specs):
    return [spec.id for spec in specs]


def discover_layers():
    """Public concrete layer classes defined in `keras_attention.layers.attention`."""
    from keras_attention.layers.attention.base_attention import BaseAttention
    from keras_attention.layers.attention.projected_attention import ProjectedAttention

    shared_bases = (BaseAttention, ProjectedAttention)  # not layers one uses directly

    found = {}
    for info in pkgutil.iter_modules(attention_package.__path__):
        module = importlib.import_module(f"{attention_package.__name__}.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if (obj.__module__ == module.__name__ and not name.startswith("_")
                    and issubclass(obj, keras.layers.Layer) and obj not in shared_bases):
                found[name] = obj
    return found


# ---------------------------------------------------------------------- calling
def call_layer(spec, layer, query, value=None, query_mask=None, value_mask=None,
               attention_mask=None, causal=False, **kwargs):
    """Call `layer` following its kind; returns the first output."""
    if spec.kind == "attention":
        out = layer(query, query if value is None else value, query_mask=query_mask,
                    value_mask=value_mask, attention_mask=attention_mask,
                    use_causal_mask=causal, **kwargs)
    else:
        out = layer(query, mask=query_mask, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def randomize_weights(spec, layer, seed):
    """Draw every weight (biases included) from N(0, 0.5^2), except `fixed_weights`."""
    rng = np.random.default_rng(seed)
    values = []
    for w in layer.weights:
        if any(name in w.path for name in spec.fixed_weights):
            values.append(keras.ops.convert_to_numpy(keras.ops.cast(w, "float32")))
        else:
            values.append((rng.normal(size=w.shape) * 0.5).astype("float32"))
    layer.set_weights(values)


def dense_equivalent(spec, layer, query, value):
    """A built `MultiHeadAttention(implementation="full")` holding the layer's
    query/key/value/output projection weights."""
    config = layer.get_config()
    keys = ("num_heads", "key_dim", "value_dim", "num_key_value_heads", "use_bias",
            "output_shape", "output_dim")
    mha = keras_attention.layers.MultiHeadAttention(
        **{k: config[k] for k in keys if k in config}, implementation="full"
    )
    mha(query, value)  # builds
    own = {_local_path(w): w for w in layer.weights}
    mha.set_weights([keras.ops.convert_to_numpy(own[_local_path(w)]) for w in mha.weights])
    return mha


def _local_path(weight):
    """`query/kernel` from `<layer name>/query/kernel`."""
    return weight.path.split("/", 1)[1]
