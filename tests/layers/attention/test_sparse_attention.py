import keras
import numpy as np
import pytest

from keras_attention import masks
from keras_attention.layers import MultiHeadAttention, SparseAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _largest_intermediate(fn, *args):
    """Element count of the largest array in the JAX trace of `fn(*args)`."""
    import jax

    def walk(jaxpr):
        sizes = [int(np.prod(v.aval.shape)) for v in jaxpr.invars + jaxpr.constvars]
        for eqn in jaxpr.eqns:
            sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars]
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    sizes.append(walk(inner))
        return max(sizes)

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "pattern": "strided",
         "block_size": 4},
        {"num_heads": 2, "key_dim": 4, "pattern": "fixed", "block_size": 4,
         "num_summary": 2, "causal": False},
    ],
    ids=["strided-gqa", "fixed-bidirectional"],
)
def test_layer_checks(kwargs):
    # T = 13 is not a multiple of the block size: the internal padding is exercised.
    run_attention_layer_test(SparseAttention, kwargs, query_shape=(2, 13, 8), cross=False)


def _reference_pattern(length, pattern, l, c, causal):
    """The patterns of Child et al. 2019, entry by entry."""
    allowed = np.zeros((length, length), bool)
    for i in range(length):
        for j in range(length):
            if pattern == "strided":
                local = 0 <= i - j < l if causal else abs(i - j) < l
                allowed[i, j] = local or (i - j) % l == 0
            else:
                allowed[i, j] = j // l == i // l or j % l >= l - c
            if causal and j > i:
                allowed[i, j] = False
    return allowed


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length, l, c", [(13, 4, 1), (12, 3, 2), (5, 8, 8), (7, 1, 1)])
def test_pattern_masks_match_the_paper(length, l, c, causal):
    np.testing.assert_array_equal(
        _np(masks.strided_sparse_mask(length, l, causal)),
        _reference_pattern(length, "strided", l, c, causal),
    )
    np.testing.assert_array_equal(
        _np(masks.fixed_sparse_mask(length, l, c, causal)),
        _reference_pattern(length, "fixed", l, c, causal),
    )


def _paired(kwargs, x):
    """The sparse layer and a dense MultiHeadAttention sharing its weights."""
    layer = SparseAttention(**kwargs)
    dense = MultiHeadAttention(
        kwargs["num_heads"], kwargs["key_dim"],
        num_key_value_heads=kwargs.get("num_key_value_heads"),
        position_encoding=kwargs.get("position_encoding"), implementation="full",
    )
    layer(x, x)
    dense(x, x)
    dense.set_weights(layer.get_weights())
    return layer, dense


def _pattern(kwargs, length, causal):
    if kwargs.get("pattern", "strided") == "strided":
        return _np(masks.strided_sparse_mask(length, kwargs["block_size"], causal))
    return _np(masks.fixed_sparse_mask(length, kwargs["block_size"],
                                       kwargs.get("num_summary", 1), causal))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "kwargs, length",
    [
        ({"pattern": "strided", "block_size": 4}, 13),
        ({"pattern": "strided", "block_size": 3, "num_key_value_heads": 1}, 12),
        ({"pattern": "strided", "block_size": 1}, 7),
        ({"pattern": "fixed", "block_size": 4, "num_summary": 2}, 13),
        ({"pattern": "fixed", "block_size": 3}, 12),
        ({"pattern": "fixed", "block_size": 16, "num_summary": 16}, 13),
        ({"pattern": "strided", "block_size": 4, "position_encoding": "rotary"}, 13),
    ],
    ids=["strided4", "strided3-mqa", "strided1", "fixed4-c2", "fixed3", "fixed-dense",
         "rotary"],
)
def test_equals_dense_attention_with_the_pattern_mask(kwargs, causal, length):
    rng = np.random.default_rng(length)
    kwargs = {"num_heads": 2, "key_dim": 4, "causal": causal, **kwargs}
    x = rng.normal(size=(2, length, 8)).astype("float32")
    layer, dense = _paired(kwargs, x)
    pattern = np.broadcast_to(_pattern(kwargs, length, causal), (2, length, length))
    pad = np.ones((2, length), bool)
    pad[0, 0] = False
    pad[1, -3:] = False
    user_mask = rng.random((2, length, length)) > 0.3
    cases = [
        ({}, {}),
        ({"query_mask": pad, "value_mask": pad}, {"query_mask": pad, "value_mask": pad}),
        ({"key_mask": pad}, {"key_mask": pad}),
        ({"attention_mask": user_mask, "query_mask": pad},
         {"attention_mask": user_mask & pattern, "query_mask": pad}),
    ]
    for ours_kw, dense_kw in cases:
        dense_kw = {"attention_mask": pattern, **dense_kw}
        expected, expected_scores = dense(x, x, return_attention_scores=True, **dense_kw)
        assert_all_close(layer(x, x, **ours_kw), expected, 1e-5, 1e-5, str(list(ours_kw)))
        out, scores = layer(x, x, return_attention_scores=True, **ours_kw)
        assert_all_close(out, expected, 1e-5, 1e-5, "scores path")
        assert_all_close(scores, expected_scores, 1e-6, 1e-6, "scores")


