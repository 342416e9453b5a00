import keras
import numpy as np
import pytest

from keras_attention.layers import MultiHeadAttention, TalkingHeadsAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "value_dim": 6,
         "output_dim": 10},
        {"num_heads": 2, "key_dim": 4, "position_encoding": "alibi", "dropout": 0.1},
    ],
    ids=["gqa", "alibi-dropout"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(TalkingHeadsAttention, kwargs)


def _randomize(layer, rng, scale=0.5):
    """Random weights for every variable; returns them keyed by path below the layer."""
    weights = {}
    for w in layer.weights:
        value = (rng.normal(size=w.shape) * scale).astype("float32")
        w.assign(value)
        weights[w.path.split("/", 1)[1]] = value
    return weights


def _numpy_talking_heads(x, ctx, w, num_heads, kv_heads, mask=None, causal=False):
    """Reference talking-heads attention in NumPy."""
    q = np.einsum("btf,fnh->btnh", x, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("bsf,fkh->bskh", ctx, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("bsf,fkv->bskv", ctx, w["value/kernel"]) + w["value/bias"]
    g = num_heads // kv_heads
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.einsum("bnts,nm->bmts", logits, w["pre_softmax_kernel"])
    t, s = x.shape[1], ctx.shape[1]
    allowed = np.ones((x.shape[0], t, s), bool) if mask is None else mask.copy()
    if causal:
        allowed &= np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
    logits = np.where(allowed[:, None], logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)
    weights = np.einsum("bnts,nm->bmts", weights, w["post_softmax_kernel"])
    out = np.einsum("bnts,bsnv->btnv", weights, v)
    out = np.einsum("btnv,nvo->bto", out, w["attention_output/kernel"])
    return out + w["attention_output/bias"], weights


@pytest.mark.parametrize("kv_heads, causal", [(3, False), (1, True)])
def test_golden_against_numpy(kv_heads, causal):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    ctx = rng.normal(size=(2, 7, 4)).astype("float32")
    layer = TalkingHeadsAttention(3, 4, num_key_value_heads=kv_heads, value_dim=2)
    layer(x, ctx)
    w = _randomize(layer, rng)
    mask = rng.random((2, 5, 7)) > 0.3
    mask[..., -1] = True  # every row keeps a key, also under the causal mask
    out, scores = layer(x, ctx, attention_mask=mask, use_causal_mask=causal,
                        return_attention_scores=True)
    ref_out, ref_w = _numpy_talking_heads(x, ctx, w, 3, kv_heads, mask, causal)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), ref_w, atol=1e-5)
    # The path without weights gives the same output.
    fast = layer(x, ctx, attention_mask=mask, use_causal_mask=causal)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fast), ref_out, atol=1e-4)


def test_identity_mixing_equals_multi_head_attention():
    kv_heads = 1  # grouped-query attention: key/value heads repeated before mixing
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    ctx = rng.normal(size=(2, 4, 5)).astype("float32")
    th = TalkingHeadsAttention(2, 4, num_key_value_heads=kv_heads)
    mha = MultiHeadAttention(2, 4, num_key_value_heads=kv_heads)
    th(x, ctx)
    mha(x, ctx)
    for w in mha.weights:
        th_w = {v.path.split("/", 1)[1]: v for v in th.weights}[w.path.split("/", 1)[1]]
        th_w.assign(w)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(th.pre_softmax_kernel),
                                  np.eye(2))
    value_mask = np.ones((2, 4), bool)
    value_mask[1, -1] = False
    kw = {"value_mask": value_mask, "return_attention_scores": True}
    assert_all_close(th(x, ctx, **kw), mha(x, ctx, **kw), 1e-5, 1e-5, "cross")
    kw = {"use_causal_mask": True, "return_attention_scores": True}
    assert_all_close(th(x, x[..., :5], **kw), mha(x, x[..., :5], **kw), 1e-5, 1e-5,
                     "causal")


def test_kv_cache_decoding_matches_full_causal_call():
    rng = np.random.default_rng(3)
    b, t, f = 2, 5, 8
    x = rng.normal(size=(b, t, f)).astype("float32")
    layer = TalkingHeadsAttention(2, 4, num_key_value_heads=1, position_encoding="rotary",
                                  mixing_initializer="glorot_uniform")
    full = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    cache = np.zeros((b, 2, t, 1, 4), "float32")
    out, cache = layer(x[:, :2], x[:, :2], use_causal_mask=True, cache=cache, cache_index=0)
    steps = [keras.ops.convert_to_numpy(out)]
    for i in range(2, t):
        out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], use_causal_mask=True, cache=cache,
                           cache_index=i)
        steps.append(keras.ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_mixing_initializer_round_trips_and_is_used():
    layer = TalkingHeadsAttention(2, 4, mixing_initializer="ones")
    x = np.ones((1, 3, 4), "float32")
    layer(x, x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.post_softmax_kernel),
                                  np.ones((2, 2)))
    revived = TalkingHeadsAttention.from_config(layer.get_config())
    assert isinstance(revived.mixing_initializer, keras.initializers.Ones)


def test_dropout_is_seeded_and_only_in_training():
    x = np.random.default_rng(5).normal(size=(2, 6, 8)).astype("float32")
    layer = TalkingHeadsAttention(2, 4, dropout=0.5, seed=7)
    inference = keras.ops.convert_to_numpy(layer(x, x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, x, training=False)),
                               inference, atol=1e-6)
    trained = keras.ops.convert_to_numpy(layer(x, x, training=True))
    assert not np.allclose(trained, inference)
    assert np.all(np.isfinite(trained))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0, "key_dim": 4}, "num_heads"),
        ({"num_heads": 2, "key_dim": 0}, "key_dim"),
        ({"num_heads": 4, "key_dim": 4, "num_key_value_heads": 3}, "num_key_value_heads"),
        ({"num_heads": 2, "key_dim": 4, "dropout": -0.1}, "dropout"),
        ({"num_heads": 2, "key_dim": 4, "implementation": "chunked"}, "implementation"),
        ({"num_heads": 2, "key_dim": 4, "implementation": "flash"}, "implementation"),
        ({"num_heads": 2, "key_dim": 4, "position_encoding": "sinusoidal"},
         "position_encoding"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TalkingHeadsAttention(**kwargs)


def test_call_errors():
    x = np.zeros((2, 3, 8), "float32")
    layer = TalkingHeadsAttention(2, 4)
    with pytest.raises(ValueError, match="key"):
        layer(x, x, key=np.zeros((2, 4, 8), "float32"))
    with pytest.raises(ValueError, match="cache_index"):
        layer(x, x, cache_index=0)
