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
         "ramp_size": 1, "span_init": 0.3, "position_encoding": "rotary", "dropout": 0.1,
         "block_size": 2},
        {"num_heads": 2, "key_dim": 4, "max_span": 2, "ramp_size": 1, "causal": True},
    ],
    ids=["default", "gqa-rotary-dropout", "causal"],
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
    distance = distance if causal else np.abs(distance)
    allowed = mask[:, None] & (distance >= 0) & (distance <= max_span)  # (B, 1, T, S)
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
    return out * rows[..., None], a  # a row with no key within max_span is zeros


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
    # Without scores the output comes from the block-wise band computation.
    out = layer(x, ctx, attention_mask=mask, use_causal_mask=causal)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "lengths, block_size",
    [((13, 13), None), ((7, 11), 3), ((11, 7), 3)],
    ids=["self", "T<S-block3", "T>S-block3"],
)
def test_block_wise_output_equals_dense_weights(causal, lengths, block_size):
    rng = np.random.default_rng(3)
    t, s = lengths
    x = rng.normal(size=(2, t, 8)).astype("float32")
    ctx = x if t == s else rng.normal(size=(2, s, 5)).astype("float32")
    layer = AdaptiveSpanAttention(4, 4, max_span=4, ramp_size=2, causal=causal,
                                  block_size=block_size, num_key_value_heads=2)
    layer(x, ctx)
    _randomize(layer, rng)
    layer.span_fraction.assign(np.array([0.0, 0.4, 0.8, 1.0], "float32"))
    query_pad, key_pad = np.ones((2, t), bool), np.ones((2, s), bool)
    query_pad[1, -2:] = False
    key_pad[0, :3] = False
    kwargs = {"query_mask": query_pad, "value_mask": key_pad}
    block_wise = layer(x, ctx, **kwargs)
    dense, scores = layer(x, ctx, return_attention_scores=True, **kwargs)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block_wise),
                               keras.ops.convert_to_numpy(dense), atol=1e-5)
    scores = keras.ops.convert_to_numpy(scores)
    assert np.all(np.isfinite(scores))
    assert np.all(scores[1, :, -2:] == 0.0)  # padded queries
    assert np.all(scores[0, :, :, :3] == 0.0)  # padded keys


@pytest.mark.large
def test_long_sequence_runs_without_quadratic_memory():
    # Dense (N, N) logits would need 2 heads x 1 GiB here.
    n = 16384
    x = keras.random.normal((1, n, 16), seed=0)
    layer = AdaptiveSpanAttention(2, 8, max_span=64, ramp_size=8, causal=True)
    out = keras.ops.convert_to_numpy(layer(x, x))
    assert out.shape == (1, n, 16)
    assert np.all(np.isfinite(out))


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
        ({"max_span": 4, "window_size": 2}, "window_size"),
        ({"max_span": 4, "position_encoding": "alibi"}, "position_encoding"),
        ({"max_span": 4, "block_size": 0}, "block_size"),
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
