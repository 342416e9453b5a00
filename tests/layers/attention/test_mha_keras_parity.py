"""MultiHeadAttention against keras.layers.MultiHeadAttention (Keras 3.15), same weights:
one test per argument or feature of Keras's layer."""

import os
import warnings

import keras
import numpy as np
import pytest

from keras_attention.layers import MultiHeadAttention
from keras_attention.layers.attention import multi_head_attention as mha_module
from keras_attention.testing import assert_all_close

RNG = np.random.default_rng(0)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _pair(inputs, **kwargs):
    """Ours and Keras's layer with the same arguments and weights, built on `inputs`."""
    ours = MultiHeadAttention(**kwargs)
    ref = keras.layers.MultiHeadAttention(**kwargs)
    ours(*inputs)
    ref(*inputs)
    ours.set_weights(ref.get_weights())
    return ours, ref


def _check_same(ours, ref, inputs, call_kwargs=None, atol=1e-5):
    call_kwargs = call_kwargs or {}
    out, scores = ours(*inputs, return_attention_scores=True, **call_kwargs)
    ref_out, ref_scores = ref(*inputs, return_attention_scores=True, **call_kwargs)
    assert out.shape == ref_out.shape
    assert scores.shape == ref_scores.shape
    assert_all_close(out, ref_out, atol, atol, "outputs")
    assert_all_close(scores, ref_scores, atol, atol, "scores")
    # Without scores both layers take their fused paths.
    assert_all_close(ours(*inputs, **call_kwargs), ref(*inputs, **call_kwargs), atol, atol,
                     "outputs without scores")


def _x(*shape):
    return RNG.normal(size=shape).astype("float32")


def test_keras_version_is_the_reference():
    assert keras.__version__ == "3.15.1"


@pytest.mark.parametrize("output_shape", [10, (10,), (2, 5)])
def test_output_shape(output_shape):
    x, ctx = _x(2, 6, 8), _x(2, 4, 5)
    ours, ref = _pair([x, ctx], num_heads=2, key_dim=4, output_shape=output_shape)
    _check_same(ours, ref, [x, ctx])
    expected = (2, 6) + ((output_shape,) if isinstance(output_shape, int) else output_shape)
    assert ours.compute_output_shape((2, 6, 8), (2, 4, 5)) == expected


@pytest.mark.parametrize("attention_axes", [None, (2,), (1, 2), 1, -2])
def test_attention_axes_over_an_image(attention_axes):
    x, ctx = _x(2, 3, 4, 8), _x(2, 3, 4, 6)  # (B, H, W, C)
    ours, ref = _pair([x, ctx], num_heads=2, key_dim=4, attention_axes=attention_axes)
    _check_same(ours, ref, [x, ctx])
    assert ours.compute_output_shape(x.shape, ctx.shape) == x.shape


def test_attention_axes_with_an_attention_mask_and_padding():
    x = _x(2, 3, 4, 8)
    ours, ref = _pair([x, x], num_heads=2, key_dim=4, attention_axes=(2,))
    mask = RNG.random((2, 3, 4, 4)) > 0.3  # (B, H, W_q, W_k)
    mask[..., 0] = True
    _check_same(ours, ref, [x, x], {"attention_mask": mask})
    padded = np.ones((2, 3, 4), bool)
    padded[1, :, -1] = False
    out = _np(ours(x, x, query_mask=padded, value_mask=padded))
    np.testing.assert_array_equal(out[1, :, -1], 0.0)
    x2 = x.copy()
    x2[1, :, -1] += 5.0
    out2 = _np(ours(x2, x2, query_mask=padded, value_mask=padded))
    np.testing.assert_allclose(out2[padded], out[padded], atol=1e-5)


def test_attention_axes_errors():
    x = _x(2, 3, 4, 8)
    with pytest.raises(ValueError, match="attention_axes"):
        MultiHeadAttention(2, 4, attention_axes="spatial")
    with pytest.raises(ValueError, match="attention_axes"):
        MultiHeadAttention(2, 4, attention_axes=(3,))(x, x)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sliding_window", [1, 3, 20])
