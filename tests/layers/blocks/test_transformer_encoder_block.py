import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.layers import MultiHeadAttention, TransformerEncoderBlock
from keras_attention.layers.attention.base_attention import BaseAttention
from keras_attention.ops import scaled_dot_product_attention
from keras_attention.testing import assert_all_close, run_layer_test
from tests.layers.blocks.numpy_reference import (
    attention,
    feed_forward,
    set_random_weights,
    sublayer,
)
from tests.layers.blocks.remat_check import assert_remat_step_matches

B, T, F = 2, 6, 8


def _inputs(seed=0):
    x = np.random.default_rng(seed).normal(size=(B, T, F)).astype("float32")
    pad = np.ones((B, T), bool)
    pad[-1, -2:] = False  # the last sequence has two padding positions
    return x, pad


@keras.saving.register_keras_serializable(package="keras_attention_tests")
class SingleHeadAttention(BaseAttention):
    """A minimal BaseAttention subclass: one head, no biases."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, query_shape, value_shape, key_shape=None):
        def dense(name, shape, units):
            layer = keras.layers.Dense(units, use_bias=False, dtype=self.dtype_policy,
                                       name=name)
            layer.build(shape)
            return layer

        key_shape = value_shape if key_shape is None else key_shape
        self._q = dense("q", query_shape, self.units)
        self._k = dense("k", key_shape, self.units)
        self._v = dense("v", value_shape, self.units)
        self._o = dense("o", tuple(query_shape[:-1]) + (self.units,), query_shape[-1])
        self.built = True

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores):
        q = ops.expand_dims(self._q(query), 2)  # (B, T, 1, U)
        k = ops.expand_dims(self._k(key), 2)  # (B, S, 1, U)
        v = ops.expand_dims(self._v(value), 2)  # (B, S, 1, U)
        mask = None if mask is None else mask[:, None]
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, causal=use_causal_mask,
                                              return_weights=True)
        return self._o(ops.squeeze(out, 2)), (w if return_attention_scores else None)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.mark.parametrize(
    "kwargs, call_kwargs",
    [
        ({"num_heads": 2, "intermediate_dim": 16}, {"padding_mask": True}),
        ({"num_heads": 2, "intermediate_dim": 12, "norm_first": False, "activation": "relu",
          "dropout": 0.1, "seed": 3}, {"use_causal_mask": True}),
        ({"num_heads": 4, "intermediate_dim": 16, "activation": "swiglu",
          "attention": keras.saving.serialize_keras_object(
              MultiHeadAttention(4, 3, num_key_value_heads=1))},
         {"attention_mask": True, "return_attention_scores": True}),
        ({"num_heads": 2, "intermediate_dim": 16, "dropout": 0.1, "seed": 1, "remat": True},
         {"padding_mask": True, "return_attention_scores": True}),
    ],
    ids=["pre-norm-padding", "post-norm-causal", "swiglu-gqa-config-scores", "remat"],
)
def test_layer_checks(kwargs, call_kwargs):
    x, pad = _inputs()
    call_kwargs = dict(call_kwargs)
    if call_kwargs.get("padding_mask") is True:
        call_kwargs["padding_mask"] = pad
    if call_kwargs.get("attention_mask") is True:
        call_kwargs["attention_mask"] = np.random.default_rng(1).random((B, T, T)) > 0.3
    out = run_layer_test(TransformerEncoderBlock, kwargs, [x], call_kwargs,
                         expected_output_shape=(B, T, F))
    if call_kwargs.get("return_attention_scores"):
        assert tuple(out[1].shape) == (B, kwargs["num_heads"], T, T)


def _numpy_encoder(x, w, num_heads, norm_first, activation, pad=None, epsilon=1e-5):
    mask = None if pad is None else pad[:, :, None] & pad[:, None, :]

    def attend(h):
        return attention(h, h, w, "self_attention/", num_heads, mask)[0]

    x = sublayer(x, w, "self_attention_norm", attend, norm_first, epsilon)
    return sublayer(x, w, "feed_forward_norm",
                    lambda h: feed_forward(h, w, "feed_forward/", activation),
                    norm_first, epsilon)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_golden_against_numpy(norm_first, activation):
    x, pad = _inputs(1)
    block = TransformerEncoderBlock(2, 10, norm_first=norm_first, activation=activation,
                                    layer_norm_epsilon=1e-3)
    block.build(x.shape)
    weights = set_random_weights(block, seed=4)
    out = ops.convert_to_numpy(block(x, padding_mask=pad))
    expected = _numpy_encoder(x, weights, 2, norm_first, activation, pad, epsilon=1e-3)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_tiny_block_with_hand_set_weights():
    """One head, F=2, identity projections, zero FFN: post-norm output by hand."""
    block = TransformerEncoderBlock(1, 2, norm_first=False, activation="relu")
    x = np.array([[[1.0, 0.0], [0.0, 3.0]]], "float32")
    block.build(x.shape)
    for w in block.weights:
        name = w.path.split("/", 1)[1]
        if name.endswith("kernel") and name.startswith("self_attention/"):
            w.assign(np.eye(2, dtype="float32").reshape(w.shape))
        elif name.endswith("gamma"):
            w.assign(np.ones(w.shape, "float32"))
        else:
            w.assign(np.zeros(w.shape, "float32"))
    logits = x[0] @ x[0].T / np.sqrt(2.0)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    h = x[0] + weights @ x[0]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(block(x))[0], h, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_padded_positions_do_not_influence_valid_outputs(norm_first):
    x, pad = _inputs(2)
    block = TransformerEncoderBlock(2, 16, norm_first=norm_first)
    base = ops.convert_to_numpy(block(x, padding_mask=pad))
    x2 = x.copy()
    x2[~pad] += 10.0
    out = ops.convert_to_numpy(block(x2, padding_mask=pad))
    np.testing.assert_allclose(out[pad], base[pad], atol=1e-5)
    assert np.all(np.isfinite(out))


def test_implicit_embedding_mask_equals_padding_mask():
    tokens = np.array([[4, 2, 7, 1, 3, 5], [6, 1, 2, 3, 0, 0]])
    embedding = keras.layers.Embedding(8, F, mask_zero=True)
    block = TransformerEncoderBlock(2, 16)
    inp = keras.Input((T,), dtype="int32")
    h = embedding(inp)
    out = block(h)
    assert out._keras_mask is not None, "the Keras mask was not propagated"
    model = keras.Model(inp, [out, out._keras_mask])
    implicit, out_mask = model(tokens)
    np.testing.assert_array_equal(ops.convert_to_numpy(out_mask), tokens != 0)
    explicit = block(embedding(tokens), padding_mask=tokens != 0)
    assert_all_close(implicit, explicit, 1e-5, 1e-5, "implicit vs explicit mask")
    # Eager: the mask rides on the embedding output, with or without padding_mask.
    assert_all_close(block(embedding(tokens)), explicit, 1e-5, 1e-5, "eager implicit")
    both = block(embedding(tokens), padding_mask=np.ones((B, T), bool))
    assert_all_close(both, explicit, 1e-5, 1e-5, "implicit mask ANDed with padding_mask")
    # A stack of blocks keeps the mask.
    stacked = TransformerEncoderBlock(2, 16)(block(h))
    assert stacked._keras_mask is not None


def test_return_attention_scores_respects_padding():
    x, pad = _inputs(3)
    block = TransformerEncoderBlock(2, 16)
    out, scores = block(x, padding_mask=pad, return_attention_scores=True)
    scores = ops.convert_to_numpy(scores)
    assert scores.shape == (B, 2, T, T)
    np.testing.assert_array_equal(np.where(~pad[:, None, None, :], scores, 0.0), 0.0)
    assert_all_close(out, block(x, padding_mask=pad), 1e-5, 1e-5, "scores changed output")


def _attention_forms():
    mha = MultiHeadAttention(4, 3, num_key_value_heads=2)
    custom = SingleHeadAttention(5)
    return [mha, keras.saving.serialize_keras_object(mha), custom,
            keras.saving.serialize_keras_object(custom)]


@pytest.mark.parametrize("form", range(4), ids=["mha", "mha-config", "custom", "custom-config"])
def test_attention_argument_and_save_load(form, tmp_path):
    attn = _attention_forms()[form]
    block = TransformerEncoderBlock(2, 16, attention=attn, norm_first=form % 2 == 0)
    if not isinstance(attn, dict):
        assert block.attention is attn
    x, pad = _inputs(4)
    out = block(x, padding_mask=pad)
    assert block._self_attention is block.attention
    assert isinstance(block.get_config()["attention"], dict)
    inp, mask_in = keras.Input((T, F)), keras.Input((T,), dtype="bool")
    model = keras.Model([inp, mask_in], block(inp, padding_mask=mask_in))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_block = [layer for layer in loaded.layers
                    if isinstance(layer, TransformerEncoderBlock)][0]
    assert type(loaded_block.attention) is type(block.attention)
    assert_all_close(loaded([x, pad]), out, 1e-5, 1e-5, ".keras save/load")


def test_attention_weights_are_used():
    """The given attention is the one the block runs (different weights, new output)."""
    x, _ = _inputs(5)
    attn = SingleHeadAttention(4)
    block = TransformerEncoderBlock(2, 16, attention=attn)
    base = ops.convert_to_numpy(block(x))
    attn._v.kernel.assign(np.zeros(attn._v.kernel.shape, "float32"))
    assert not np.allclose(ops.convert_to_numpy(block(x)), base)


def test_dropout_is_seeded_and_only_in_training():
    x, _ = _inputs(6)
    block = TransformerEncoderBlock(2, 16, dropout=0.3, seed=1)
    inference = block(x)
    assert_all_close(block(x, training=False), inference, 1e-6, 1e-6, "inference")
    trained = ops.convert_to_numpy(block(x, training=True))
    assert not np.allclose(trained, ops.convert_to_numpy(inference))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_heads": 0}, ValueError, "num_heads"),
        ({"intermediate_dim": -3}, ValueError, "intermediate_dim"),
        ({"key_dim": 0}, ValueError, "key_dim"),
        ({"dropout": -0.1}, ValueError, "dropout"),
        ({"activation": "tanh"}, ValueError, "activation"),
        ({"layer_norm_epsilon": 0.0}, ValueError, "layer_norm_epsilon"),
        ({"layer_norm_epsilon": "small"}, TypeError, "layer_norm_epsilon"),
        ({"seed": -1}, ValueError, "seed"),
        ({"attention": "mha"}, TypeError, "attention"),
        ({"attention": keras.layers.Dense(4)}, TypeError, "attention"),
        ({"attention": {"class_name": "Nope", "config": {}, "module": None,
                        "registered_name": "nowhere>Nope"}}, ValueError, "attention"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TransformerEncoderBlock(**{"num_heads": 2, "intermediate_dim": 8, **kwargs})


def test_attention_config_of_a_non_attention_layer_is_rejected():
    config = keras.saving.serialize_keras_object(keras.layers.Dense(4))
    with pytest.raises(TypeError, match="attention"):
        TransformerEncoderBlock(2, 8, attention=config)


def test_build_and_call_errors():
    x, _ = _inputs()
    with pytest.raises(ValueError, match="x"):
        TransformerEncoderBlock(2, 8)(np.zeros((B, F), "float32"))
    with pytest.raises(ValueError, match="x"):
        TransformerEncoderBlock(2, 8).build((B, T, None))
    with pytest.raises(ValueError, match="key_dim"):
        TransformerEncoderBlock(3, 8)(x)
    TransformerEncoderBlock(3, 8, key_dim=4)(x)  # explicit key_dim: fine
    with pytest.raises(ValueError, match="attention"):
        TransformerEncoderBlock(2, 8, attention=MultiHeadAttention(2, 4, output_dim=5))(x)
    block = TransformerEncoderBlock(2, 8)
    block(x)
    with pytest.raises(ValueError, match="padding_mask"):
        block(x, padding_mask=np.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="padding_mask"):
        block(x, padding_mask=np.ones((B, T, 1), bool))
    with pytest.raises(ValueError, match="attention_mask"):
        block(x, attention_mask=np.ones((B, T, T + 1), bool))
    with pytest.raises(ValueError, match="x"):
        block(np.zeros((B, T, F, 1), "float32"))


def _remat_encoder(remat):
    inputs = keras.Input((T, F))
    pad = keras.Input((T,), dtype="bool")
    x = TransformerEncoderBlock(2, 16, dropout=0.1, seed=5, remat=remat, name="block_a")(
        inputs, padding_mask=pad)
    x = TransformerEncoderBlock(2, 16, norm_first=False, remat=remat, name="block_b")(
        x, use_causal_mask=True)
    return keras.Model([inputs, pad], x)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
def test_remat_gives_the_same_training_step(jit_compile):
    x, pad = _inputs()
    target = np.random.default_rng(2).normal(size=(B, T, F)).astype("float32")
    assert_remat_step_matches(_remat_encoder, [x, pad], target, jit_compile)


def test_remat_round_trips_and_rejects_non_booleans():
    block = TransformerEncoderBlock(2, 8, remat=True)
    assert TransformerEncoderBlock.from_config(block.get_config()).remat is True
    with pytest.raises(TypeError, match="remat"):
        TransformerEncoderBlock(2, 8, remat="yes")
