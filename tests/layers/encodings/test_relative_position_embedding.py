import keras
import numpy as np
import pytest

from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.encodings.relative_position_embedding import (
    RelativePositionEmbedding,
)
from keras_attention.testing import run_layer_test


def numpy_rows(table, query_length, key_length, query_start, max_distance):
    """table[clip(j - i, -D, D) + D] for queries at query_start + arange(T)."""
    q = query_start + np.arange(query_length)
    k = np.arange(key_length)
    index = np.clip(k[None, :] - q[:, None], -max_distance, max_distance) + max_distance
    return table[index]  # (T, S, D)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_layer_checks():
    # The standalone output (T, T, key_dim) has no batch axis, so the helper's
    # training step does not apply; test_training_through_the_hooks covers it.
    x = np.random.default_rng(0).normal(size=(2, 5, 6)).astype("float32")
    run_layer_test(RelativePositionEmbedding, {"max_distance": 2, "key_dim": 4, "value_dim": 3},
                   [x], expected_output_shape=(5, 5, 4), run_training=False)


def test_layer_checks_depth_from_features():
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    run_layer_test(RelativePositionEmbedding, {"max_distance": 8, "initializer": "ones"},
                   [x], expected_output_shape=(6, 6, 3), run_training=False)


def test_compute_embeddings_golden():
    layer = RelativePositionEmbedding(max_distance=2, key_dim=3, value_dim=2)
    layer.check_attention_shapes(1, 3, 2)
    rng = np.random.default_rng(1)
    key_table = rng.normal(size=(5, 3)).astype("float32")
    value_table = rng.normal(size=(5, 2)).astype("float32")
    layer.set_weights([key_table, value_table])
    t, s = 4, 6
    for query_start in (None, 0, 3, -2):
        start = s - t if query_start is None else query_start
        np.testing.assert_allclose(_np(layer.compute_embeddings(t, s, query_start)),
                                   numpy_rows(key_table, t, s, start, 2), atol=1e-6,
                                   err_msg=f"query_start={query_start}")
        np.testing.assert_allclose(_np(layer.compute_value_embeddings(t, s, query_start)),
                                   numpy_rows(value_table, t, s, start, 2), atol=1e-6,
                                   err_msg=f"query_start={query_start}")


def test_hand_values_of_the_clipped_distance():
    layer = RelativePositionEmbedding(max_distance=1, key_dim=1)
    layer.build((None, None, 1))
    layer.set_weights([np.array([[-1.0], [0.0], [1.0]]), np.zeros((3, 1))])
    # Rows: j - i clipped to [-1, 1] -> -1, 0, 1.
    expected = np.array([[0, 1, 1], [-1, 0, 1], [-1, -1, 0]], "float32")
    np.testing.assert_array_equal(_np(layer.compute_embeddings(3, 3))[..., 0], expected)


def test_attention_hooks_golden():
    """Shaw et al. eq. (3)-(5): logits (q.k + q.a^K) * scale, output w.v + w.a^V."""
    rng = np.random.default_rng(2)
    b, t, s, n, h, v = 2, 3, 5, 2, 4, 3
    layer = RelativePositionEmbedding(max_distance=2)
    layer.check_attention_shapes(n, h, v)
    ak = rng.normal(size=(5, h)).astype("float32")
    av = rng.normal(size=(5, v)).astype("float32")
    layer.set_weights([ak, av])
    q = rng.normal(size=(b, t, n, h)).astype("float32")
    k = rng.normal(size=(b, s, n, h)).astype("float32")
    val = rng.normal(size=(b, s, n, v)).astype("float32")
    scale, start = 0.5, s - t
    rows_k = numpy_rows(ak, t, s, start, 2)
    rows_v = numpy_rows(av, t, s, start, 2)
    logits = (np.einsum("btnh,bsnh->bnts", q, k) + np.einsum("btnh,tsh->bnts", q, rows_k)) * scale
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    expected = np.einsum("bnts,bsnv->btnv", w, val) + np.einsum("bnts,tsv->btnv", w, rows_v)

    bias = layer.attention_bias(q, s, start, scale)
    assert keras.backend.standardize_dtype(bias.dtype) == "float32"
    np.testing.assert_allclose(_np(bias), np.einsum("btnh,tsh->bnts", q, rows_k) * scale,
                               atol=1e-5)
    ours_logits = np.einsum("btnh,bsnh->bnts", q, k) * scale + _np(bias)
    ours_w = np.exp(ours_logits - ours_logits.max(-1, keepdims=True))
    ours_w /= ours_w.sum(-1, keepdims=True)
    term = _np(layer.value_term(ours_w.astype("float32"), start))
    assert term.shape == (b, t, n, v)
    np.testing.assert_allclose(np.einsum("bnts,bsnv->btnv", ours_w, val) + term, expected,
                               atol=1e-5)
    assert layer.requires_weights


