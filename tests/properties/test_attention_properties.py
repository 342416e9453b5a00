"""Property tests of every attention layer of `keras_attention.layers`.

For each configuration of `layer_specs.ALL_SPECS` (every layer class, plus variants:
GQA/MQA, chunked MHA, FAVOR+, fixed sparse pattern, Luong local-p, ...), with random
weights (biases included), random batch sizes and lengths, padding masks (fully
padded sequences included), attention masks with empty rows, causal calls and the
float32, float16, bfloat16, mixed_float16 and mixed_bfloat16 policies:

- outputs are finite, and query rows with no allowed key are exactly zero;
- padded positions have no influence on the other rows, in self- and
  cross-attention, and future positions none on earlier rows under
  `use_causal_mask=True`;
- layers whose result is a dense attention under a boolean pattern (local, sparse,
  block-sparse, global-local, chunked MHA, ...) equal `MultiHeadAttention` with
  that pattern as the attention mask and the same weights;
- zero-size batches and sequences give an output of the right shape (zeros), or a
  `ValueError` naming the argument.
"""

import dataclasses

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_attention.layers.attention.base_attention import BaseAttention
from tests.properties.conftest import counted, examples
from tests.properties.layer_specs import (
    ALL_SPECS,
    CONTEXT_FEATURES,
    QUERY_FEATURES,
    SPECS,
    call_layer,
    dense_equivalent,
    discover_layers,
    randomize_weights,
    spec_ids,
)
from tests.properties.strategies import assert_finite, to_numpy

POLICIES = ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
# Tolerance of "unchanged" outputs per compute dtype (the two calls differ only in
# masked inputs, so this is rounding of the same computation, often exact).
UNCHANGED_TOL = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}


def _compute_dtype(policy):
    return policy.replace("mixed_", "")


# ---------------------------------------------------------------------- the table
def test_every_layer_has_a_spec():
    found = discover_layers()
    missing = sorted(set(found) - set(SPECS))
    stale = sorted(set(SPECS) - set(found))
    assert not missing, f"attention layers without a property-test spec: {missing}"
    assert not stale, f"specs of layers that no longer exist: {stale}"


@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_ids(ALL_SPECS))
def test_spec_matches_the_layer(spec):
    """The table's flags agree with what the layer accepts and rejects."""
    layer = spec.make()
    assert isinstance(layer, BaseAttention) == (spec.kind == "attention")
    if spec.kind != "attention":
        return
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, QUERY_FEATURES)).astype("float32")
    context = rng.normal(size=(2, 4, CONTEXT_FEATURES)).astype("float32")
    layer(x, x)
    checks = [
        (spec.attention_mask, "attention_mask",
         lambda: layer(x, x, attention_mask=np.ones((2, 5, 5), bool))),
        (spec.causal is not None, "use_causal_mask",
         lambda: layer(x, x, use_causal_mask=True)),
        (spec.cross, "value", lambda: spec.make()(x, context)),
    ]
    for supported, name, call in checks:
        if supported:
            call()
        else:
            with pytest.raises(ValueError, match=name):
                call()


# ---------------------------------------------------------------------- cases
@dataclasses.dataclass(frozen=True)
class LayerCase:
    batch: int
    query_length: int
    key_length: int
    words: int  # words per sentence (hierarchical only)
    policy: str
    causal: bool
    query_pad: bool
    value_pad: bool
    attention_mask: bool
    seed: int

    @property
    def dtype(self):
        return _compute_dtype(self.policy)