def _numpy_sparse(x, weights, num_heads, allowed):
    """NumPy multi-head attention restricted to `allowed (T, T)`."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btf,fnh->btnh", x, wq) + bq
    k = np.einsum("bsf,fnh->bsnh", x, wk) + bk
    v = np.einsum("bsf,fnv->bsnv", x, wv) + bv
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnv->btnv", w, v)
    return np.einsum("btnv,nvo->bto", out, wo) + bo


@pytest.mark.parametrize("pattern", ["strided", "fixed"])
def test_golden_against_numpy(pattern):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 11, 6)).astype("float32")
    layer = SparseAttention(2, 3, pattern=pattern, block_size=3, num_summary=2)
    layer(x, x)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights]
    layer.set_weights(weights)
    allowed = _reference_pattern(11, pattern, 3, 2, causal=True)
    np.testing.assert_allclose(_np(layer(x, x)), _numpy_sparse(x, weights, 2, allowed),
                               atol=1e-4)


@pytest.mark.parametrize("pattern", ["strided", "fixed"])
def test_use_causal_mask_makes_a_bidirectional_layer_causal(pattern):
    x = np.random.default_rng(8).normal(size=(2, 10, 8)).astype("float32")
    bidirectional = SparseAttention(2, 4, pattern=pattern, block_size=3, causal=False)
    causal = SparseAttention(2, 4, pattern=pattern, block_size=3)
    bidirectional(x, x)
    causal(x, x)
    causal.set_weights(bidirectional.get_weights())
    assert_all_close(bidirectional(x, x, use_causal_mask=True), causal(x, x), 1e-6, 1e-6,
                     "use_causal_mask")
    assert not np.allclose(_np(bidirectional(x, x)), _np(causal(x, x)))


def test_dynamic_sequence_length():
    rng = np.random.default_rng(9)
    layer = SparseAttention(2, 4, pattern="strided", block_size=4)
    inp = keras.Input(shape=(None, 8))
    model = keras.Model(inp, layer(inp, inp))
    for length in (5, 13):
        x = rng.normal(size=(2, length, 8)).astype("float32")
        assert_all_close(model(x), layer(x, x), 1e-6, 1e-6, f"length {length}")


def test_gradients_are_finite_with_padding():
    x = np.random.default_rng(10).normal(size=(2, 9, 8)).astype("float32")
    pad = np.ones((2, 9), bool)
    pad[1, :4] = False  # early keys padded: some causal rows see nothing
    layer = SparseAttention(2, 4, pattern="fixed", block_size=4)
    inp = keras.Input(shape=(9, 8))
    mask_in = keras.Input(shape=(9,), dtype="bool")
    model = keras.Model([inp, mask_in], layer(inp, inp, query_mask=mask_in,
                                               value_mask=mask_in))
    model.compile(optimizer="adam", loss="mse")
    model.fit([x, pad], np.zeros_like(x), epochs=2, verbose=0)
    for w in layer.weights:
        assert np.all(np.isfinite(_np(w)))



def test_dropout_only_in_training():
    x = np.random.default_rng(12).normal(size=(2, 10, 8)).astype("float32")
    layer = SparseAttention(2, 4, block_size=3, dropout=0.5, seed=7)
    inference = _np(layer(x, x))
    np.testing.assert_allclose(_np(layer(x, x, training=False)), inference, atol=1e-6)
    trained = _np(layer(x, x, training=True))
    assert np.all(np.isfinite(trained))
    assert not np.allclose(trained, inference)


@pytest.mark.parametrize("pattern", ["strided", "fixed"])
@pytest.mark.parametrize("causal", [True, False])
def test_no_quadratic_tensor_without_attention_mask(pattern, causal):
    if keras.backend.backend() != "jax":
        pytest.skip("inspects the JAX trace")
    length = 1024
    x = np.random.default_rng(13).normal(size=(1, length, 8)).astype("float32")
    pad = np.ones((1, length), bool)
    pad[0, -5:] = False
    layer = SparseAttention(1, 4, pattern=pattern, block_size=16, causal=causal)
    layer(x, x)
    largest = _largest_intermediate(
        lambda x, m: layer(x, x, query_mask=m, value_mask=m, use_causal_mask=causal), x, pad
    )
    assert largest < length * length // 8, largest  # a dense (T, T) would be 8x

@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pattern": "dilated"}, "pattern"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 2.5}, "block_size"),
        ({"num_summary": 0}, "num_summary"),
        ({"block_size": 4, "num_summary": 5}, "num_summary"),
        ({"num_heads": 0}, "num_heads"),
        ({"dropout": 1.0}, "dropout"),
        ({"position_encoding": "alibi"}, "position_encoding"),
        ({"implementation": "full"}, "implementation"),
        ({"query_chunk_size": 8}, "query_chunk_size"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SparseAttention(**{"num_heads": 2, "key_dim": 4, **kwargs})


def test_call_errors():
    layer = SparseAttention(2, 4, block_size=4)
    x = np.zeros((2, 8, 8), "float32")
    with pytest.raises(ValueError, match="value"):
        layer(x, np.zeros((2, 6, 8), "float32"))
    with pytest.raises(ValueError, match="key"):
        layer(x, x, key=np.zeros((2, 6, 8), "float32"))
    with pytest.raises(ValueError, match="query_mask"):
        layer(x, x, query_mask=np.ones((2, 7), bool))
    with pytest.raises(TypeError, match="cache"):
        layer(x, x, cache=np.zeros((2, 2, 8, 2, 4), "float32"), cache_index=0)


def test_config_keeps_pattern_arguments():
    layer = SparseAttention(2, 4, pattern="fixed", block_size=5, num_summary=3, causal=False)
    config = layer.get_config()
    assert {k: config[k] for k in ("pattern", "block_size", "num_summary", "causal")} == {
        "pattern": "fixed", "block_size": 5, "num_summary": 3, "causal": False}
    assert "implementation" not in config


@pytest.mark.large
@pytest.mark.parametrize("pattern, causal", [("strided", True), ("strided", False),
                                             ("fixed", True), ("fixed", False)])
def test_long_sequence(pattern, causal):
    x = np.random.default_rng(11).normal(size=(1, 8192, 16)).astype("float32")
    layer = SparseAttention(2, 8, pattern=pattern, causal=causal)  # block_size=16
    pad = np.ones((1, 8192), bool)
    pad[0, -100:] = False
    out = _np(layer(x, x, query_mask=pad, value_mask=pad))
    assert out.shape == (1, 8192, 16)
    assert np.all(np.isfinite(out))
