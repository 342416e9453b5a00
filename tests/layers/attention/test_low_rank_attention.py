import keras
import numpy as np
import pytest

from keras_attention.layers import LowRankAttention, MultiHeadAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4, "projected_length": 3},
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "projected_length": 4,
         "max_length": 8, "share_projection": True, "output_dim": 10},
    ],
    ids=["default", "gqa-shared-max_length"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(LowRankAttention, kwargs, causal=False, scores=False,
                             attention_mask=False)


def _randomize(layer, rng):
    """Give every weight random values; return them by name (e.g. 'query/kernel')."""
    values = {}
    for w in layer.weights:
        value = (rng.normal(size=w.shape) * 0.5).astype("float32")
        w.assign(value)
        values[w.path.split("/", 1)[1]] = value
    return values


def _numpy_linformer(x, ctx, w, num_heads, key_mask=None, share=False):
    """Reference Linformer attention in NumPy."""
    q = np.einsum("btf,fnh->btnh", x, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("bsf,fkh->bskh", ctx, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("bsf,fkv->bskv", ctx, w["value/kernel"]) + w["value/bias"]
    if key_mask is not None:
        k = k * key_mask[:, :, None, None]
        v = v * key_mask[:, :, None, None]
    s = ctx.shape[1]
    e = w["key_projection"][:s]
    f = e if share else w["value_projection"][:s]
    k = np.einsum("bskh,sp->bpkh", k, e)
    v = np.einsum("bskv,sp->bpkv", v, f)
    g = num_heads // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bpnh->bntp", q, k) / np.sqrt(q.shape[-1])
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    out = np.einsum("bntp,bpnv->btnv", a, v)
    return np.einsum("btnv,nvo->bto", out, w["attention_output/kernel"]) + w[
        "attention_output/bias"
    ]


@pytest.mark.parametrize("share", [False, True])
def test_golden_against_numpy_with_padding_and_shorter_sequence(share):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    ctx = rng.normal(size=(2, 7, 3)).astype("float32")
    layer = LowRankAttention(4, 3, projected_length=4, max_length=9, num_key_value_heads=2,
                             share_projection=share)
    layer(x, ctx)
    w = _randomize(layer, rng)
    key_mask = np.ones((2, 7), bool)
    key_mask[1, -3:] = False
    query_mask = np.ones((2, 5), bool)
    query_mask[0, -1] = False
    out = keras.ops.convert_to_numpy(layer(x, ctx, value_mask=key_mask, query_mask=query_mask))
    ref = _numpy_linformer(x, ctx, w, 4, key_mask, share) * query_mask[..., None]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # A context shorter than max_length uses the first rows of E and F.
    short = ctx[:, :4]
    out = keras.ops.convert_to_numpy(layer(x, short))
    np.testing.assert_allclose(out, _numpy_linformer(x, short, w, 4, share=share), atol=1e-4)


def test_identity_projection_is_exact_attention():
    """projected_length == S and E = F = I: exactly MultiHeadAttention."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    layer = LowRankAttention(2, 4, projected_length=6)
    mha = MultiHeadAttention(2, 4)
    layer(x, x)
    mha(x, x)
    layer.key_projection.assign(np.eye(6, dtype="float32"))
    layer.value_projection.assign(np.eye(6, dtype="float32"))
    mha.set_weights(layer.get_weights()[2:])  # after key_projection, value_projection
    out = keras.ops.convert_to_numpy(layer(x, x))
    ref = keras.ops.convert_to_numpy(mha(x, x))
    assert np.abs(out - ref).max() < 1e-6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"projected_length": 0}, "projected_length"),
        ({"projected_length": 2.5}, "projected_length"),
        ({"projected_length": 4, "max_length": 0}, "max_length"),
        ({"projected_length": 4, "position_encoding": "alibi"}, "position_encoding"),
        ({"projected_length": 4, "position_encoding": "shaw"}, "position_encoding"),
        ({"projected_length": 4, "num_heads": 0}, "num_heads"),
    ],
)
def test_constructor_errors(kwargs, match):
    kwargs = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        LowRankAttention(**kwargs)


def test_call_errors():
    x = np.zeros((2, 6, 8), "float32")
    layer = LowRankAttention(2, 4, projected_length=3)
    with pytest.raises(ValueError, match="use_causal_mask"):
        layer(x, x, use_causal_mask=True)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 6, 6), bool))
    with pytest.raises(ValueError, match="return_attention_scores"):
        layer(x, x, return_attention_scores=True)
    with pytest.raises(ValueError, match="max_length"):
        layer(x, np.zeros((2, 7, 8), "float32"))  # built for 6 keys
    with pytest.raises(ValueError, match="max_length"):
        LowRankAttention(2, 4, projected_length=3, max_length=4)(x, x)
    with pytest.raises(ValueError, match="max_length"):
        inputs = keras.Input((None, 8))
        LowRankAttention(2, 4, projected_length=3)(inputs, inputs)


def test_rotary_and_dynamic_length():
    """A rotary encoding plugs in; with max_length, the length may vary."""
    x = np.random.default_rng(3).normal(size=(2, 6, 8)).astype("float32")
    inputs = keras.Input((None, 8))
    layer = LowRankAttention(2, 4, projected_length=3, max_length=10,
                             position_encoding="rotary")
    model = keras.Model(inputs, layer(inputs, inputs))
    assert model(x).shape == (2, 6, 8)
    assert_all_close(model(x[:, :4]), layer(x[:, :4], x[:, :4]), 1e-6, 1e-6, "dynamic")
