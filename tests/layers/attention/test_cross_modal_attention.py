import contextlib

import keras
import numpy as np
import pytest

from keras_attention.layers import CrossModalAttention
from keras_attention.testing import (
    assert_all_close,
    run_attention_layer_test,
    run_layer_test,
)


# The shared checks train the first (A-side) output only, so the B -> A weights get
# no gradients, and Keras says so (as the class docstring warns), except on JAX,
# where a weight that is not used gets a zero gradient.
def _untrained_b_to_a():
    if keras.backend.backend() == "jax":
        return contextlib.nullcontext()
    return pytest.warns(UserWarning, match="Gradients do not exist for variables")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 2, "key_dim": 4},
        {"num_heads": 3, "key_dim": 2, "value_dim": 5, "use_bias": False},
    ],
    ids=["default", "value-dim-nobias"],
)
def test_layer_checks(kwargs):
    with _untrained_b_to_a():
        run_attention_layer_test(CrossModalAttention, kwargs, value_shape=(2, 5, 12))


def test_layer_checks_return_both():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 6, 16)).astype("float32")
    b = rng.normal(size=(2, 5, 12)).astype("float32")
    a_pad = np.ones((2, 6), bool)
    a_pad[1, -2:] = False
    b_pad = np.ones((2, 5), bool)
    b_pad[0, -1] = False
    with _untrained_b_to_a():
        outputs = run_layer_test(
            CrossModalAttention, {"num_heads": 2, "key_dim": 4}, [a, b],
            {"query_mask": a_pad, "value_mask": b_pad, "return_both": True},
            expected_output_shape=(2, 6, 16),
        )
    a_out, b_out = outputs
    assert tuple(b_out.shape) == (2, 5, 12)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(b_out)[0, -1], 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a_out)[1, -2:], 0.0)


def _randomize(layer, rng, scale=0.5):
    weights = {}
    for w in layer.weights:
        value = (rng.normal(size=w.shape) * scale).astype("float32")
        w.assign(value)
        weights[w.path.split("/", 1)[1]] = value
    return weights


def _numpy_mha(x, ctx, w, prefix, mask):
    """Reference multi-head attention; `mask (B, T, S)`, empty rows give zeros."""
    q = np.einsum("btf,fnh->btnh", x, w[prefix + "query/kernel"]) + w[prefix + "query/bias"]
    k = np.einsum("bsf,fnh->bsnh", ctx, w[prefix + "key/kernel"]) + w[prefix + "key/bias"]
    v = np.einsum("bsf,fnv->bsnv", ctx, w[prefix + "value/kernel"]) + w[prefix + "value/bias"]
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -1e30)
    e = np.exp(logits - logits.max(-1, keepdims=True)) * mask[:, None]
    denom = e.sum(-1, keepdims=True)
    weights = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    out = np.einsum("bnts,bsnv->btnv", weights, v)
    out = np.einsum("btnv,nvo->bto", out, w[prefix + "attention_output/kernel"])
    out = out + w[prefix + "attention_output/bias"]
    out = out * mask.any(-1)[..., None]  # rows with no allowed key are zeros
    return out, weights


@pytest.mark.parametrize("causal", [False, True])
def test_golden_both_directions_against_numpy(causal):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 4, 6)).astype("float32")
    b = rng.normal(size=(2, 5, 3)).astype("float32")
    layer = CrossModalAttention(2, 3)
    layer(a, b)
    w = _randomize(layer, rng)
    a_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    b_mask = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 0, 0]], bool)
    att = rng.random((2, 4, 5)) > 0.25
    (a_out, b_out), (a_scores, b_scores) = layer(
        a, b, query_mask=a_mask, value_mask=b_mask, attention_mask=att,
        use_causal_mask=causal, return_both=True, return_attention_scores=True,
    )
    full = a_mask[:, :, None] & b_mask[:, None, :] & att  # (B, T, S)
    if causal:
        full &= np.arange(5)[None, :] <= np.arange(4)[:, None] + 1
    ref_a, ref_as = _numpy_mha(a, b, w, "a_to_b/", full)
    ref_b, ref_bs = _numpy_mha(b, a, w, "b_to_a/", full.transpose(0, 2, 1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a_out), ref_a, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b_out), ref_b, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a_scores), ref_as, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b_scores), ref_bs, atol=1e-5)
    assert tuple(a_scores.shape) == (2, 2, 4, 5)
    assert tuple(b_scores.shape) == (2, 2, 5, 4)
    # Every call signature gives the same numbers in its own fixed structure.
    kw = {"query_mask": a_mask, "value_mask": b_mask, "attention_mask": att,
          "use_causal_mask": causal}
    assert_all_close(layer(a, b, **kw), a_out, 1e-5, 1e-5, "default")
    assert_all_close(layer(a, b, return_attention_scores=True, **kw), (a_out, a_scores),
                     1e-5, 1e-5, "scores")
    assert_all_close(layer(a, b, return_both=True, **kw), (a_out, b_out), 1e-5, 1e-5,
                     "both")