def test_sliding_window(sliding_window, causal):
    x = _x(2, 12, 8)
    ours, ref = _pair([x, x], num_heads=2, key_dim=4, sliding_window=sliding_window)
    # Every query keeps its own key: Keras gives rows with no allowed key a
    # uniform average of the values, this layer zeros (checked elsewhere).
    value_mask = np.ones((2, 12), bool)
    if sliding_window > 1:
        value_mask[1, 5] = False
    _check_same(ours, ref, [x, x], {"use_causal_mask": causal, "value_mask": value_mask})
    attention_mask = (RNG.random((2, 12, 12)) > 0.2) | np.eye(12, dtype=bool)
    _check_same(ours, ref, [x, x], {"use_causal_mask": causal,
                                    "attention_mask": attention_mask})


def test_sliding_window_runs_on_the_band_kernel_without_a_dense_mask(monkeypatch):
    calls = []
    band = mha_module.sliding_window_attention

    def spy(*args, **kwargs):
        calls.append(kwargs["window_size"])
        return band(*args, **kwargs)

    def no_dense_mask(*args, **kwargs):
        raise AssertionError("a (T, S) band mask was formed")

    monkeypatch.setattr(mha_module, "sliding_window_attention", spy)
    monkeypatch.setattr(mha_module.masks_lib, "sliding_window_mask", no_dense_mask)
    monkeypatch.setattr(mha_module, "scaled_dot_product_attention", no_dense_mask)
    x = _x(2, 40, 8)
    pad = np.ones((2, 40), bool)
    pad[0, -5:] = False
    layer = MultiHeadAttention(2, 4, sliding_window=8)
    out = _np(layer(x, x, query_mask=pad, value_mask=pad, use_causal_mask=True))
    assert calls and set(calls) == {7}  # |i - j| < 8 is window_size 7
    np.testing.assert_array_equal(out[0, -5:], 0.0)
    # An explicit mask and dropout run block by block, still without a band mask.
    mask = RNG.random((2, 40, 40)) > 0.5
    assert np.all(np.isfinite(_np(layer(x, x, attention_mask=mask))))
    dropped = MultiHeadAttention(2, 4, sliding_window=8, dropout=0.5, seed=1)
    assert np.all(np.isfinite(_np(dropped(x, x, training=True))))


def test_sliding_window_error_text():
    with pytest.raises(ValueError) as ours:
        MultiHeadAttention(2, 4, sliding_window=0)
    with pytest.raises(ValueError) as ref:
        keras.layers.MultiHeadAttention(2, 4, sliding_window=0)
    assert str(ours.value) == str(ref.value)


def test_use_gate():
    x, ctx = _x(2, 6, 8), _x(2, 5, 8)
    # value_dim == key_dim: Keras's own layer fails on JAX when they differ (its
    # dot_product_attention call checks value against the key's head size).
    ours, ref = _pair([x, ctx], num_heads=2, key_dim=4, use_gate=True)
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]
    _check_same(ours, ref, [x, ctx])
    no_gate = MultiHeadAttention(2, 4)
    no_gate(x, ctx)
    assert len(ours.weights) == len(no_gate.weights) + 2


@pytest.mark.parametrize("shape", [(6, 6), (1, 6, 6), (2, 6, 6), (2, 1, 6), (1, 1, 6)])
def test_attention_mask_broadcasts_as_in_keras(shape):
    x = _x(2, 6, 8)
    ours, ref = _pair([x, x], num_heads=2, key_dim=4)
    mask = RNG.random(shape) > 0.3
    mask[..., 0] = True
    _check_same(ours, ref, [x, x], {"attention_mask": mask})


