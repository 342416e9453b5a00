"""Checks of the MultiHeadAttention call convention, shared by every attention layer."""

import keras
import numpy as np
import pytest

from keras_attention.testing.layer_test import (
    _to_numpy,
    assert_all_close,
    assert_finite,
    run_layer_test,
)


def _outputs(result):
    return result[0] if isinstance(result, (tuple, list)) else result


def run_attention_layer_test(
    layer_cls,
    init_kwargs,
    *,
    query_shape=(2, 6, 16),
    value_shape=(2, 5, 12),
    cross=True,
    causal=True,
    scores=True,
    attention_mask=True,
    num_heads=None,
    run_training=True,
    run_mixed_precision=True,
    atol=1e-5,
):
    """Run `run_layer_test` plus the attention-specific checks on one configuration.

    Args:
        layer_cls, init_kwargs: the layer and its constructor arguments.
        query_shape: `(B, T, F)` of the self-attention input.
        value_shape: `(B, S, F_v)` of the cross-attention context.
        cross: the layer supports cross-attention (`layer(x, context)`).
        causal: the layer supports `use_causal_mask=True`.
        scores: the layer returns `(B, N, T, S)` attention scores; when False,
            asking for them must raise `ValueError`.
        attention_mask: the layer accepts arbitrary `(B, T, S)` attention masks.
        num_heads: N in the scores' shape; defaults to `init_kwargs["num_heads"]`
            or 1.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=query_shape).astype("float32")
    b, t, _ = query_shape
    num_heads = num_heads or init_kwargs.get("num_heads", 1)
    pad = np.ones((b, t), bool)
    pad[-1, -2:] = False  # last sequence has two padding positions

    common = dict(run_training=run_training, run_mixed_precision=run_mixed_precision,
                  atol=atol, rtol=atol)
    # Self-attention with padding: the full helper (save, XLA, mixed precision, fit).
    run_layer_test(layer_cls, init_kwargs, [x, x], {"query_mask": pad, "value_mask": pad},
                   expected_output_shape=query_shape[:2] + _out_dim(
                       layer_cls, init_kwargs, query_shape), **common)
    layer = layer_cls(**init_kwargs)
    _check_padding(layer, x, pad, atol)
    _check_implicit_mask(layer, x, pad, atol)
    if attention_mask:
        _check_fully_masked_rows(layer_cls, init_kwargs, x, scores, run_training, atol)
    if causal:
        # No training step here: gradients are checked with padding above and with
        # fully masked rows, and the ops' causal gradients in their own tests.
        run_layer_test(layer_cls, init_kwargs, [x, x], {"use_causal_mask": True},
                       run_save=False, run_mixed_precision=False, run_training=False,
                       atol=atol, rtol=atol)
        _check_causal(layer, x, atol)
    if cross:
        c = rng.normal(size=value_shape).astype("float32")
        out = layer_cls(**init_kwargs)(x, c)
        assert tuple(out.shape)[:2] == (b, t)
        assert_finite(out, "cross-attention")
        vpad = np.ones(value_shape[:2], bool)
        vpad[0, -1] = False
        cross_layer = layer_cls(**init_kwargs)
        base = cross_layer(x, c, value_mask=vpad)
        c2 = c.copy()
        c2[0, -1] += 10.0
        assert_all_close(cross_layer(x, c2, value_mask=vpad), base, atol, atol,
                         "masked context positions changed the output")
    if scores:
        _check_scores(layer, x, pad, num_heads)
    else:
        with pytest.raises(ValueError, match="return_attention_scores"):
            layer(x, x, return_attention_scores=True)
    check_attention_errors(layer_cls, init_kwargs, query_shape)


def _out_dim(layer_cls, init_kwargs, query_shape):
    shape = init_kwargs.get("output_shape") or init_kwargs.get("output_dim")
    if shape is None:
        return (query_shape[-1],)
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _check_padding(layer, x, pad, atol):
    """Values at padded positions have no influence on valid rows; padded rows are zero."""
    base = _to_numpy(layer(x, x, query_mask=pad, value_mask=pad))
    x2 = x.copy()
    x2[~pad] += 10.0
    out = _to_numpy(layer(x2, x2, query_mask=pad, value_mask=pad))
    np.testing.assert_allclose(out[pad], base[pad], atol=atol, rtol=atol,
                               err_msg="padded positions changed valid outputs")
    np.testing.assert_array_equal(out[~pad], 0.0, err_msg="padded query rows not zero")


def _check_implicit_mask(layer, x, pad, atol):
    """A Keras implicit mask (Masking layer) acts like query_mask + value_mask."""
    x0 = np.where(pad[..., None], x, 0.0).astype("float32")
    inp = keras.Input(shape=x.shape[1:])
    masked = keras.layers.Masking(mask_value=0.0)(inp)
    model = keras.Model(inp, layer(masked, masked))
    explicit = layer(x0, x0, query_mask=pad, value_mask=pad)
    assert_all_close(model(x0), explicit, atol, atol, "implicit Keras mask")


def _check_fully_masked_rows(layer_cls, init_kwargs, x, scores, run_training, atol):
    """A query row with no allowed key gives zeros, never NaN, and finite gradients."""
    b, t, _ = x.shape
    s = x.shape[1]
    mask = np.ones((b, t, s), bool)
    mask[0, 1, :] = False  # one empty row
    mask[1] = False  # a whole sequence with nothing to attend
    layer = layer_cls(**init_kwargs)
    if scores:
        out, w = layer(x, x, attention_mask=mask, return_attention_scores=True)
        w = _to_numpy(w)
        assert np.all(np.isfinite(w))
        np.testing.assert_array_equal(w[0, :, 1], 0.0)
        np.testing.assert_array_equal(w[1], 0.0)
    else:
        out = layer(x, x, attention_mask=mask)
    out = _to_numpy(out)
    assert np.all(np.isfinite(out)), "NaN/inf for fully masked rows"
    np.testing.assert_array_equal(out[0, 1], 0.0)
    np.testing.assert_array_equal(out[1], 0.0)
    if run_training:
        from keras_attention.testing.layer_test import check_training_step

        check_training_step(layer_cls, init_kwargs, [x, x], {"attention_mask": mask})


def _check_causal(layer, x, atol):
    """Changing future positions does not change earlier outputs."""
    base = _to_numpy(layer(x, x, use_causal_mask=True))
    x2 = x.copy()
    x2[:, -2:] += 10.0
    out = _to_numpy(layer(x2, x2, use_causal_mask=True))
    np.testing.assert_allclose(out[:, :-2], base[:, :-2], atol=atol, rtol=atol,
                               err_msg="causal mask leaked future positions")


def _check_scores(layer, x, pad, num_heads):
    b, t, _ = x.shape
    out, w = layer(x, x, query_mask=pad, value_mask=pad, return_attention_scores=True)
    w = _to_numpy(w)
    assert w.shape == (b, num_heads, t, t), f"scores shape {w.shape}"
    keys_masked = ~pad[:, None, None, :]
    np.testing.assert_array_equal(np.where(keys_masked, w, 0.0), 0.0)
    sums = w.sum(-1)  # (B, N, T)
    expected = np.broadcast_to(pad[:, None, :], sums.shape).astype("float32")
    np.testing.assert_allclose(sums, expected, atol=1e-4)
    assert_all_close(out, layer(x, x, query_mask=pad, value_mask=pad), 1e-5, 1e-5,
                     "output changed when scores were requested")


def check_attention_errors(layer_cls, init_kwargs, query_shape):
    """Wrong ranks and mask shapes raise ValueError naming the argument."""
    b, t, f = query_shape
    x = np.zeros(query_shape, "float32")
    with pytest.raises(ValueError, match="query"):
        layer_cls(**init_kwargs)(np.zeros((b, f), "float32"), x)
    with pytest.raises(ValueError, match="value"):
        layer_cls(**init_kwargs)(x, np.zeros((b, t, 2, f), "float32"))
    layer = layer_cls(**init_kwargs)
    layer(x, x)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((b, t + 1, t), bool))
    with pytest.raises(ValueError, match="query_mask"):
        layer(x, x, query_mask=np.ones((b, t + 2), bool))
    with pytest.raises(ValueError, match="value_mask"):
        layer(x, x, value_mask=np.ones((b, 1, t), bool))
