import os
import tempfile

import keras
import numpy as np
import pytest

from keras_attention import masks
from keras_attention.layers import BlockSparseAttention, MultiHeadAttention
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


def test_layer_checks():
    # T = 13 is not a multiple of the block size: the internal padding is exercised.
    kwargs = {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "block_size": 2,
              "num_window_blocks": 3, "num_global_blocks": 1, "num_random_blocks": 2,
              "seed": 3}
    run_attention_layer_test(BlockSparseAttention, kwargs, query_shape=(2, 13, 8),
                             cross=False)


CONFIGS = [
    {"block_size": 2, "num_window_blocks": 3, "num_global_blocks": 1, "num_random_blocks": 2},
    {"block_size": 3, "num_window_blocks": 1, "num_global_blocks": 2, "num_random_blocks": 1},
    {"block_size": 2, "num_window_blocks": 5, "num_global_blocks": 0, "num_random_blocks": 3},
    {"block_size": 4, "num_window_blocks": 3, "num_global_blocks": 5, "num_random_blocks": 2},
    {"block_size": 1, "num_window_blocks": 3, "num_global_blocks": 1, "num_random_blocks": 0},
]
CONFIG_IDS = ["bigbird", "global2", "no-global", "all-global", "tokens"]
LENGTHS = [16, 13, 13, 13, 9]  # 16 with block_size 2: no padding