def test_attention_mask_that_does_not_broadcast_is_refused():
    x = _x(2, 6, 8)
    layer = MultiHeadAttention(2, 4)
    for shape in [(3, 6, 6), (2, 5, 6), (6,), (2, 1, 6, 6)]:
        with pytest.raises(ValueError, match="attention_mask"):
            layer(x, x, attention_mask=np.ones(shape, bool))


def test_kernel_and_bias_regularizers_add_losses():
    x = _x(2, 6, 8)
    kwargs = dict(num_heads=2, key_dim=4, kernel_regularizer="l2", bias_regularizer="l1",
                  activity_regularizer="l2")
    ours, ref = _pair([x, x], **kwargs)
    ours(x, x)
    ref(x, x)
    assert len(ours.losses) == len(ref.losses) == 12  # 4 kernels, 4 biases, 4 outputs
    np.testing.assert_allclose(sum(_np(v) for v in ours.losses),
                               sum(_np(v) for v in ref.losses), rtol=1e-5)


def test_constraints_apply_after_an_optimizer_step():
    x = _x(4, 6, 8)
    layer = MultiHeadAttention(2, 4, kernel_constraint="non_neg", bias_constraint="non_neg",
                               bias_initializer="ones")
    inp = keras.Input((6, 8))
    model = keras.Model(inp, layer(inp, inp))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.train_on_batch(x, -10.0 * np.ones((4, 6, 8), "float32"))
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
        assert np.all(_np(dense.kernel) >= 0.0), dense.name
        assert np.all(_np(dense.bias) >= 0.0), dense.name


def test_public_projections_are_the_layers_sublayers():
    x = _x(2, 6, 8)
    ours, ref = _pair([x, x], num_heads=2, key_dim=4)
    for name in ("query_dense", "key_dense", "value_dense", "output_dense"):
        a, b = getattr(ours, name), getattr(ref, name)
        assert isinstance(a, keras.layers.EinsumDense)
        assert a.name == b.name and a.kernel.shape == b.kernel.shape


def test_enable_lora_on_the_projections():
    x = _x(2, 6, 8)
    layer = MultiHeadAttention(2, 4)
    before = _np(layer(x, x))
    layer.query_dense.enable_lora(2)
    layer.value_dense.enable_lora(2)
    names = [v.path for v in layer.trainable_weights]
    assert sum("lora" in n for n in names) == 4
    frozen = [v.path for v in layer.non_trainable_weights]
    assert any("query" in n and "kernel" in n for n in frozen), frozen
    assert_all_close(layer(x, x), before, 1e-6, 1e-6, "LoRA starts at zero")
    inp = keras.Input((6, 8))
    model = keras.Model(inp, layer(inp, inp))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x, np.zeros((2, 6, 8), "float32"))
    assert not np.allclose(_np(layer(x, x)), before)


@pytest.mark.parametrize("mode", ["int8", "float8"])
def test_model_quantize(mode):
    x = _x(2, 6, 16)
    inp = keras.Input((6, 16))
    layer = MultiHeadAttention(4, 8)
    model = keras.Model(inp, layer(inp, inp, use_causal_mask=True))
    before = _np(model(x))
    with warnings.catch_warnings():
        # Keras warns about every leaf layer without weights to quantize (the
        # InputLayer here); nothing else may warn.
        warnings.filterwarnings("ignore", "Layer InputLayer does not have a `quantize`")
        model.quantize(mode)
    assert layer.query_dense.quantization_mode == mode
    after = _np(model(x))
    scale = np.abs(before).max()
    np.testing.assert_allclose(after, before, atol=0.1 * scale)


