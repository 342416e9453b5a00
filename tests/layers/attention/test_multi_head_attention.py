import warnings

import keras
import numpy as np
import pytest

from keras_attention.layers import MultiHeadAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4},
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "value_dim": 6},
        {"num_heads": 2, "key_dim": 4, "num_key_value_heads": 1, "output_shape": 10},
        {"num_heads": 2, "key_dim": 4, "use_bias": False, "implementation": "full"},
        {"num_heads": 2, "key_dim": 4, "sliding_window": 3, "use_gate": True,
         "kernel_regularizer": "l2", "kernel_constraint": "max_norm"},
        {"num_heads": 2, "key_dim": 4, "output_dim": 10},
    ],
    ids=["mha", "gqa", "mqa", "nobias", "window-gate", "output_dim"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(MultiHeadAttention, kwargs)


@pytest.mark.parametrize("encoding", ["rotary", "alibi", "t5", "shaw"])
def test_position_encodings_pass_layer_checks(encoding):
    run_attention_layer_test(
        MultiHeadAttention,
        {"num_heads": 2, "key_dim": 4, "position_encoding": encoding},
        cross=encoding != "rotary",
        run_mixed_precision=encoding in ("rotary", "alibi"),
    )


def test_chunked_implementation_matches_full():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 8)).astype("float32")
    full = MultiHeadAttention(2, 4, implementation="full")
    chunked = MultiHeadAttention(2, 4, implementation="chunked", query_chunk_size=4,
                                 key_chunk_size=3)
    full(x, x)
    chunked(x, x)
    chunked.set_weights(full.get_weights())
    for kw in ({}, {"use_causal_mask": True}):
        assert_all_close(chunked(x, x, **kw), full(x, x, **kw), 1e-5, 1e-5, str(kw))
    with pytest.raises(ValueError, match="return_attention_scores"):
        chunked(x, x, return_attention_scores=True)


