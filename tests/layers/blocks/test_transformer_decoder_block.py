import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.layers import (
    MultiHeadAttention,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from keras_attention.testing import assert_all_close, run_layer_test
from tests.layers.blocks.numpy_reference import (
    attention,
    feed_forward,
    set_random_weights,
    sublayer,
)
from tests.layers.blocks.remat_check import assert_remat_step_matches
from tests.layers.blocks.test_transformer_encoder_block import SingleHeadAttention

B, T, S, F, FE = 2, 6, 5, 8, 4


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, F)).astype("float32")
    memory = rng.normal(size=(B, S, FE)).astype("float32")
    dec_pad = np.ones((B, T), bool)
    dec_pad[-1, -2:] = False
    enc_pad = np.ones((B, S), bool)
    enc_pad[0, -1] = False
    return x, memory, dec_pad, enc_pad


@pytest.mark.parametrize(
    "kwargs, case",
    [
        ({"num_heads": 2, "intermediate_dim": 16}, "cross-padding"),
        ({"num_heads": 2, "intermediate_dim": 12, "norm_first": False, "activation": "swiglu",
          "dropout": 0.1, "seed": 0}, "decoder-only-scores"),
        ({"num_heads": 4, "intermediate_dim": 16, "key_dim": 3,
          "attention": keras.saving.serialize_keras_object(
              MultiHeadAttention(4, 2, num_key_value_heads=2)),
          "cross_attention": keras.saving.serialize_keras_object(SingleHeadAttention(3))},
         "cached"),
    ],
    ids=["cross-padding", "decoder-only-scores", "cached-custom-attention"],
)
def test_layer_checks(kwargs, case):
    x, memory, dec_pad, enc_pad = _inputs()
    if case == "cross-padding":
        inputs = [x]
        call_kwargs = {"encoder_outputs": memory, "decoder_padding_mask": dec_pad,
                       "encoder_padding_mask": enc_pad}
        shape = (B, T, F)
    elif case == "decoder-only-scores":
        inputs, call_kwargs, shape = [x], {"return_attention_scores": True}, (B, T, F)
    else:
        cache = np.random.default_rng(1).normal(size=(B, 2, T, 2, 2)).astype("float32")
        inputs = [x[:, 2:4]]
        call_kwargs = {"encoder_outputs": memory, "self_attention_cache": cache,
                       "self_attention_cache_index": 2}
        shape = (B, 2, F)
    # No training step through a cache update: decoding is inference-only, and the
    # TensorFlow op behind `ops.slice_update` (XlaDynamicUpdateSlice) has no gradient.
    out = run_layer_test(TransformerDecoderBlock, kwargs, inputs, call_kwargs,
                         expected_output_shape=shape, run_training=case != "cached")
    if case == "decoder-only-scores":
        assert len(out) == 2 and tuple(out[1].shape) == (B, 2, T, T)
    if case == "cached":
        assert len(out) == 2 and tuple(out[1].shape) == (B, 2, T, 2, 2)


def _numpy_decoder(x, memory, w, num_heads, norm_first, activation, dec_pad, enc_pad):
    self_mask = dec_pad[:, :, None] & dec_pad[:, None, :]
    cross_mask = dec_pad[:, :, None] & enc_pad[:, None, :]

    def self_attend(h):
        return attention(h, h, w, "self_attention/", num_heads, self_mask, causal=True)[0]

    def cross_attend(h):
        return attention(h, memory, w, "cross_attention/", num_heads, cross_mask)[0]

    x = sublayer(x, w, "self_attention_norm", self_attend, norm_first, 1e-5)
    x = sublayer(x, w, "cross_attention_norm", cross_attend, norm_first, 1e-5)
    return sublayer(x, w, "feed_forward_norm",
                    lambda h: feed_forward(h, w, "feed_forward/", activation),
                    norm_first, 1e-5)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_golden_against_numpy(norm_first):
    x, memory, dec_pad, enc_pad = _inputs(1)
    block = TransformerDecoderBlock(2, 10, norm_first=norm_first, activation="relu")
    block.build(x.shape, memory.shape)
    weights = set_random_weights(block, seed=5)
    out, self_scores, cross_scores = block(
        x, memory, decoder_padding_mask=dec_pad, encoder_padding_mask=enc_pad,
        return_attention_scores=True,
    )
    expected = _numpy_decoder(x, memory, weights, 2, norm_first, "relu", dec_pad, enc_pad)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-4)
    self_scores = ops.convert_to_numpy(self_scores)
    assert self_scores.shape == (B, 2, T, T)
    np.testing.assert_array_equal(np.triu(self_scores, k=1), 0.0)  # causal
    cross_scores = ops.convert_to_numpy(cross_scores)
    assert cross_scores.shape == (B, 2, T, S)
    np.testing.assert_array_equal(cross_scores[0, :, :, -1], 0.0)  # padded encoder key