def _reference_mask(length, block_size, num_window_blocks, num_global_blocks,
                    num_random_blocks, seed, causal):
    """The pattern entry by entry, from the shared random-block table."""
    num_blocks = -(-length // block_size)
    table = masks.block_sparse_random_blocks(num_blocks, num_window_blocks,
                                             num_global_blocks, num_random_blocks, seed,
                                             causal)
    allowed = np.zeros((length, length), bool)
    for i in range(length):
        for j in range(length):
            qb, kb = i // block_size, j // block_size
            allowed[i, j] = (abs(qb - kb) <= num_window_blocks // 2
                             or qb < num_global_blocks or kb < num_global_blocks
                             or kb in table[qb])
            if causal and j > i:
                allowed[i, j] = False
    return allowed


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_pattern_mask_matches_definition(config, causal):
    for length in (13, 16):
        np.testing.assert_array_equal(
            _np(masks.block_sparse_mask(length, seed=4, causal=causal, **config)),
            _reference_mask(length, seed=4, causal=causal, **config),
        )


@pytest.mark.parametrize("causal", [False, True])
def test_random_blocks_follow_the_rules(causal):
    num_blocks, window, num_global, num_random = 20, 3, 2, 3
    table = masks.block_sparse_random_blocks(num_blocks, window, num_global, num_random,
                                             seed=1, causal=causal)
    assert table.shape == (num_blocks, num_random)
    assert np.all(table[:num_global] == -1)
    for row in range(num_global, num_blocks):
        chosen = table[row][table[row] >= 0]
        candidates = [b for b in range(num_global, num_blocks)
                      if abs(b - row) > window // 2 and (not causal or b < row)]
        assert len(chosen) == min(num_random, len(candidates))
        assert len(set(chosen.tolist())) == len(chosen)  # without replacement
        assert set(chosen.tolist()) <= set(candidates)  # not global, not window, past
    again = masks.block_sparse_random_blocks(num_blocks, window, num_global, num_random,
                                             seed=1, causal=causal)
    np.testing.assert_array_equal(table, again)
    other = masks.block_sparse_random_blocks(num_blocks, window, num_global, num_random,
                                             seed=2, causal=causal)
    assert not np.array_equal(table, other)


def _paired(kwargs, x):
    layer = BlockSparseAttention(**kwargs)
    dense = MultiHeadAttention(kwargs["num_heads"], kwargs["key_dim"],
                               num_key_value_heads=kwargs.get("num_key_value_heads"),
                               position_encoding=kwargs.get("position_encoding"),
                               implementation="full")
    layer(x, x)
    dense(x, x)
    dense.set_weights(layer.get_weights())
    return layer, dense


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("config, length", list(zip(CONFIGS, LENGTHS)), ids=CONFIG_IDS)
def test_equals_dense_attention_with_the_pattern_mask(config, causal, length):
    rng = np.random.default_rng(length)
    kwargs = {"num_heads": 2, "key_dim": 4, "seed": 5, **config}
    x = rng.normal(size=(2, length, 8)).astype("float32")
    layer, dense = _paired(kwargs, x)
    pattern = _np(masks.block_sparse_mask(length, seed=5, causal=causal, **config))
    pattern = np.broadcast_to(pattern, (2, length, length))
    pad = np.ones((2, length), bool)
    pad[0, 0] = False
    pad[1, -3:] = False
    user_mask = rng.random((2, length, length)) > 0.3
    cases = [
        ({}, {}),
        ({"query_mask": pad, "value_mask": pad}, {"query_mask": pad, "value_mask": pad}),
        ({"attention_mask": user_mask, "value_mask": pad},
         {"attention_mask": user_mask & pattern, "value_mask": pad}),
    ]
    for ours_kw, dense_kw in cases:
        dense_kw = {"attention_mask": pattern, **dense_kw}
        expected, expected_scores = dense(x, x, return_attention_scores=True, **dense_kw)
        got = layer(x, x, use_causal_mask=causal, **ours_kw)
        assert_all_close(got, expected, 1e-5, 1e-5, str(list(ours_kw)))
        out, scores = layer(x, x, use_causal_mask=causal, return_attention_scores=True,
                            **ours_kw)
        assert_all_close(out, expected, 1e-5, 1e-5, "scores path")
        assert_all_close(scores, expected_scores, 1e-6, 1e-6, "scores")


def test_gqa_and_rotary_equal_dense_attention():
    x = np.random.default_rng(6).normal(size=(2, 14, 8)).astype("float32")
    kwargs = {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2,
              "position_encoding": "rotary", **CONFIGS[0]}
    layer, dense = _paired(kwargs, x)
    pattern = _np(masks.block_sparse_mask(14, seed=0, **CONFIGS[0]))
    assert_all_close(layer(x, x), dense(x, x, attention_mask=np.broadcast_to(
        pattern, (2, 14, 14))), 1e-5, 1e-5, "gqa + rotary")


def _numpy_attention(x, weights, allowed):
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btf,fnh->btnh", x, wq) + bq
    k = np.einsum("bsf,fnh->bsnh", x, wk) + bk
    v = np.einsum("bsf,fnv->bsnv", x, wv) + bv
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("btnv,nvo->bto", np.einsum("bnts,bsnv->btnv", w, v), wo) + bo


def test_golden_against_numpy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 15, 6)).astype("float32")
    config = {"block_size": 2, "num_window_blocks": 3, "num_global_blocks": 1,
              "num_random_blocks": 2}
    layer = BlockSparseAttention(2, 3, seed=11, **config)
    layer(x, x)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights]
    layer.set_weights(weights)
    allowed = _reference_mask(15, seed=11, causal=False, **config)
    np.testing.assert_allclose(_np(layer(x, x)), _numpy_attention(x, weights, allowed),
                               atol=1e-4)


def test_seed_fixes_the_random_blocks():
    x = np.random.default_rng(8).normal(size=(2, 16, 8)).astype("float32")
    config = {"num_heads": 2, "key_dim": 4, "block_size": 1, "num_window_blocks": 1,
              "num_global_blocks": 0, "num_random_blocks": 3}
    first, second, other = (BlockSparseAttention(seed=s, **config) for s in (1, 1, 2))
    for layer in (first, second, other):
        layer(x, x)
        layer.set_weights(first.get_weights())
    assert_all_close(first(x, x), second(x, x), 0.0, 0.0, "same seed")
    assert not np.allclose(_np(first(x, x)), _np(other(x, x)), atol=1e-4)
    assert not np.array_equal(_np(masks.block_sparse_mask(16, 1, 1, 0, 3, seed=1)),
                              _np(masks.block_sparse_mask(16, 1, 1, 0, 3, seed=2)))