def test_fully_masked_rows_on_both_sides_are_zero():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 4, 6)).astype("float32")
    b = rng.normal(size=(2, 3, 8)).astype("float32")
    att = np.ones((2, 4, 3), bool)
    att[0, :, 1] = False  # B position 1 of the first example may attend nothing
    att[0, 2, :] = False  # A position 2 of the first example may attend nothing
    att[1] = False  # nothing at all in the second example
    layer = CrossModalAttention(2, 4)
    (a_out, b_out), (a_s, b_s) = layer(a, b, attention_mask=att, return_both=True,
                                       return_attention_scores=True)
    a_out, b_out = keras.ops.convert_to_numpy(a_out), keras.ops.convert_to_numpy(b_out)
    for x in (a_out, b_out, keras.ops.convert_to_numpy(a_s), keras.ops.convert_to_numpy(b_s)):
        assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(a_out[0, 2], 0.0)
    np.testing.assert_array_equal(b_out[0, 1], 0.0)
    np.testing.assert_array_equal(a_out[1], 0.0)
    np.testing.assert_array_equal(b_out[1], 0.0)
    assert np.all(np.abs(b_out[0, [0, 2]]) > 0)


def test_implicit_masks_reach_both_directions():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 4, 6)).astype("float32")
    b = rng.normal(size=(2, 5, 3)).astype("float32")
    a[1, -1] = 0.0
    b[0, -2:] = 0.0
    a_mask, b_mask = np.any(a != 0, -1), np.any(b != 0, -1)
    layer = CrossModalAttention(2, 4)
    in_a, in_b = keras.Input((4, 6)), keras.Input((5, 3))
    outputs = layer(keras.layers.Masking()(in_a), keras.layers.Masking()(in_b),
                    return_both=True)
    model = keras.Model([in_a, in_b], list(outputs))
    explicit = layer(a, b, query_mask=a_mask, value_mask=b_mask, return_both=True)
    assert_all_close(model([a, b]), list(explicit), 1e-5, 1e-5, "implicit masks")


def test_key_is_used_by_the_a_to_b_direction_only():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2, 4, 6)).astype("float32")
    b = rng.normal(size=(2, 5, 3)).astype("float32")
    k = rng.normal(size=(2, 5, 7)).astype("float32")
    layer = CrossModalAttention(2, 4)
    a_out, b_out = layer(a, b, key=k, return_both=True)
    ref = CrossModalAttention(2, 4)
    ref(a, b, key=k)
    ref.set_weights(layer.get_weights())
    k2 = k + rng.normal(size=k.shape).astype("float32")
    a_ref, b_ref = ref(a, b, key=k2, return_both=True)
    assert not np.allclose(keras.ops.convert_to_numpy(a_out), keras.ops.convert_to_numpy(a_ref))
    assert_all_close(b_out, b_ref, 1e-6, 1e-6, "b side ignores key")


def test_dropout_is_seeded_and_only_in_training():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(2, 6, 8)).astype("float32")
    b = rng.normal(size=(2, 5, 4)).astype("float32")
    layer = CrossModalAttention(2, 4, dropout=0.5, seed=3)
    inference = layer(a, b, return_both=True)
    assert_all_close(layer(a, b, return_both=True, training=False), inference, 1e-6, 1e-6,
                     "inference")
    trained = layer(a, b, return_both=True, training=True)
    for got, base in zip(trained, inference):
        got = keras.ops.convert_to_numpy(got)
        assert np.all(np.isfinite(got))
        assert not np.allclose(got, keras.ops.convert_to_numpy(base))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0, "key_dim": 4}, "num_heads"),
        ({"num_heads": 2, "key_dim": 1.5}, "key_dim"),
        ({"num_heads": 2, "key_dim": 4, "value_dim": 0}, "value_dim"),
        ({"num_heads": 2, "key_dim": 4, "dropout": 1.0}, "dropout"),
        ({"num_heads": 2, "key_dim": 4, "seed": "abc"}, "seed"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CrossModalAttention(**kwargs)


def test_call_errors():
    a = np.zeros((2, 4, 6), "float32")
    b = np.zeros((2, 5, 3), "float32")
    layer = CrossModalAttention(2, 4)
    with pytest.raises(ValueError, match="key"):
        layer(a, b, key=np.zeros((2, 3, 3), "float32"))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(a, b, attention_mask=np.ones((2, 5, 4), bool), return_both=True)
    with pytest.raises(ValueError, match="value_mask"):
        layer(a, b, value_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="feature dimension"):
        CrossModalAttention(2, 4)(keras.Input((4, 6)), keras.Input((5, None)))