def test_config_round_trip_and_keras_saving(tmp_path):
    x = _x(2, 3, 4, 8)
    kwargs = dict(num_heads=2, key_dim=4, value_dim=3, output_shape=(2, 5),
                  attention_axes=(2,), sliding_window=3, use_gate=True,
                  kernel_regularizer="l2", bias_constraint="non_neg", seed=3,
                  flash_attention=False)
    layer = MultiHeadAttention(**kwargs)
    config = layer.get_config()
    for name, value in kwargs.items():
        if name == "kernel_regularizer":
            assert config[name]["class_name"] == "L2"
        elif name == "bias_constraint":
            assert config[name]["class_name"] == "NonNeg"
        else:
            assert config[name] == value, name
    clone = MultiHeadAttention.from_config(config)
    assert clone.get_config() == config
    inp = keras.Input(x.shape[1:])
    model = keras.Model(inp, layer(inp, inp))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_all_close(loaded(x), model(x), 1e-6, 1e-6, "loaded model")


def test_old_configs_with_output_dim_still_load():
    old = MultiHeadAttention(2, 4).get_config()
    old.pop("output_shape")
    for name in ("attention_axes", "sliding_window", "flash_attention", "use_gate",
                 "kernel_regularizer", "bias_regularizer", "activity_regularizer",
                 "kernel_constraint", "bias_constraint"):
        old.pop(name)
    old["output_dim"] = 5
    layer = MultiHeadAttention.from_config(old)
    assert layer.output_dim == 5
    assert layer.get_config()["output_shape"] == (5,)
    assert tuple(layer(_x(2, 6, 8), _x(2, 6, 8)).shape) == (2, 6, 5)
    with pytest.raises(ValueError, match="output_dim"):
        MultiHeadAttention(2, 4, output_dim=5, output_shape=5)


def test_weights_file_keeps_its_paths(tmp_path):
    # Weights saved before `query_dense` & co. were public sit under `_query_dense`.
    x = _x(2, 6, 8)
    inp = keras.Input((6, 8))
    model = keras.Model(inp, MultiHeadAttention(2, 4, name="mha")(inp, inp))
    path = os.path.join(tmp_path, "model.weights.h5")
    model.save_weights(path)
    import h5py

    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
    assert any(n.endswith("_query_dense/vars") for n in names)
    assert not any("/query_dense/" in n for n in names)
    model.load_weights(path)
    assert tuple(model(x).shape) == (2, 6, 8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 0, "key_dim": 4},
        {"num_heads": 2, "key_dim": 0},
        {"num_heads": 2, "key_dim": 4, "value_dim": -1},
        {"num_heads": 2, "key_dim": 4, "sliding_window": -3},
        {"num_heads": 2, "key_dim": 4, "flash_attention": True, "dropout": 0.1},
    ],
)
def test_keras_error_texts(kwargs):
    with pytest.raises(ValueError) as ref:
        keras.layers.MultiHeadAttention(**kwargs)
    with pytest.raises(ValueError) as ours:
        MultiHeadAttention(**kwargs)
    assert str(ours.value).startswith(str(ref.value))
    assert "Received:" in str(ours.value)


def test_output_shape_error_text():
    with pytest.raises(ValueError, match="Invalid `output_shape`.*Received: output_shape"):
        MultiHeadAttention(2, 4, output_shape=object())
    with pytest.raises(ValueError, match="output_shape"):
        MultiHeadAttention(2, 4, output_shape=(4, 0))


def test_flash_attention_is_passed_to_dot_product_attention(monkeypatch):
    seen = []
    fused = keras.ops.dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("flash_attention"))
        kwargs["flash_attention"] = None  # run it whatever this machine has
        return fused(*args, **kwargs)

    x = _x(2, 6, 8)
    ours, ref = _pair([x, x], num_heads=2, key_dim=4)
    expected = _np(ref(x, x, use_causal_mask=True))
    monkeypatch.setattr(keras.ops, "dot_product_attention", spy)
    layer = MultiHeadAttention(2, 4, flash_attention=True)
    layer(x, x)
    layer.set_weights(ref.get_weights())
    assert_all_close(layer(x, x, use_causal_mask=True), expected, 1e-5, 1e-5, "flash")
    assert seen and set(seen) == {True}
    with pytest.raises(ValueError, match="Returning attention scores is not supported"):
        layer(x, x, return_attention_scores=True)