@st.composite
def layer_cases(draw, spec, policies=POLICIES, causal=None, min_length=1):
    t = draw(st.integers(min_length, spec.max_length))
    s = draw(st.integers(min_length, spec.max_length)) if spec.cross else t
    if causal is None:
        causal = spec.causal is not None and draw(st.booleans())
    return LayerCase(
        batch=draw(st.integers(1, 3)),
        query_length=t,
        key_length=s,
        words=draw(st.integers(1, 5)),
        policy=draw(st.sampled_from(policies)),
        causal=causal,
        query_pad=draw(st.booleans()),
        value_pad=draw(st.booleans()),
        attention_mask=spec.attention_mask and draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


class Inputs:
    """Arrays of one layer case: `x`, `context` (None for self-attention), masks and
    the `(B, T, S)` pairs allowed by the masks and the causal flag."""

    def __init__(self, spec, case, cross):
        rng = np.random.default_rng(case.seed)
        self.rng = rng
        b, t, s = case.batch, case.query_length, case.key_length if cross else None
        if spec.kind == "hierarchical":
            self.x = rng.normal(size=(b, t, case.words, QUERY_FEATURES)).astype("float32")
            self.context = None
            self.query_mask = _lengths_mask(rng, (b, t), case.words) if case.query_pad \
                else None
            self.value_mask = self.attention_mask = None
            return
        self.x = rng.normal(size=(b, t, QUERY_FEATURES)).astype("float32")
        s = s if cross else t
        self.context = (rng.normal(size=(b, s, CONTEXT_FEATURES)).astype("float32")
                        if cross else None)
        if spec.kind == "pooling":
            self.query_mask = _lengths_mask(rng, (b,), t) if case.query_pad else None
            self.value_mask = self.attention_mask = None
            return
        self.query_mask = _lengths_mask(rng, (b,), t) if case.query_pad else None
        self.value_mask = _lengths_mask(rng, (b,), s) if case.value_pad else None
        self.attention_mask = None
        if case.attention_mask:
            mask = rng.random((b, t, s)) < rng.uniform(0.3, 0.9)
            mask[rng.random((b, t)) < 0.25] = False  # empty rows
            self.attention_mask = mask
        allowed = np.ones((b, t, s), bool)
        if self.query_mask is not None:
            allowed &= self.query_mask[:, :, None]
        if self.value_mask is not None:
            allowed &= self.value_mask[:, None, :]
        if self.attention_mask is not None:
            allowed &= self.attention_mask
        if case.causal:
            allowed &= np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
        self.allowed = allowed

    def call(self, spec, layer, causal, x=None, context=None, **kwargs):
        x = self.x if x is None else x
        context = self.context if context is None else context
        if spec.kind != "attention":
            return call_layer(spec, layer, x, query_mask=self.query_mask, **kwargs)
        return call_layer(spec, layer, x, context, query_mask=self.query_mask,
                          value_mask=self.value_mask, attention_mask=self.attention_mask,
                          causal=causal, **kwargs)


def _lengths_mask(rng, batch_shape, length):
    """`(*batch_shape, length)` padding mask, lengths uniform in [0, length]."""
    lengths = rng.integers(0, length + 1, size=batch_shape)
    return np.arange(length) < lengths[..., None]


def _built(spec, case, inputs):
    layer = spec.make(dtype=case.policy)
    inputs.call(spec, layer, case.causal)  # builds
    randomize_weights(spec, layer, case.seed)
    return layer


def _empty_rows(spec, layer, case, inputs):
    """Boolean mask of the output rows that must be zero (no allowed key)."""
    if spec.kind == "pooling":
        if inputs.query_mask is None:
            return None
        return ~np.any(inputs.query_mask, axis=-1)  # (B,): the whole pooled output
    if spec.kind == "hierarchical":
        if inputs.query_mask is None:
            return None
        return ~np.any(inputs.query_mask, axis=(1, 2))  # (B,)
    allowed = inputs.allowed
    if spec.pattern is not None:
        allowed = allowed & spec.pattern(layer, case.query_length, allowed.shape[-1],
                                         case.causal)[None]
    return ~np.any(allowed, axis=-1)  # (B, T)


# ---------------------------------------------------------------------- properties
@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_ids(ALL_SPECS))
@settings(max_examples=examples(3), deadline=None, derandomize=True)
@given(data=st.data())
@counted
def test_outputs_finite_and_empty_rows_zero(spec, data):
    case = data.draw(layer_cases(spec))
    inputs = Inputs(spec, case, cross=spec.cross and data.draw(st.booleans()))
    layer = _built(spec, case, inputs)
    out = inputs.call(spec, layer, case.causal)
    assert keras.backend.standardize_dtype(out.dtype) == case.dtype
    out = assert_finite(out, spec.id)
    empty = _empty_rows(spec, layer, case, inputs)
    if empty is not None:
        np.testing.assert_array_equal(out[empty], 0.0,
                                      err_msg="rows with no allowed key are not zero")


