"""Bad input to every op and attention layer gives a clear error.

Wrong ranks, integer and string tensors, mismatched batch sizes and lengths, and
masks of the wrong shape must raise `ValueError` or `TypeError` whose message names
the offending argument and shows what was received, never a backend-internal error
(`InvalidArgumentError`, a NumPy broadcasting error) and never a silent broadcast.

The dtype and batch-size checks of the attention layers are shared, in
`BaseAttention._attention_call` and `BaseAttention._check_input_shapes`.
"""

import re

import numpy as np
import pytest

from keras_attention import ops as attention_ops
from tests.properties.conftest import counted
from tests.properties.layer_specs import CONTEXT_FEATURES, QUERY_FEATURES, SPECS

B, T, S = 2, 5, 4


def assert_clear_error(call, *names):
    """`call()` raises ValueError/TypeError naming one of `names` and what it got."""
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert any(re.search(rf"\b{re.escape(name)}\b", message) for name in names), (
        f"error does not name {names}: {type(info.value).__name__}: {message}"
    )
    assert "Received" in message, f"error does not show what was received: {message}"


# ---------------------------------------------------------------------- ops
def _qkv(b=B, t=T, s=S, n=4, k=2, h=4, v=3):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(b, t, n, h)).astype("float32"),
            rng.normal(size=(b, s, k, h)).astype("float32"),
            rng.normal(size=(b, s, k, v)).astype("float32"))


OP_CALLS = {
    "scaled_dot_product_attention": attention_ops.scaled_dot_product_attention,
    "chunked_attention": attention_ops.chunked_attention,
    "sliding_window_attention": lambda *a, **kw: attention_ops.sliding_window_attention(
        *a, **{"window_size": 1, **kw}),
    "linear_attention": attention_ops.linear_attention,
}
# Ops whose `mask` is any (B, N, T, S)-broadcastable mask; the others take key padding.
FULL_MASK_OPS = {"scaled_dot_product_attention", "chunked_attention"}

q, k, v = _qkv()
OP_CASES = {
    # name: (positional args, keyword args, names the error may cite)
    "query rank 3": ((q[..., 0], k, v), {}, ("query",)),
    "key rank 5": ((q, k[..., None], v), {}, ("key",)),
    "value rank 2": ((q, k, v[:, :, 0, 0]), {}, ("value",)),
    "integer query": ((q.astype("int32"), k, v), {}, ("query",)),
    "string query": ((np.full(q.shape, "a"), k, v), {}, ("query",)),
    "integer key": ((q, k.astype("int64"), v), {}, ("key",)),
    "boolean value": ((q, k, v > 0), {}, ("value",)),
    "batch of key != query": ((q, k[:1], v[:1]), {}, ("key", "query")),
    "batch of value != key": ((q, k, v[:1]), {}, ("value", "key")),
    "length of value != key": ((q, k, v[:, :-1]), {}, ("value", "key")),
    "head_dim of key != query": ((q, k[..., :-1], v), {}, ("key", "query")),
    "heads not a multiple": ((q[:, :, :3], k, v), {}, ("query", "key", "heads")),
    "mask key length": ((q, k, v), {"mask": np.ones((B, 1, 1, S + 1), bool)}, ("mask",)),
    "mask batch": ((q, k, v), {"mask": np.ones((B + 1, 1, 1, S), bool)}, ("mask",)),
    "mask rank 5": ((q, k, v), {"mask": np.ones((B, 1, 1, 1, S), bool)}, ("mask",)),
    "mask (B, S + 1)": ((q, k, v), {"mask": np.ones((B, S + 1), bool)}, ("mask",)),
}
FULL_MASK_CASES = {
    "mask query length": ((q, k, v), {"mask": np.ones((B, 1, T + 1, S), bool)},
                          ("mask",)),
    "bias shape": ((q, k, v), {"bias": np.zeros((1, 4, T, S + 1), "float32")}, ("bias",)),
}
OP_ARGUMENT_CASES = [
    ("scaled_dot_product_attention", "dropout_rate", {"dropout_rate": 1.5}),
    ("chunked_attention", "query_chunk_size", {"query_chunk_size": 0}),
    ("chunked_attention", "key_chunk_size", {"key_chunk_size": -2}),
    ("sliding_window_attention", "window_size", {"window_size": -1}),
    ("sliding_window_attention", "block_size", {"block_size": 0}),
    ("linear_attention", "feature_map", {"feature_map": "softmax"}),
    ("linear_attention", "chunk_size", {"chunk_size": 0}),
    ("linear_attention", "eps", {"eps": -1.0}),
]


def _op_params():
    params = []
    for op in OP_CALLS:
        cases = dict(OP_CASES)
        if op in FULL_MASK_OPS:
            cases.update(FULL_MASK_CASES)
        for case, (args, kwargs, names) in cases.items():
            params.append(pytest.param(op, args, kwargs, names, id=f"{op}-{case}"))
    return params


@pytest.mark.parametrize("op,args,kwargs,names", _op_params())
@counted
def test_op_bad_input(op, args, kwargs, names):
    assert_clear_error(lambda: OP_CALLS[op](*args, **kwargs), *names)


@pytest.mark.parametrize("op,name,kwargs", OP_ARGUMENT_CASES,
                         ids=[f"{op}-{name}" for op, name, _ in OP_ARGUMENT_CASES])
@counted
def test_op_bad_argument(op, name, kwargs):
    assert_clear_error(lambda: OP_CALLS[op](q, k, v, **kwargs), name)