def test_decoder_only_has_no_cross_attention():
    x = _inputs()[0]
    block = TransformerDecoderBlock(2, 16)
    block(x)
    assert not hasattr(block, "_cross_attention")
    paths = [w.path for w in block.weights]
    assert not any("cross" in p for p in paths), paths


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("cross", [True, False], ids=["cross", "decoder-only"])
def test_cached_decoding_matches_full_causal_call(norm_first, cross):
    x, memory, dec_pad, enc_pad = _inputs(2)
    block = TransformerDecoderBlock(4, 16, norm_first=norm_first)
    memory_kw = {"encoder_outputs": memory, "encoder_padding_mask": enc_pad} if cross else {}
    full = ops.convert_to_numpy(block(x, **memory_kw))
    cache = block.init_cache(B, T)
    assert tuple(cache.shape) == (B, 2, T, 4, 2)
    # Prefill two tokens, then one token at a time.
    out, cache = block(x[:, :2], self_attention_cache=cache, self_attention_cache_index=0,
                       **memory_kw)
    steps = [ops.convert_to_numpy(out)]
    for i in range(2, T):
        out, cache = block(x[:, i:i + 1], self_attention_cache=cache,
                           self_attention_cache_index=i, **memory_kw)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_cached_decoding_with_padding_and_scores():
    """decoder_padding_mask over the whole cache (B, S_max) matches the full call."""
    x, memory, dec_pad, _ = _inputs(3)
    dec_pad = np.ones((B, T), bool)
    dec_pad[1, :2] = False  # left padding, as in batched generation
    block = TransformerDecoderBlock(2, 16)
    full, full_self, full_cross = block(x, memory, decoder_padding_mask=dec_pad,
                                        return_attention_scores=True)
    cache = block.init_cache(B, T)
    outs, self_rows, cross_rows = [], [], []
    for i in range(T):
        out, self_w, cross_w, cache = block(
            x[:, i:i + 1], memory, decoder_padding_mask=dec_pad, self_attention_cache=cache,
            self_attention_cache_index=i, return_attention_scores=True,
        )
        outs.append(ops.convert_to_numpy(out))
        self_rows.append(ops.convert_to_numpy(self_w))
        cross_rows.append(ops.convert_to_numpy(cross_w))
    np.testing.assert_allclose(np.concatenate(outs, 1), ops.convert_to_numpy(full), atol=1e-5)
    np.testing.assert_allclose(np.concatenate(self_rows, 2), ops.convert_to_numpy(full_self),
                               atol=1e-5)
    np.testing.assert_allclose(np.concatenate(cross_rows, 2),
                               ops.convert_to_numpy(full_cross), atol=1e-5)


def test_decoder_only_cached_scores_structure():
    x = _inputs()[0]
    block = TransformerDecoderBlock(2, 16, key_dim=4)
    result = block(x[:, :1], self_attention_cache=block.init_cache(B, T),
                   self_attention_cache_index=0, return_attention_scores=True)
    assert len(result) == 3
    out, scores, cache = result
    assert tuple(out.shape) == (B, 1, F)
    assert tuple(scores.shape) == (B, 2, 1, T)
    assert tuple(cache.shape) == (B, 2, T, 2, 4)


