import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.analysis import head_importance, mask_heads


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _model():
    inputs = keras.Input((5, 8))
    x = L.TransformerEncoderBlock(2, 16, name="block_a")(inputs)
    x = L.TransformerEncoderBlock(4, 16, key_dim=4, name="block_b")(x)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


def _mse(y, p):
    return keras.ops.mean(keras.ops.square(y - p))


def test_returns_finite_score_per_head():
    model = _model()
    data = (_inputs((6, 5, 8)), _inputs((6, 1), 1))
    scores = head_importance(model, _mse, data)
    assert list(scores) == ["block_a/self_attention", "block_b/self_attention"]
    assert scores["block_a/self_attention"].shape == (2,)
    assert scores["block_b/self_attention"].shape == (4,)
    for value in scores.values():
        assert np.all(np.isfinite(value)) and np.any(value != 0)
    # A list of batches gives the mean weighted by batch size: with a per-sample loss
    # it equals the scores of the whole data in one batch.
    def per_sample(y, p):
        return keras.ops.mean(keras.ops.square(y - p), axis=-1)  # (B,)

    whole = head_importance(model, per_sample, data, layer_names=["block_b/self_attention"])
    batches = [(data[0][:4], data[1][:4]), (data[0][4:], data[1][4:])]
    split = head_importance(model, per_sample, batches, layer_names=["block_b/self_attention"])
    assert list(split) == list(whole) == ["block_b/self_attention"]
    np.testing.assert_allclose(split["block_b/self_attention"],
                               whole["block_b/self_attention"], rtol=1e-4, atol=1e-6)


def test_masking_changes_the_loss_and_is_removed_afterwards():
    model = _model()
    x, y = _inputs((6, 5, 8)), _inputs((6, 1), 1)
    base = float(_mse(y, model(x)))
    with mask_heads(model, {"block_a/self_attention": [0, 0],
                            "block_b/self_attention": [0, 0, 0, 0]}):
        masked = float(_mse(y, model(x)))
    assert masked != pytest.approx(base)
    assert float(_mse(y, model(x))) == pytest.approx(base)
    assert "_head_mask" not in model.get_layer("block_a")._self_attention.__dict__


def test_mask_golden_values():
    layer = L.MultiHeadAttention(3, 4, bias_initializer="ones")
    x = _inputs((2, 4, 8))
    layer(x, x)
    with mask_heads(layer, {layer.name: [0, 0, 0]}):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, x)), 1.0, atol=1e-6)
    # Masking head 1 equals zeroing its slice of the output projection.
    copy = L.MultiHeadAttention.from_config(layer.get_config())
    copy(x, x)
    copy.set_weights(layer.get_weights())
    kernel = keras.ops.convert_to_numpy(copy._output_dense.kernel).copy()  # (N, V, O)
    kernel[1] = 0.0
    copy._output_dense.kernel.assign(kernel)
    with mask_heads(layer, {layer.name: [1, 0, 1]}):
        masked = layer(x, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(masked),
                               keras.ops.convert_to_numpy(copy(x, x)), atol=1e-5)


def test_layers_without_head_hook():
    inputs = keras.Input((5, 8))
    x = L.LinearAttention(2, 4, name="local")(inputs, inputs)
    x = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    data = (_inputs((2, 5, 8)), _inputs((2, 1), 1))
    with pytest.warns(UserWarning, match="skips layer 'local'"):
        scores = head_importance(model, _mse, data)
    assert list(scores) == ["mha"]
    with pytest.raises(ValueError, match="cannot mask the heads of layer 'local'"):
        head_importance(model, _mse, data, layer_names=["local"])
    with pytest.raises(ValueError, match="does not support head masking"):
        with mask_heads(model, {"local": [1, 0]}):
            model(data[0])


def test_errors():
    model = _model()
    data = (_inputs((2, 5, 8)), _inputs((2, 1), 1))
    with pytest.raises(TypeError, match="loss_fn"):
        head_importance(model, "mse", data)
    with pytest.raises(ValueError, match="at least one"):
        head_importance(model, _mse, [])
    with pytest.raises(ValueError, match="iterable of"):
        head_importance(model, _mse, [data[0]])
    with pytest.raises(ValueError, match="matches no attention layer"):
        head_importance(model, _mse, data, layer_names=["nope"])
    with pytest.raises(TypeError, match="head_masks"), mask_heads(model, [1, 0]):
        pass
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        with mask_heads(model, {"block_a/self_attention": [1, 0, 1]}):
            pass
    additive = L.AdditiveAttention(units=4, name="additive")
    with pytest.raises(ValueError, match="no heads to mask"):
        with mask_heads(additive, {"additive": [0]}):
            pass
