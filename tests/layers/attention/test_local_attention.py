import keras
import numpy as np
import pytest

from keras_attention import masks
from keras_attention.layers import LocalAttention, MultiHeadAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4, "window_size": 1},
        {"num_heads": 2, "key_dim": 4, "window_size": 2, "causal": True, "block_size": 2,
         "use_bias": False},
        {"num_heads": 4, "key_dim": 4, "window_size": 0, "num_key_value_heads": 2,
         "value_dim": 6, "output_dim": 10, "block_size": 4},
        {"num_heads": 2, "key_dim": 4, "window_size": 2, "position_encoding": "rotary",
         "dropout": 0.2, "seed": 1},
    ],
    ids=["window1", "causal", "gqa-window0", "rotary-dropout"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(LocalAttention, kwargs)


def _numpy_attention(x, ctx, weights, num_heads, kv_heads, mask):
    """Reference multi-head attention in NumPy under a boolean (B, T, S) mask."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btf,fnh->btnh", x, wq) + bq
    k = np.repeat(np.einsum("bsf,fkh->bskh", ctx, wk) + bk, num_heads // kv_heads, axis=2)
    v = np.repeat(np.einsum("bsf,fkv->bskv", ctx, wv) + bv, num_heads // kv_heads, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -np.inf)
    w = np.exp(logits - np.max(logits, -1, keepdims=True, initial=-1e30))
    w = np.where(mask[:, None], w, 0.0)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
    out = np.einsum("btnv,nvo->bto", np.einsum("bnts,bsnv->btnv", w, v), wo) + bo
    return np.where(mask.any(-1)[..., None], out, 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_golden_against_numpy(causal):
    rng = np.random.default_rng(0)
    b, t, w = 2, 11, 2
    x = rng.normal(size=(b, t, 6)).astype("float32")
    layer = LocalAttention(4, 3, window_size=w, num_key_value_heads=2, causal=causal,
                           block_size=4)
    layer(x, x)
    weights = [rng.normal(size=v.shape).astype("float32") * 0.5 for v in layer.weights]
    layer.set_weights(weights)
    pad = np.ones((b, t), bool)
    pad[1, -3:] = False
    band = np.abs(np.arange(t)[:, None] - np.arange(t)[None]) <= w
    if causal:
        band &= np.arange(t)[:, None] >= np.arange(t)[None]
    mask = band[None] & pad[:, :, None] & pad[:, None, :]
    out = layer(x, x, query_mask=pad, value_mask=pad)
    expected = _numpy_attention(x, x, weights, 4, 2, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-4)


def _dense_twin(layer, x, ctx, **kwargs):
    """A MultiHeadAttention with the same weights as `layer`."""
    ref = MultiHeadAttention(layer.num_heads, layer.key_dim, implementation="full", **kwargs)
    ref(x, ctx)
    ref.set_weights(layer.get_weights())
    return ref


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(13, 13), (7, 10), (10, 7)], ids=["self", "T<S", "T>S"])
def test_matches_dense_attention_with_band_mask(causal, lengths):
    rng = np.random.default_rng(1)
    t, s = lengths
    x = rng.normal(size=(2, t, 8)).astype("float32")
    ctx = x if t == s else rng.normal(size=(2, s, 5)).astype("float32")
    layer = LocalAttention(4, 4, window_size=2, num_key_value_heads=2, block_size=3)
    layer(x, ctx)
    ref = _dense_twin(layer, x, ctx, num_key_value_heads=2)
    query_mask = np.ones((2, t), bool)
    query_mask[1, -2:] = False
    value_mask = np.ones((2, s), bool)
    value_mask[1, :3] = False
    band = np.asarray(masks.sliding_window_mask(t, 2, s, causal=causal))
    pattern = np.broadcast_to(band, (2, t, s))
    kw = {"query_mask": query_mask, "value_mask": value_mask}
    expected = ref(x, ctx, attention_mask=pattern, **kw)
    assert_all_close(layer(x, ctx, use_causal_mask=causal, **kw), expected, 1e-5, 1e-5,
                     "sliding-window path")
    # A full attention mask is applied block by block on top of the band.
    full = rng.random((2, t, s)) > 0.3
    assert_all_close(layer(x, ctx, attention_mask=full, use_causal_mask=causal, **kw),
                     ref(x, ctx, attention_mask=pattern & full, **kw), 1e-5, 1e-5,
                     "full attention mask")
    # Dense scores on demand: same output, weights of the band-masked attention.
    out, scores = layer(x, ctx, use_causal_mask=causal, return_attention_scores=True, **kw)
    ref_out, ref_scores = ref(x, ctx, attention_mask=pattern, return_attention_scores=True,
                              **kw)
    assert_all_close(out, ref_out, 1e-5, 1e-5, "output with scores")
    assert_all_close(scores, ref_scores, 1e-6, 1e-6, "scores")


def test_causal_constructor_equals_use_causal_mask():
    x = np.random.default_rng(2).normal(size=(2, 9, 8)).astype("float32")
    layer = LocalAttention(2, 4, window_size=3, causal=True)
    plain = LocalAttention(2, 4, window_size=3)
    layer(x, x)
    plain(x, x)
    plain.set_weights(layer.get_weights())
    assert_all_close(layer(x, x), plain(x, x, use_causal_mask=True), 1e-6, 1e-6, "causal")


def test_rotary_matches_dense_attention():
    x = np.random.default_rng(3).normal(size=(2, 10, 8)).astype("float32")
    layer = LocalAttention(2, 4, window_size=2, position_encoding="rotary", block_size=4)
    layer(x, x)
    ref = _dense_twin(layer, x, x, position_encoding="rotary")
    pattern = np.broadcast_to(np.asarray(masks.local_attention_mask(10, 2)), (2, 10, 10))
    assert_all_close(layer(x, x), ref(x, x, attention_mask=pattern), 1e-5, 1e-5, "rotary")


def test_attend_hook_on_per_head_tensors():
    from keras_attention.ops import sliding_window_attention

    rng = np.random.default_rng(6)
    q, k, v = (rng.normal(size=(2, 9, 2, 4)).astype("float32") for _ in range(3))
    layer = LocalAttention(2, 4, window_size=2)
    out, weights = layer._attend(q, k, v, mask=None, bias=None, causal=True, training=False,
                                 return_weights=False)
    assert weights is None
    assert_all_close(out, sliding_window_attention(q, k, v, window_size=2, causal=True),
                     1e-6, 1e-6, "_attend")


def test_dropout_only_in_training():
    x = np.random.default_rng(4).normal(size=(2, 8, 8)).astype("float32")
    layer = LocalAttention(2, 4, window_size=2, dropout=0.5, seed=0)
    plain = LocalAttention(2, 4, window_size=2)
    layer(x, x)
    plain(x, x)
    plain.set_weights(layer.get_weights())
    assert_all_close(layer(x, x, training=False), plain(x, x), 1e-6, 1e-6, "inference")
    trained = keras.ops.convert_to_numpy(layer(x, x, training=True))
    assert np.all(np.isfinite(trained))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(plain(x, x)), atol=1e-3)


@pytest.mark.parametrize(
    "with_mask", [False, True],
    ids=["sliding-window-op", "block-wise"],
)
def test_functional_model_with_unknown_length(with_mask):
    rng = np.random.default_rng(5)
    layer = LocalAttention(2, 4, window_size=2, block_size=4)
    x = keras.Input((None, 8))
    inputs, kwargs = [x], {}
    if with_mask:
        mask = keras.Input((None, None), dtype="bool")
        inputs.append(mask)
        kwargs["attention_mask"] = mask
    model = keras.Model(inputs, layer(x, x, **kwargs))
    for t in (11, 6):
        data = rng.normal(size=(2, t, 8)).astype("float32")
        arrays = [data] + ([rng.random((2, t, t)) > 0.2] if with_mask else [])
        expected = layer(data, data, **dict(zip(kwargs, arrays[1:])))
        assert_all_close(model(arrays), expected, 1e-6, 1e-6, f"length {t}")


def test_mask_functions():
    np.testing.assert_array_equal(
        np.asarray(masks.local_attention_mask(6, 1, causal=True)),
        np.asarray(masks.sliding_window_mask(6, 1, causal=True)),
    )
    with pytest.raises(ValueError, match="length"):
        masks.local_attention_mask(0, 1)
    with pytest.raises(ValueError, match="window_size"):
        masks.local_attention_mask(4, -1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"window_size": -1}, ValueError, "window_size"),
        ({"window_size": 1.5}, TypeError, "window_size"),
        ({"window_size": 1, "causal": "yes"}, TypeError, "causal"),
        ({"window_size": 1, "block_size": 0}, ValueError, "block_size"),
        ({"window_size": 1, "position_encoding": "alibi"}, ValueError, "position_encoding"),
        ({"window_size": 1, "position_encoding": "t5"}, ValueError, "position_encoding"),
        ({"window_size": 1, "implementation": "full"}, TypeError, "implementation"),
        ({"window_size": 1, "num_heads": 0}, ValueError, "num_heads"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    kwargs = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises(error, match=match):
        LocalAttention(**kwargs)


def test_call_errors():
    x = np.zeros((2, 4, 8), "float32")
    layer = LocalAttention(2, 4, window_size=1)
    layer(x, x)
    with pytest.raises(ValueError, match="cache"):
        layer(x, x, cache=np.zeros((2, 2, 4, 2, 4), "float32"), cache_index=0)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 4, 5), bool))


@pytest.mark.large
def test_long_sequence_runs_without_quadratic_memory():
    # An (N, N) float32 matrix per head would need 2 heads x 1 GiB here.
    n = 16384
    x = keras.random.normal((1, n, 16), seed=0)
    layer = LocalAttention(2, 8, window_size=64, causal=True)
    out = keras.ops.convert_to_numpy(layer(x, x))
    assert out.shape == (1, n, 16)
    assert np.all(np.isfinite(out))