def test_init_cache_layouts():
    block = TransformerDecoderBlock(4, 8, key_dim=3)
    assert tuple(block.init_cache(1, 5).shape) == (1, 2, 5, 4, 3)  # before build
    gqa = TransformerDecoderBlock(4, 8, attention=MultiHeadAttention(4, 2, num_key_value_heads=1))
    assert tuple(gqa.init_cache(2, 7).shape) == (2, 2, 7, 1, 2)
    built = TransformerDecoderBlock(2, 8)
    built(_inputs()[0])
    cache = built.init_cache(2, 3, dtype="float16")
    assert tuple(cache.shape) == (2, 2, 3, 2, 4)
    assert keras.backend.standardize_dtype(cache.dtype) == "float16"


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_padded_positions_do_not_influence_valid_outputs(norm_first):
    x, memory, dec_pad, enc_pad = _inputs(4)
    block = TransformerDecoderBlock(2, 16, norm_first=norm_first)
    kw = {"decoder_padding_mask": dec_pad, "encoder_padding_mask": enc_pad}
    base = ops.convert_to_numpy(block(x, memory, **kw))
    x2, memory2 = x.copy(), memory.copy()
    x2[~dec_pad] += 10.0
    memory2[~enc_pad] += 10.0
    out = ops.convert_to_numpy(block(x2, memory2, **kw))
    np.testing.assert_allclose(out[dec_pad], base[dec_pad], atol=1e-5)
    # Causality: changing the last token changes no earlier output.
    x3 = x.copy()
    x3[:, -1] += 10.0
    out = ops.convert_to_numpy(block(x3, memory, **kw))
    np.testing.assert_allclose(out[:, :-1], base[:, :-1], atol=1e-5)


def test_implicit_embedding_masks_equal_padding_masks():
    enc_tokens = np.array([[4, 2, 7, 1, 3], [6, 1, 2, 0, 0]])
    dec_tokens = np.array([[1, 5, 2, 3, 1, 2], [3, 3, 1, 2, 0, 0]])
    enc_embedding = keras.layers.Embedding(8, FE, mask_zero=True)
    dec_embedding = keras.layers.Embedding(8, F, mask_zero=True)
    block = TransformerDecoderBlock(2, 16)
    enc_in = keras.Input((S,), dtype="int32")
    dec_in = keras.Input((T,), dtype="int32")
    out = block(dec_embedding(dec_in), enc_embedding(enc_in))
    assert out._keras_mask is not None, "the Keras mask was not propagated"
    model = keras.Model([dec_in, enc_in], [out, out._keras_mask])
    implicit, out_mask = model([dec_tokens, enc_tokens])
    np.testing.assert_array_equal(ops.convert_to_numpy(out_mask), dec_tokens != 0)
    explicit = block(dec_embedding(dec_tokens), enc_embedding(enc_tokens),
                     decoder_padding_mask=dec_tokens != 0,
                     encoder_padding_mask=enc_tokens != 0)
    assert_all_close(implicit, explicit, 1e-5, 1e-5, "implicit vs explicit masks")
    # Decoder-only block with the mask as the only tensor argument.
    gpt = TransformerDecoderBlock(2, 16)
    gpt_model = keras.Model(dec_in, gpt(dec_embedding(dec_in)))
    assert_all_close(gpt_model(dec_tokens),
                     gpt(dec_embedding(dec_tokens), decoder_padding_mask=dec_tokens != 0),
                     1e-5, 1e-5, "decoder-only implicit mask")