@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_ids(ALL_SPECS))
@settings(max_examples=examples(2), deadline=None, derandomize=True)
@given(data=st.data())
@counted
def test_padding_has_no_influence(spec, data):
    """Perturbing padded positions changes no kept row; padded query rows are zero."""
    case = data.draw(layer_cases(spec))
    cross = spec.cross and data.draw(st.booleans())
    inputs = Inputs(spec, case, cross)
    rng, tol = inputs.rng, UNCHANGED_TOL[case.dtype]
    b, t = case.batch, case.query_length
    if spec.kind == "hierarchical":
        pad = _lengths_mask(rng, (b, t), case.words)
        inputs.query_mask = pad
        kept = np.any(pad, axis=(1, 2))  # documents with a word
    elif spec.kind == "pooling":
        pad = _lengths_mask(rng, (b,), t)
        inputs.query_mask = pad
        kept = np.any(pad, axis=-1)  # (B,)
    elif cross:
        pad = _lengths_mask(rng, (b,), inputs.context.shape[1])
        inputs.value_mask = pad  # perturb the context at padded positions
        kept = None
    else:
        pad = _lengths_mask(rng, (b,), t)
        inputs.query_mask = inputs.value_mask = pad
        kept = pad  # (B, T)
    layer = _built(spec, case, inputs)
    base = to_numpy(inputs.call(spec, layer, case.causal))
    noise = rng.normal(size=pad.shape + (1,)).astype("float32") * 10.0 + 5.0
    if cross:
        context = np.where(pad[..., None], inputs.context, inputs.context + noise)
        out = inputs.call(spec, layer, case.causal, context=context)
    else:
        x = np.where(pad[..., None], inputs.x, inputs.x + noise)
        out = inputs.call(spec, layer, case.causal, x=x)
    out = assert_finite(out, spec.id)
    if kept is None:
        np.testing.assert_allclose(out, base, atol=tol, rtol=tol,
                                   err_msg="padded context changed the output")
        return
    np.testing.assert_allclose(out[kept], base[kept], atol=tol, rtol=tol,
                               err_msg="padded positions changed kept rows")
    np.testing.assert_array_equal(out[~kept], 0.0, err_msg="padded rows not zero")


CAUSAL_SPECS = [spec for spec in ALL_SPECS if spec.causal == "exact"]


@pytest.mark.parametrize("spec", CAUSAL_SPECS, ids=spec_ids(CAUSAL_SPECS))
@settings(max_examples=examples(2), deadline=None, derandomize=True)
@given(data=st.data())
@counted
def test_future_has_no_influence_when_causal(spec, data):
    case = data.draw(layer_cases(spec, causal=True, min_length=2))
    cross = spec.cross and data.draw(st.booleans())
    inputs = Inputs(spec, case, cross)
    t = case.query_length
    s = inputs.context.shape[1] if cross else t
    cut = data.draw(st.integers(1, s - 1))  # keys j >= cut change
    tol = UNCHANGED_TOL[case.dtype]
    layer = _built(spec, case, inputs)
    base = to_numpy(inputs.call(spec, layer, True))
    if cross:
        context = inputs.context.copy()
        context[:, cut:] += inputs.rng.normal(size=context[:, cut:].shape) * 10.0
        out = inputs.call(spec, layer, True, context=context)
    else:
        x = inputs.x.copy()
        x[:, cut:] += inputs.rng.normal(size=x[:, cut:].shape).astype("float32") * 10.0
        out = inputs.call(spec, layer, True, x=x)
    out = assert_finite(out, spec.id)
    rows = np.arange(t) + (s - t) < cut  # queries that see no changed key
    np.testing.assert_allclose(out[:, rows], base[:, rows], atol=tol, rtol=tol,
                               err_msg="future positions changed earlier rows")


PATTERN_SPECS = [spec for spec in ALL_SPECS if spec.pattern is not None]