# ---------------------------------------------------------------------- layers
rng = np.random.default_rng(1)
X = rng.normal(size=(B, T, QUERY_FEATURES)).astype("float32")
C = rng.normal(size=(B, S, CONTEXT_FEATURES)).astype("float32")


def _context(spec):
    return C if spec.cross else X


ATTENTION_CASES = {
    # name: (call(layer, spec), names the error may cite)
    "query rank 2": (lambda l, sp: l(X[:, 0], _context(sp)), ("query",)),
    "value rank 4": (lambda l, sp: l(X, _context(sp)[:, :, None]), ("value",)),
    "key rank 4": (lambda l, sp: l(X, _context(sp), key=_context(sp)[:, :, None]),
                   ("key",)),
    "integer query": (lambda l, sp: l((X * 10).astype("int32"), _context(sp)), ("query",)),
    "string query": (lambda l, sp: l(np.full(X.shape, "a"), _context(sp)), ("query",)),
    "integer value": (lambda l, sp: l(X, (_context(sp) * 10).astype("int32")),
                      ("value",)),
    "batch of value != query": (lambda l, sp: l(X, _context(sp)[:1]),
                                ("value", "query", "key")),
    "batch of key != value": (lambda l, sp: l(X, _context(sp), key=_context(sp)[:1]),
                              ("key", "value")),
    "length of key != value": (lambda l, sp: l(X, _context(sp), key=_context(sp)[:, :-1]),
                               ("key", "value")),
    "query_mask length": (lambda l, sp: l(X, _context(sp), query_mask=np.ones((B, T + 1),
                                                                              bool)),
                          ("query_mask",)),
    "query_mask batch": (lambda l, sp: l(X, _context(sp), query_mask=np.ones((B + 1, T),
                                                                             bool)),
                         ("query_mask",)),
    "value_mask length": (lambda l, sp: l(X, _context(sp), value_mask=np.ones(
        (B, _context(sp).shape[1] - 1), bool)), ("value_mask",)),
    "value_mask rank 3": (lambda l, sp: l(X, _context(sp), value_mask=np.ones(
        (B, 1, _context(sp).shape[1]), bool)), ("value_mask",)),
    "key_mask length": (lambda l, sp: l(X, _context(sp), key_mask=np.ones(
        (B, _context(sp).shape[1] + 1), bool)), ("key_mask",)),
    "attention_mask shape": (lambda l, sp: l(X, _context(sp), attention_mask=np.ones(
        (B, T, _context(sp).shape[1] + 1), bool)), ("attention_mask",)),
    # A (T, S) or (1, T, S) mask broadcasts as in Keras; rank 4 does not.
    "attention_mask rank 4": (lambda l, sp: l(X, _context(sp), attention_mask=np.ones(
        (B, 1, T, _context(sp).shape[1]), bool)), ("attention_mask",)),
}
POOLING_CASES = {
    "inputs rank 2": (lambda l, sp: l(X[:, 0]), ("inputs",)),
    "integer inputs": (lambda l, sp: l((X * 10).astype("int32")), ("inputs",)),
    "string inputs": (lambda l, sp: l(np.full(X.shape, "a")), ("inputs",)),
    "mask length": (lambda l, sp: l(X, mask=np.ones((B, T + 1), bool)), ("mask",)),
    "mask batch": (lambda l, sp: l(X, mask=np.ones((B + 1, T), bool)), ("mask",)),
}
W = rng.normal(size=(B, 3, T, QUERY_FEATURES)).astype("float32")  # (B, S, W, F)
HIERARCHICAL_CASES = {
    "inputs rank 3": (lambda l, sp: l(W[:, 0]), ("inputs",)),
    "integer inputs": (lambda l, sp: l((W * 10).astype("int32")), ("inputs",)),
    "string inputs": (lambda l, sp: l(np.full(W.shape, "a")), ("inputs",)),
    "mask words": (lambda l, sp: l(W, mask=np.ones((B, 3, T + 1), bool)), ("mask",)),
    "mask rank 2": (lambda l, sp: l(W, mask=np.ones((B, 3), bool)), ("mask",)),
}

# Gaps of the shared BaseAttention input checks (not in a layer's own code). Each entry:
# case -> (reason, layers that currently pass the case anyway).
def _layer_params():
    params = []
    for spec in SPECS.values():
        cases = {"attention": ATTENTION_CASES, "pooling": POOLING_CASES,
                 "hierarchical": HIERARCHICAL_CASES}[spec.kind]
        for case, (call, names) in cases.items():
            params.append(pytest.param(spec, call, names,
                                       id=f"{spec.id}-{case}"))
    return params


_BUILT = {}


def _built_layer(spec):
    """One layer per spec, built on valid input (a failed call leaves it unchanged),
    so that the checks of `call()` are tested, not only those of `build()`."""
    if spec.id not in _BUILT:
        layer = spec.make()
        layer(X, _context(spec)) if spec.kind == "attention" else layer(
            X if spec.kind == "pooling" else W)
        _BUILT[spec.id] = layer
    return _BUILT[spec.id]


@pytest.mark.parametrize("spec,call,names", _layer_params())
@counted
def test_layer_bad_input(spec, call, names):
    assert_clear_error(lambda: call(_built_layer(spec), spec), *names)


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@counted
def test_layer_rejects_wrong_rank_before_build(spec):
    """The same rank errors from `build()`, on a fresh layer."""
    layer = spec.make()
    if spec.kind == "attention":
        assert_clear_error(lambda: layer(X[:, 0], _context(spec)), "query")
    elif spec.kind == "pooling":
        assert_clear_error(lambda: layer(X[:, 0]), "inputs")
    else:
        assert_clear_error(lambda: layer(W[:, 0]), "inputs")