def test_attention_layer_sizes_the_tables():
    layer = RelativePositionEmbedding(max_distance=3)
    mha = MultiHeadAttention(num_heads=2, key_dim=4, value_dim=6, position_encoding=layer)
    mha.build((2, 5, 8), (2, 5, 8))
    assert tuple(layer.key_embeddings.shape) == (7, 4)
    assert tuple(layer.value_embeddings.shape) == (7, 6)
    assert layer.get_build_config() is None  # sized by the attention layer, not by shape


class _ToyShawAttention(keras.layers.Layer):
    """Single-head self-attention with q = k = v = inputs, through the hooks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoding = RelativePositionEmbedding(max_distance=2)

    def build(self, input_shape):
        self.encoding.check_attention_shapes(1, input_shape[-1], input_shape[-1])

    def call(self, x):
        q = x[:, :, None, :]  # (B, T, 1, F)
        t = keras.ops.shape(x)[1]
        logits = keras.ops.einsum("btnh,bsnh->bnts", q, q) + self.encoding.attention_bias(
            q, t, 0, 1.0)
        w = keras.ops.softmax(logits, axis=-1)
        out = keras.ops.einsum("bnts,bsnh->btnh", w, q) + self.encoding.value_term(w, 0)
        return out[:, :, 0, :]


def test_training_through_the_hooks():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    y = rng.normal(size=(4, 5, 3)).astype("float32")
    model = keras.Sequential([keras.Input((5, 3)), _ToyShawAttention()])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = [_np(w) for w in model.weights]
    losses = model.fit(x, y, epochs=8, batch_size=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    for old, w in zip(before, model.weights):
        assert np.all(np.isfinite(_np(w)))
        assert not np.allclose(old, _np(w)), w.path


def test_errors():
    with pytest.raises(ValueError, match="max_distance=0"):
        RelativePositionEmbedding(max_distance=0)
    with pytest.raises(TypeError, match="max_distance"):
        RelativePositionEmbedding(max_distance=2.5)
    with pytest.raises(ValueError, match="key_dim=0"):
        RelativePositionEmbedding(max_distance=2, key_dim=0)
    with pytest.raises(TypeError, match="value_dim"):
        RelativePositionEmbedding(max_distance=2, value_dim="4")
    with pytest.raises(ValueError, match=r"inputs.*rank 3.*Received: shape=\(2, 8\)"):
        RelativePositionEmbedding(max_distance=2)(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="key_dim"):
        RelativePositionEmbedding(max_distance=2).build((None, None, None))
    # Dims that disagree with the attention layer's.
    with pytest.raises(ValueError, match="key_dim=8"):
        RelativePositionEmbedding(max_distance=2, key_dim=4).check_attention_shapes(2, 8, 8)
    with pytest.raises(ValueError, match="value_dim=8"):
        RelativePositionEmbedding(max_distance=2, value_dim=4).check_attention_shapes(2, 4, 8)
    built = RelativePositionEmbedding(max_distance=2)
    built.check_attention_shapes(2, 4, 4)
    with pytest.raises(ValueError, match="value_dim=6"):
        built.check_attention_shapes(2, 4, 6)
    with pytest.raises(ValueError, match="key_dim=4"):
        MultiHeadAttention(2, 4, position_encoding=RelativePositionEmbedding(2, key_dim=5)).build(
            (1, 3, 4), (1, 3, 4))
    # The public method's arguments.
    with pytest.raises(ValueError, match="key_dim=None"):
        RelativePositionEmbedding(max_distance=2).compute_embeddings(3, 3)
    layer = RelativePositionEmbedding(max_distance=2, key_dim=2)
    with pytest.raises(ValueError, match="query_length=0"):
        layer.compute_embeddings(0, 3)
    with pytest.raises(TypeError, match="key_length"):
        layer.compute_embeddings(3, 3.0)
    with pytest.raises(TypeError, match="query_start"):
        layer.compute_embeddings(3, 3, query_start=1.5)