def test_saved_model_reproduces_the_pattern():
    x = np.random.default_rng(9).normal(size=(2, 16, 8)).astype("float32")
    layer = BlockSparseAttention(2, 4, block_size=2, num_random_blocks=2, seed=17)
    inp = keras.Input(shape=(16, 8))
    model = keras.Model(inp, layer(inp, inp))
    expected = _np(model(x))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    revived = loaded.layers[-1]
    assert isinstance(revived, BlockSparseAttention) and revived.seed == 17
    np.testing.assert_allclose(_np(loaded(x)), expected, atol=1e-6)



def test_dropout_only_in_training():
    x = np.random.default_rng(12).normal(size=(2, 10, 8)).astype("float32")
    layer = BlockSparseAttention(2, 4, block_size=2, dropout=0.5, seed=7)
    inference = _np(layer(x, x))
    np.testing.assert_allclose(_np(layer(x, x, training=False)), inference, atol=1e-6)
    trained = _np(layer(x, x, training=True))
    assert np.all(np.isfinite(trained))
    assert not np.allclose(trained, inference)


@pytest.mark.parametrize("causal", [False, True])
def test_no_quadratic_tensor_without_attention_mask(causal):
    if keras.backend.backend() != "jax":
        pytest.skip("inspects the JAX trace")
    length = 1024
    x = np.random.default_rng(13).normal(size=(1, length, 8)).astype("float32")
    pad = np.ones((1, length), bool)
    pad[0, -5:] = False
    layer = BlockSparseAttention(1, 4, block_size=16)
    layer(x, x)
    largest = _largest_intermediate(
        lambda x, m: layer(x, x, query_mask=m, value_mask=m, use_causal_mask=causal), x, pad
    )
    assert largest < length * length // 8, largest  # a dense (T, T) would be 8x

@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_size": 0}, "block_size"),
        ({"num_window_blocks": 2}, "num_window_blocks"),
        ({"num_window_blocks": 0}, "num_window_blocks"),
        ({"num_global_blocks": -1}, "num_global_blocks"),
        ({"num_random_blocks": 1.5}, "num_random_blocks"),
        ({"seed": -3}, "seed"),
        ({"seed": None}, "seed"),
        ({"num_heads": 3, "num_key_value_heads": 2}, "num_key_value_heads"),
        ({"position_encoding": "t5"}, "position_encoding"),
        ({"implementation": "chunked"}, "implementation"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BlockSparseAttention(**{"num_heads": 2, "key_dim": 4, **kwargs})


def test_mask_function_errors():
    with pytest.raises(ValueError, match="num_window_blocks"):
        masks.block_sparse_mask(8, 2, 4, 1, 1, seed=0)
    with pytest.raises(ValueError, match="length"):
        masks.block_sparse_mask(0, 2, 3, 1, 1, seed=0)
    with pytest.raises(ValueError, match="num_summary"):
        masks.fixed_sparse_mask(8, 2, num_summary=3)
    with pytest.raises(ValueError, match="block_size"):
        masks.strided_sparse_mask(8, 0)


def test_call_errors():
    layer = BlockSparseAttention(2, 4, block_size=2)
    x = np.zeros((2, 8, 8), "float32")
    with pytest.raises(ValueError, match="value"):
        layer(x, np.zeros((2, 6, 8), "float32"))
    with pytest.raises(ValueError, match="value_mask"):
        layer(x, x, value_mask=np.ones((2, 6), bool))
    inp = keras.Input(shape=(None, 8))
    with pytest.raises(ValueError, match="static"):
        BlockSparseAttention(2, 4)(inp, inp)


@pytest.mark.large
@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence(causal):
    x = np.random.default_rng(10).normal(size=(1, 8192, 16)).astype("float32")
    layer = BlockSparseAttention(2, 8)  # block_size=16
    pad = np.ones((1, 8192), bool)
    pad[0, -100:] = False
    out = _np(layer(x, x, query_mask=pad, value_mask=pad, use_causal_mask=causal))
    assert out.shape == (1, 8192, 16)
    assert np.all(np.isfinite(out))
