import keras
import numpy as np
import pytest

from keras_attention.layers import AttentionPooling
from keras_attention.testing import assert_all_close, check_training_step, run_layer_test


def _inputs(seed=0, shape=(2, 6, 8)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _pad():
    pad = np.ones((2, 6), bool)
    pad[1, -2:] = False
    return pad


@pytest.mark.parametrize(
    "kwargs, call_kwargs, expected",
    [
        ({"num_heads": 2, "num_queries": 3, "key_dim": 3, "output_dim": 5},
         {"mask": True, "return_attention_scores": True}, (2, 3, 5)),
        ({"num_heads": 4, "value_dim": 2, "use_bias": False, "dropout": 0.1, "seed": 1},
         {"mask": True}, (2, 8)),
    ],
    ids=["queries-scores", "one-query-dropout"],
)
def test_layer_checks(kwargs, call_kwargs, expected):
    call_kwargs = dict(call_kwargs)
    if call_kwargs.get("mask"):
        call_kwargs["mask"] = _pad()
    out = run_layer_test(AttentionPooling, kwargs, [_inputs()], call_kwargs,
                         expected_output_shape=expected)
    if call_kwargs.get("return_attention_scores"):
        n, q = kwargs.get("num_heads", 1), kwargs.get("num_queries", 1)
        assert tuple(out[1].shape) == (2, n, q, 6)


def test_default_is_one_head_one_query():
    layer = AttentionPooling()
    out, scores = layer(_inputs(), return_attention_scores=True)
    assert tuple(out.shape) == (2, 8)
    assert tuple(scores.shape) == (2, 1, 1, 6)
    assert layer.get_config()["num_heads"] == 1


def _randomize(layer, rng):
    weights = {}
    for w in layer.weights:
        value = rng.normal(size=w.shape).astype("float32") * 0.5
        w.assign(value)
        weights[w.path.split("/", 1)[1]] = value
    return weights


@pytest.mark.parametrize("num_queries, value_dim", [(1, None), (2, 2)])
def test_golden_against_numpy(num_queries, value_dim):
    rng = np.random.default_rng(1)
    x, pad = _inputs(1), _pad()
    layer = AttentionPooling(num_heads=2, key_dim=3, num_queries=num_queries,
                             value_dim=value_dim)
    layer(x)
    w = _randomize(layer, rng)
    out, scores = layer(x, mask=pad, return_attention_scores=True)

    p = "attention/"
    queries = np.broadcast_to(w["queries"], (2,) + w["queries"].shape)  # (B, Q, F)
    q = np.einsum("bqf,fnh->bqnh", queries, w[p + "query/kernel"]) + w[p + "query/bias"]
    k = np.einsum("btf,fnh->btnh", x, w[p + "key/kernel"]) + w[p + "key/bias"]
    v = np.einsum("btf,fnv->btnv", x, w[p + "value/kernel"]) + w[p + "value/bias"]
    logits = np.einsum("bqnh,btnh->bnqt", q, k) / np.sqrt(3)
    logits = np.where(pad[:, None, None, :], logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)
    ref = np.einsum("bnqt,btnv->bqnv", weights, v)
    ref = np.einsum("bqnv,nvo->bqo", ref, w[p + "attention_output/kernel"])
    ref = ref + w[p + "attention_output/bias"]
    if num_queries == 1:
        ref = ref[:, 0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), weights, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, mask=pad)), ref, atol=1e-5)


def test_padding_has_no_influence_and_empty_sequences_give_zeros():
    x, pad = _inputs(2), _pad()
    layer = AttentionPooling(num_heads=2)
    base, scores = layer(x, mask=pad, return_attention_scores=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scores)[1, :, :, -2:], 0.0)
    x2 = x.copy()
    x2[~pad] += 10.0
    assert_all_close(layer(x2, mask=pad), base, 1e-5, 1e-5, "padding leaked")
    # The same sequence without its padding gives the same vector.
    short = layer(x[1:, :4])
    assert_all_close(short, keras.ops.convert_to_numpy(base)[1:], 1e-5, 1e-5, "trimmed")
    empty = pad.copy()
    empty[0] = False
    out = keras.ops.convert_to_numpy(layer(x, mask=empty))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0], 0.0)
    check_training_step(AttentionPooling, {"num_heads": 2}, [x], {"mask": empty})


def test_implicit_mask_from_embedding_equals_explicit():
    tokens = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 0, 0]], "int32")
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    layer = AttentionPooling(num_heads=2, num_queries=2)
    inp = keras.Input((6,), dtype="int32")
    model = keras.Model(inp, layer(embedding(inp)))
    explicit = layer(embedding(tokens), mask=tokens != 0)
    assert_all_close(model(tokens), explicit, 1e-6, 1e-6, "implicit mask")
    assert getattr(model.outputs[0], "_keras_mask", None) is None
    eager = layer(embedding(tokens))  # the implicit mask also reaches an eager call
    assert_all_close(eager, explicit, 1e-6, 1e-6, "eager implicit mask")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"key_dim": 0}, "key_dim"),
        ({"num_queries": 0}, "num_queries"),
        ({"num_queries": 1.0}, "num_queries"),
        ({"value_dim": -2}, "value_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"output_dim": 0}, "output_dim"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AttentionPooling(**kwargs)


def test_call_errors():
    with pytest.raises(ValueError, match="inputs"):
        AttentionPooling()(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="num_heads"):
        AttentionPooling(num_heads=3)(_inputs())
    with pytest.raises(ValueError, match="feature dimension"):
        AttentionPooling()(keras.Input((6, None)))
    layer = AttentionPooling(num_heads=2)
    layer(_inputs())
    with pytest.raises(ValueError, match="mask"):
        layer(_inputs(), mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="mask"):
        layer(_inputs(), mask=np.ones((2, 6, 6), bool))