def _numpy_mha(x, ctx, weights, num_heads, kv_heads, mask=None):
    """Reference multi-head attention in NumPy (weights in layer order)."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btf,fnh->btnh", x, wq) + bq
    k = np.einsum("bsf,fkh->bskh", ctx, wk) + bk
    v = np.einsum("bsf,fkv->bskv", ctx, wv) + bv
    g = num_heads // kv_heads
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask[:, None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnv->btnv", w, v)
    return np.einsum("btnv,nvo->bto", out, wo) + bo, w


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_golden_against_numpy(kv_heads):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    ctx = rng.normal(size=(2, 7, 3)).astype("float32")
    layer = MultiHeadAttention(4, 3, num_key_value_heads=kv_heads, value_dim=2)
    layer(x, ctx)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights]
    layer.set_weights(weights)
    mask = rng.random((2, 5, 7)) > 0.3
    mask[..., 0] = True
    out, scores = layer(x, ctx, attention_mask=mask, return_attention_scores=True)
    ref_out, ref_w = _numpy_mha(x, ctx, weights, 4, kv_heads, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), ref_w, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_matches_keras_multi_head_attention(causal):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    ctx = x if causal else rng.normal(size=(2, 4, 5)).astype("float32")
    ours = MultiHeadAttention(num_heads=2, key_dim=4)
    ref = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    ours(x, ctx)
    ref(x, ctx)
    ours.set_weights(ref.get_weights())
    value_mask = np.ones(ctx.shape[:2], bool)
    value_mask[1, -1] = False
    kw = {"value_mask": value_mask, "use_causal_mask": causal}
    out, scores = ours(x, ctx, return_attention_scores=True, **kw)
    ref_out, ref_scores = ref(x, ctx, return_attention_scores=True, **kw)
    assert_all_close(out, ref_out, 1e-5, 1e-5, "outputs")
    assert_all_close(scores, ref_scores, 1e-6, 1e-6, "scores")
    assert_all_close(ours(x, ctx, **kw), ref(x, ctx, **kw), 1e-5, 1e-5, "fast path")


@pytest.mark.parametrize("encoding", [None, "rotary", "alibi", "t5", "shaw"])
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_kv_cache_decoding_matches_full_causal_call(encoding, kv_heads):
    rng = np.random.default_rng(3)
    b, t, f = 2, 6, 8
    x = rng.normal(size=(b, t, f)).astype("float32")
    layer = MultiHeadAttention(2, 4, num_key_value_heads=kv_heads, position_encoding=encoding)
    full = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    cache = np.zeros((b, 2, t, kv_heads, 4), "float32")
    # Prefill two tokens at once, then one token at a time.
    out, cache = layer(x[:, :2], x[:, :2], use_causal_mask=True, cache=cache, cache_index=0)
    steps = [keras.ops.convert_to_numpy(out)]
    for i in range(2, t):
        out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], use_causal_mask=True, cache=cache,
                           cache_index=i)
        steps.append(keras.ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)



def test_cache_index_as_tensor_in_compiled_loop():
    """Decoding with a tensor cache_index works inside a compiled function."""
    b, t, f = 1, 4, 8
    rng = np.random.default_rng(4)
    x = rng.normal(size=(b, t, f)).astype("float32")
    layer = MultiHeadAttention(2, 4, position_encoding="rotary")
    full = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))

    def body(i, carry):
        cache, outs = carry
        token = keras.ops.slice(x, [0, i, 0], [b, 1, f])
        out, cache = layer(token, token, use_causal_mask=True, cache=cache, cache_index=i)
        outs = keras.ops.slice_update(outs, [0, i, 0], out)
        return cache, outs

    cache = keras.ops.zeros((b, 2, t, 2, 4))
    _, outs = keras.ops.fori_loop(0, t, body, (cache, keras.ops.zeros((b, t, f))))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outs), full, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0, "key_dim": 4}, "num_heads"),
        ({"num_heads": 2, "key_dim": -1}, "key_dim"),
        ({"num_heads": 4, "key_dim": 4, "num_key_value_heads": 3}, "num_key_value_heads"),
        ({"num_heads": 2, "key_dim": 4, "dropout": 1.5}, "dropout"),
        ({"num_heads": 2, "key_dim": 4, "implementation": "flash"}, "implementation"),
        ({"num_heads": 2, "key_dim": 4, "position_encoding": "sinusoidal"}, "position_encoding"),
        ({"num_heads": 2, "key_dim": 4, "output_dim": 0}, "output_dim"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MultiHeadAttention(**kwargs)


def test_cache_errors():
    x = np.zeros((1, 2, 8), "float32")
    layer = MultiHeadAttention(2, 4)
    with pytest.raises(ValueError, match="cache_index"):
        layer(x, x, cache=np.zeros((1, 2, 4, 2, 4), "float32"))
    with pytest.raises(ValueError, match="cache"):
        layer(x, x, cache=np.zeros((1, 2, 4, 3, 4), "float32"), cache_index=0)
    with pytest.raises(ValueError, match="cache_index"):
        layer(x, x, cache_index=0)
    with pytest.raises(ValueError, match="value_dim"):
        MultiHeadAttention(2, 4, value_dim=3)(
            x, x, cache=np.zeros((1, 2, 4, 2, 4), "float32"), cache_index=0
        )


def test_dropout_is_seeded_and_only_in_training():
    x = np.random.default_rng(5).normal(size=(2, 6, 8)).astype("float32")
    layer = MultiHeadAttention(2, 4, dropout=0.5, seed=7)
    inference = layer(x, x)
    assert_all_close(layer(x, x, training=False), inference, 1e-6, 1e-6, "inference")
    trained = keras.ops.convert_to_numpy(layer(x, x, training=True))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(inference))
    assert np.all(np.isfinite(trained))


def test_readme_model_with_an_embedding_mask_warns_nothing():
    # README's "Using a layer in a model". The Embedding's mask reaches the layer as
    # query_mask/value_mask; the projections must not be handed it again (on JAX
    # Keras warned that each EinsumDense "will destroy the mask information").
    from keras_attention.layers import RotaryEmbedding

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(50, 16, mask_zero=True)(tokens)
        attention = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2,
                                       position_encoding=RotaryEmbedding())
        x = x + attention(x, x, use_causal_mask=True)
        logits = keras.layers.Dense(50)(keras.layers.LayerNormalization()(x))
        model = keras.Model(tokens, logits)
        batch = np.array([[5, 6, 7, 0, 0], [1, 2, 3, 4, 0]])
        eager = model(batch)
        predicted = model.predict(batch, verbose=0)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.train_on_batch(batch, batch)
    assert_all_close(predicted, eager, 1e-4, 1e-4)


def test_attention_over_a_single_key_warns_nothing():
    # Attention weights over one key are all 1; `keras.ops.softmax` warns about an
    # axis of size 1, the layers must not (the first step of cached decoding).
    query = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output, scores = layer(query, query[:, :1], return_attention_scores=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scores), 1.0)
    assert tuple(output.shape) == (2, 3, 8)