def test_encoder_decoder_stack_propagates_masks():
    tokens = np.array([[4, 2, 7, 1, 3], [6, 1, 2, 0, 0]])
    embedding = keras.layers.Embedding(8, F, mask_zero=True)
    encoder = TransformerEncoderBlock(2, 16)
    decoder = TransformerDecoderBlock(2, 16)
    memory = encoder(embedding(tokens))
    x = _inputs()[0]
    implicit = decoder(x, memory)
    explicit = decoder(x, ops.convert_to_numpy(memory), encoder_padding_mask=tokens != 0)
    assert_all_close(implicit, explicit, 1e-5, 1e-5, "encoder mask through the stack")


@pytest.mark.parametrize("which", ["attention", "cross_attention"])
@pytest.mark.parametrize("as_config", [False, True], ids=["instance", "config"])
def test_attention_arguments_and_save_load(which, as_config, tmp_path):
    layer = SingleHeadAttention(3) if which == "attention" else MultiHeadAttention(
        1, 4, num_key_value_heads=1)
    arg = keras.saving.serialize_keras_object(layer) if as_config else layer
    block = TransformerDecoderBlock(2, 16, **{which: arg})
    x, memory, dec_pad, enc_pad = _inputs(5)
    out = block(x, memory, decoder_padding_mask=dec_pad, encoder_padding_mask=enc_pad)
    sub = block._self_attention if which == "attention" else block._cross_attention
    assert sub is getattr(block, which)
    assert isinstance(block.get_config()[which], dict)
    inputs = [keras.Input((T, F)), keras.Input((S, FE)), keras.Input((T,), dtype="bool"),
              keras.Input((S,), dtype="bool")]
    model = keras.Model(inputs, block(inputs[0], inputs[1], decoder_padding_mask=inputs[2],
                                      encoder_padding_mask=inputs[3]))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_all_close(loaded([x, memory, dec_pad, enc_pad]), out, 1e-5, 1e-5, "save/load")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_heads": 0}, ValueError, "num_heads"),
        ({"intermediate_dim": 0}, ValueError, "intermediate_dim"),
        ({"key_dim": 1.5}, TypeError, "key_dim"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"activation": "elu"}, ValueError, "activation"),
        ({"layer_norm_epsilon": -1.0}, ValueError, "layer_norm_epsilon"),
        ({"seed": "a"}, TypeError, "seed"),
        ({"attention": 3}, TypeError, "attention"),
        ({"cross_attention": keras.layers.Dense(2)}, TypeError, "cross_attention"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TransformerDecoderBlock(**{"num_heads": 2, "intermediate_dim": 8, **kwargs})


def test_shared_attention_instance_is_rejected():
    mha = MultiHeadAttention(2, 4)
    with pytest.raises(ValueError, match="cross_attention"):
        TransformerDecoderBlock(2, 8, attention=mha, cross_attention=mha)


def test_structure_errors():
    x, memory, dec_pad, enc_pad = _inputs()
    decoder_only = TransformerDecoderBlock(2, 8)
    decoder_only(x)
    with pytest.raises(ValueError, match="encoder_outputs"):
        decoder_only(x, memory)
    with pytest.raises(ValueError, match="encoder_padding_mask"):
        decoder_only(x, encoder_padding_mask=enc_pad)
    with pytest.raises(ValueError, match="cross_attention_mask"):
        decoder_only(x, cross_attention_mask=np.ones((B, T, S), bool))
    cross = TransformerDecoderBlock(2, 8)
    cross(x, memory)
    with pytest.raises(ValueError, match="encoder_outputs"):
        cross(x)
    with pytest.raises(ValueError, match="encoder_outputs"):
        TransformerDecoderBlock(2, 8)(x, memory[0])
    with pytest.raises(ValueError, match="x"):
        TransformerDecoderBlock(2, 8)(x[0], memory)
    with pytest.raises(ValueError, match="key_dim"):
        TransformerDecoderBlock(3, 8)(x, memory)
    with pytest.raises(ValueError, match="cross_attention"):
        TransformerDecoderBlock(2, 8, cross_attention=MultiHeadAttention(2, 4, output_dim=3))(
            x, memory)
    with pytest.raises(ValueError, match="decoder_padding_mask"):
        cross(x, memory, decoder_padding_mask=np.ones((B, T - 1), bool))
    with pytest.raises(ValueError, match="encoder_padding_mask"):
        cross(x, memory, encoder_padding_mask=np.ones((B, S + 1), bool))
    with pytest.raises(ValueError, match="attention_mask"):
        cross(x, memory, cross_attention_mask=np.ones((B, T, S + 1), bool))


def test_cache_errors():
    x = _inputs()[0]
    block = TransformerDecoderBlock(2, 8, key_dim=4)
    cache = block.init_cache(B, T)
    with pytest.raises(ValueError, match="self_attention_cache_index"):
        block(x[:, :1], self_attention_cache=cache)
    with pytest.raises(ValueError, match="self_attention_cache_index"):
        block(x[:, :1], self_attention_cache_index=0)
    with pytest.raises(ValueError, match="self_attention_cache"):
        block(x[:, :1], self_attention_cache=np.zeros((B, 2, T, 2), "float32"),
              self_attention_cache_index=0)
    with pytest.raises(ValueError, match="cache"):
        block(x[:, :1], self_attention_cache=np.zeros((B, 2, T, 3, 4), "float32"),
              self_attention_cache_index=0)
    with pytest.raises(ValueError, match="decoder_padding_mask"):
        block(x[:, :1], self_attention_cache=cache, self_attention_cache_index=0,
              decoder_padding_mask=np.ones((B, T + 1), bool))
    custom = TransformerDecoderBlock(2, 8, attention=SingleHeadAttention(4))
    with pytest.raises(ValueError, match="attention"):
        custom.init_cache(B, T)
    custom(x)
    with pytest.raises(ValueError, match="attention"):
        custom(x[:, :1], self_attention_cache=cache, self_attention_cache_index=0)
    with pytest.raises(ValueError, match="key_dim"):
        TransformerDecoderBlock(2, 8).init_cache(B, T)
    with pytest.raises(ValueError, match="batch_size"):
        block.init_cache(0, T)
    with pytest.raises(TypeError, match="max_length"):
        block.init_cache(B, 2.0)


def _remat_decoder(remat):
    x_in, memory_in = keras.Input((T, F)), keras.Input((S, FE))
    pad = keras.Input((T,), dtype="bool")
    # The memory passes through a Dense layer, whose step shows that gradients
    # reach the encoder outputs through the checkpoint.
    memory = keras.layers.Dense(F, name="memory_projection")(memory_in)
    x = TransformerDecoderBlock(2, 16, dropout=0.1, seed=5, remat=remat, name="cross")(
        x_in, memory, decoder_padding_mask=pad)
    x = TransformerDecoderBlock(2, 16, norm_first=False, remat=remat, name="decoder_only")(x)
    return keras.Model([x_in, memory_in, pad], x)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
def test_remat_gives_the_same_training_step(jit_compile):
    x, memory, dec_pad, _ = _inputs()
    target = np.random.default_rng(2).normal(size=(B, T, F)).astype("float32")
    assert_remat_step_matches(_remat_decoder, [x, memory, dec_pad], target, jit_compile)


def test_remat_block_decodes_with_a_cache_like_the_plain_block():
    x, memory, _, _ = _inputs()
    outputs = []
    for remat in (False, True):
        keras.utils.set_random_seed(3)
        block = TransformerDecoderBlock(2, 16, remat=remat)
        block(x, memory)
        cache = block.init_cache(batch_size=B, max_length=T)
        y, _ = block(x[:, :2], memory, self_attention_cache=cache, self_attention_cache_index=0)
        outputs.append(ops.convert_to_numpy(y))
    assert_all_close(outputs[1], outputs[0], atol=1e-6)
    config = TransformerDecoderBlock(2, 8, remat=True).get_config()
    assert TransformerDecoderBlock.from_config(config).remat is True
    with pytest.raises(TypeError, match="remat"):
        TransformerDecoderBlock(2, 8, remat=1)
