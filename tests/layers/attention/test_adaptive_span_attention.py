import keras
import numpy as np
import pytest

from keras_attention.layers import AdaptiveSpanAttention
from keras_attention.testing import run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4, "max_span": 4, "ramp_size": 2},
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "max_span": 3,
         "ramp_size": 1, "span_init": 0.3, "position_encoding": "alibi", "dropout": 0.1},
    ],
    ids=["default", "gqa-alibi-dropout"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(AdaptiveSpanAttention, kwargs)


def _randomize(layer, rng):
    values = {}
    for w in layer.weights:
        value = (rng.normal(size=w.shape) * 0.5).astype("float32")
        w.assign(value)
        values[w.path.split("/", 1)[1]] = value
    return values


def _numpy_adaptive_span(x, ctx, w, spans, max_span, ramp, causal, mask):
    """Reference: softmax weights times the soft span mask, renormalised."""
    q = np.einsum("btf,fnh->btnh", x, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("bsf,fkh->bskh", ctx, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("bsf,fkv->bskv", ctx, w["value/kernel"]) + w["value/bias"]
    g = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    t, s = x.shape[1], ctx.shape[1]
    distance = (np.arange(t) + s - t)[:, None] - np.arange(s)[None]  # (T, S)
    allowed = mask[:, None] & (distance >= 0 if causal else True)  # (B, 1, T, S)
    distance = distance if causal else np.abs(distance)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    a = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    a = a / np.maximum(a.sum(-1, keepdims=True), 1e-30)
    soft = np.clip((ramp + spans[:, None, None] - distance) / ramp, 0.0, 1.0)
    soft = soft * (distance <= max_span)  # (N, T, S)
    a = a * soft
    total = a.sum(-1, keepdims=True)
    a = np.divide(a, total, out=np.zeros_like(a), where=total > 0)
    out = np.einsum("bnts,bsnv->btnv", a, v)
    out = np.einsum("btnv,nvo->bto", out, w["attention_output/kernel"]) + w[
        "attention_output/bias"
    ]
    rows = np.broadcast_to(allowed, (x.shape[0], 1, t, s)).any(-1)[:, 0]  # (B, T)
    return out * rows[..., None], a  # a row with no allowed key is zeros


@pytest.mark.parametrize("causal", [True, False])
def test_golden_against_numpy(causal):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 6)).astype("float32")
    ctx = x if causal else rng.normal(size=(2, 9, 5)).astype("float32")
    layer = AdaptiveSpanAttention(4, 3, max_span=5, ramp_size=2, num_key_value_heads=2)
    layer(x, ctx)
    w = _randomize(layer, rng)
    fractions = np.array([0.0, 0.3, 0.7, 1.2], "float32")  # 1.2 is clipped to 1
    layer.span_fraction.assign(fractions)
    spans = np.clip(fractions, 0, 1) * 5
    mask = rng.random((2, x.shape[1], ctx.shape[1])) > 0.2
    out, scores = layer(x, ctx, attention_mask=mask, use_causal_mask=causal,
                        return_attention_scores=True)
    ref_out, ref_w = _numpy_adaptive_span(x, ctx, w, spans, 5, 2.0, causal, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), ref_w, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.spans), spans, atol=1e-6)


def test_span_penalty_through_add_loss():
    x = np.random.default_rng(2).normal(size=(2, 6, 8)).astype("float32")
    layer = AdaptiveSpanAttention(2, 4, max_span=6, ramp_size=2, span_loss_coef=0.1)
    layer(x, x)
    layer.span_fraction.assign(np.array([0.25, 0.75], "float32"))  # spans 1.5, 4.5
    layer(x, x, use_causal_mask=True)
    assert len(layer.losses) == 1  # one penalty per call, not accumulated
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.losses[0]), 0.3, atol=1e-6)

    # In training the penalty shrinks the spans.
    keras.utils.set_random_seed(0)
    layer = AdaptiveSpanAttention(2, 4, max_span=6, ramp_size=2, span_loss_coef=1.0)
    inputs = keras.Input((6, 8))
    model = keras.Model(inputs, layer(inputs, inputs, use_causal_mask=True))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    before = keras.ops.convert_to_numpy(layer.span_fraction).copy()
    model.fit(x, np.zeros_like(x), epochs=2, batch_size=2, verbose=0)
    after = keras.ops.convert_to_numpy(layer.span_fraction)
    assert np.all(after < before), (before, after)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_span": 0}, "max_span"),
        ({"max_span": 4, "ramp_size": 0}, "ramp_size"),
        ({"max_span": 4, "span_init": 1.5}, "span_init"),
        ({"max_span": 4, "span_init": "half"}, "span_init"),
        ({"max_span": 4, "span_loss_coef": -1.0}, "span_loss_coef"),
        ({"max_span": 4, "implementation": "chunked"}, "implementation"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdaptiveSpanAttention(2, 4, **kwargs)


def test_cache_is_rejected():
    x = np.zeros((1, 2, 8), "float32")
    layer = AdaptiveSpanAttention(2, 4, max_span=4)
    with pytest.raises(ValueError, match="cache"):
        layer(x, x, cache=np.zeros((1, 2, 4, 2, 4), "float32"), cache_index=0)