@pytest.mark.parametrize("spec", PATTERN_SPECS, ids=spec_ids(PATTERN_SPECS))
@settings(max_examples=examples(3), deadline=None, derandomize=True)
@given(data=st.data())
@counted
def test_equals_dense_attention_with_its_pattern(spec, data):
    """The layer == `MultiHeadAttention(implementation="full")` with the layer's
    boolean pattern ANDed into the attention mask (same weights, float32)."""
    case = data.draw(layer_cases(spec, policies=("float32",)))
    cross = spec.cross and data.draw(st.booleans())
    inputs = Inputs(spec, case, cross)
    layer = _built(spec, case, inputs)
    out = inputs.call(spec, layer, case.causal)
    t = case.query_length
    s = inputs.context.shape[1] if cross else t
    pattern = spec.pattern(layer, t, s, case.causal)[None]  # (1, T, S)
    mask = pattern if inputs.attention_mask is None else pattern & inputs.attention_mask
    mask = np.broadcast_to(mask, (case.batch, t, s))
    context = inputs.x if inputs.context is None else inputs.context
    dense = dense_equivalent(spec, layer, inputs.x, context)
    expected = dense(inputs.x, context, query_mask=inputs.query_mask,
                     value_mask=inputs.value_mask, attention_mask=mask,
                     use_causal_mask=case.causal)
    np.testing.assert_allclose(to_numpy(out), to_numpy(expected), atol=2e-5, rtol=2e-5,
                               err_msg=f"{spec.id} != dense attention with its pattern")


# Layers that zero "no key" rows only through BaseAttention's row check, which
# does not treat a key length of 0 without a mask as "no key": the output is then the
# output projection's bias.
def _zero_size_params():
    params = []
    # Every class, and the chunked MHA (its own op); other variants share the code.
    specs = list(SPECS.values()) + [s for s in ALL_SPECS if s.id.endswith("[chunked]")]
    for spec in specs:
        if spec.kind == "hierarchical":
            shapes = [(0, 3, 2), (2, 0, 2), (2, 3, 0)]  # (B, sentences, words)
        elif spec.kind == "pooling" or not spec.cross:
            shapes = [(0, 3, 3), (2, 0, 0)]
        else:
            shapes = [(0, 3, 3), (2, 0, 3), (2, 3, 0), (2, 0, 0)]
        for shape in shapes:
            params.append(pytest.param(spec, shape,
                                       id=f"{spec.id}-{'x'.join(map(str, shape))}"))
    return params


@pytest.mark.parametrize("spec,shape", _zero_size_params())
@counted
def test_zero_sizes_work_or_raise_clearly(spec, shape):
    """Empty batches or sequences give an output of the right shape, zeros where
    there is nothing to attend (with random, non-zero biases), or a ValueError /
    TypeError that names the argument."""
    b, t, s = shape
    rng = np.random.default_rng(0)
    layer = spec.make()
    if spec.kind == "hierarchical":
        args = (rng.normal(size=(b, t, s, QUERY_FEATURES)),)
        expected, nothing = (b, QUERY_FEATURES), t == 0 or s == 0
    elif spec.kind == "pooling":
        args = (rng.normal(size=(b, t, QUERY_FEATURES)),)
        expected, nothing = (b, 2, QUERY_FEATURES), t == 0
    else:
        width = CONTEXT_FEATURES if spec.cross else QUERY_FEATURES
        args = (rng.normal(size=(b, t, QUERY_FEATURES)), rng.normal(size=(b, s, width)))
        expected, nothing = (b, t), s == 0  # the output width depends on the layer
    args = tuple(a.astype("float32") for a in args)
    try:
        out = layer(*args)
    except (ValueError, TypeError) as error:
        assert any(name in str(error) for name in ("query", "value", "key", "inputs")), (
            f"unclear error for zero sizes: {error}"
        )
        return
    assert tuple(out.shape)[: len(expected)] == expected
    randomize_weights(spec, layer, 0)  # non-zero biases
    out = assert_finite(layer(*args), spec.id)
    if nothing:
        np.testing.assert_array_equal(out, 0.0, err_msg="nothing to attend, not zeros")
