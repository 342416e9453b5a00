import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.analysis import (
    AttentionRecorder,
    attention_rollout,
    capture_attention,
    with_attention_outputs,
)


def _inputs(shape=(2, 6, 16), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _encoder_model():
    inputs = keras.Input((6, 16))
    x = L.TransformerEncoderBlock(2, 32, name="block_a")(inputs)
    x = L.TransformerEncoderBlock(4, 32, name="block_b")(x)
    return keras.Model(inputs, x)


def _assert_probabilities(weights):
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_two_encoder_blocks_match_return_attention_scores():
    model = _encoder_model()
    x = _inputs()
    expected_output = keras.ops.convert_to_numpy(model(x))
    with capture_attention(model) as recorder:
        output = model(x)
    assert isinstance(recorder, AttentionRecorder)
    assert [p for p, _ in recorder.records] == ["block_a/self_attention",
                                                "block_b/self_attention"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), expected_output, atol=1e-5)

    h, scores_a = model.get_layer("block_a")(x, return_attention_scores=True)
    _, scores_b = model.get_layer("block_b")(h, return_attention_scores=True)
    (_, recorded_a), (_, recorded_b) = recorder.records
    assert recorded_a.shape == (2, 2, 6, 6) and recorded_b.shape == (2, 4, 6, 6)
    np.testing.assert_allclose(recorded_a, keras.ops.convert_to_numpy(scores_a), atol=1e-6)
    np.testing.assert_allclose(recorded_b, keras.ops.convert_to_numpy(scores_b), atol=1e-6)
    _assert_probabilities(recorded_a)
    _assert_probabilities(recorded_b)
    assert attention_rollout([w for _, w in recorder.records]).shape == (2, 6, 6)


def test_multi_head_attention_model_and_repeated_calls():
    inputs = keras.Input((5, 8))
    mha = L.MultiHeadAttention(num_heads=3, key_dim=4, name="mha")
    model = keras.Model(inputs, keras.layers.Dense(2)(mha(inputs, inputs)))
    x, y = _inputs((2, 5, 8), 1), _inputs((2, 5, 8), 2)
    with capture_attention(model) as recorder:
        model(x)
        model(y)
    assert recorder.paths == ["mha"]
    assert list(recorder.weights) == ["mha"] and len(recorder.weights["mha"]) == 2
    for data, recorded in zip((x, y), recorder.weights["mha"]):
        _, scores = mha(data, data, return_attention_scores=True)
        assert recorded.shape == (2, 3, 5, 5)
        np.testing.assert_allclose(recorded, keras.ops.convert_to_numpy(scores), atol=1e-6)
    recorder.clear()
    assert len(recorder) == 0


def test_caller_structure_is_kept():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4)
    x = _inputs((1, 3, 8))
    with capture_attention(mha) as recorder:
        plain = mha(x, x)
        with_scores = mha(x, x, return_attention_scores=True)
        cache = np.zeros((1, 2, 4, 2, 4), "float32")
        cached = mha(x[:, :1], x[:, :1], cache=cache, cache_index=0)
    assert not isinstance(plain, tuple) and tuple(plain.shape) == (1, 3, 8)
    assert len(with_scores) == 2 and tuple(with_scores[1].shape) == (1, 2, 3, 3)
    assert len(cached) == 2 and tuple(cached[1].shape) == (1, 2, 4, 2, 4)
    shapes = [w.shape for _, w in recorder.records]
    assert shapes == [(1, 2, 3, 3), (1, 2, 3, 3), (1, 2, 1, 4)]


def test_decoder_block_and_nested_model_paths():
    inner_inputs = keras.Input((4, 8))
    inner = keras.Model(inner_inputs, L.TransformerEncoderBlock(2, 16, name="enc")(
        inner_inputs), name="inner")
    decoder_inputs, encoder_inputs = keras.Input((3, 8)), keras.Input((4, 8))
    memory = inner(encoder_inputs)
    output = L.TransformerDecoderBlock(2, 16, name="dec")(decoder_inputs, memory)
    model = keras.Model([decoder_inputs, encoder_inputs], output)
    run = with_attention_outputs(model)
    _, maps = run([_inputs((2, 3, 8), 3), _inputs((2, 4, 8), 4)])
    assert {k: v.shape for k, v in maps.items()} == {
        "inner/enc/self_attention": (2, 2, 4, 4),
        "dec/self_attention": (2, 2, 3, 3),
        "dec/cross_attention": (2, 2, 3, 4),
    }
    causal = maps["dec/self_attention"]
    assert np.all(causal[..., 0, 1:] == 0)  # causal by default
    for weights in maps.values():
        _assert_probabilities(weights)


def test_shared_layer_called_twice_gets_indexed_keys():
    inputs = keras.Input((4, 8))
    shared = L.MultiHeadAttention(2, 4, name="shared")
    model = keras.Model(inputs, shared(shared(inputs, inputs), inputs))
    _, maps = with_attention_outputs(model)(_inputs((1, 4, 8)))
    assert list(maps) == ["shared", "shared[1]"]


def test_sparse_and_cross_modal_layers_match_their_scores():
    x = _inputs((2, 8, 8))
    pad = np.ones((2, 8), bool)
    pad[1, -3:] = False
    sparse = L.SparseAttention(2, 4, pattern="strided", block_size=4, name="sparse")
    local = L.LocalAttention(2, 4, window_size=2, name="local")
    for layer in (sparse, local):
        _, scores = layer(x, x, query_mask=pad, value_mask=pad, return_attention_scores=True)
        with capture_attention(layer) as recorder:
            layer(x, x, query_mask=pad, value_mask=pad)
        (path, recorded), = recorder.records
        assert path == layer.name
        np.testing.assert_allclose(recorded, keras.ops.convert_to_numpy(scores), atol=1e-6)
    cross = L.CrossModalAttention(2, 4, name="co")
    a, b = _inputs((2, 3, 8), 5), _inputs((2, 5, 6), 6)
    (_, _), (a_scores, b_scores) = cross(a, b, return_both=True, return_attention_scores=True)
    with capture_attention(cross) as recorder:
        cross(a, b, return_both=True)
    assert [p for p, _ in recorder.records] == ["a_to_b", "b_to_a"]
    np.testing.assert_allclose(recorder.records[0][1], keras.ops.convert_to_numpy(a_scores),
                               atol=1e-6)
    np.testing.assert_allclose(recorder.records[1][1], keras.ops.convert_to_numpy(b_scores),
                               atol=1e-6)


@pytest.mark.parametrize(
    "make, num_heads",
    [
        (lambda: L.AdditiveAttention(units=8), 1),
        (lambda: L.LuongAttention(score="general", mode="local-m", window=1), 1),
        (lambda: L.MonotonicAttention(units=8, normalize=True, score_bias_init=2.0), 1),
        (lambda: L.TalkingHeadsAttention(4, 4, num_key_value_heads=2), 4),
        (lambda: L.AdaptiveSpanAttention(2, 4, max_span=4, ramp_size=2), 2),
        (lambda: L.GlobalLocalAttention(2, 4, window_size=1, num_global_tokens=1), 2),
        (lambda: L.BlockSparseAttention(4, 4, num_key_value_heads=2, block_size=2,
                                        num_window_blocks=3, num_global_blocks=1,
                                        num_random_blocks=1, seed=3), 4),
        (lambda: L.MultiHeadAttention(2, 4, position_encoding="alibi"), 2),
    ],
    ids=["additive", "luong", "monotonic", "talking_heads", "adaptive_span",
         "global_local", "block_sparse", "mha_alibi"],
)
def test_layers_record_their_scores(make, num_heads):
    layer = make()
    x = _inputs((2, 7, 8))
    pad = np.ones((2, 7), bool)
    pad[1, -2:] = False
    kwargs = {"query_mask": pad, "value_mask": pad}
    _, scores = layer(x, x, return_attention_scores=True, **kwargs)
    with capture_attention(layer) as recorder:
        layer(x, x, **kwargs)
    (_, recorded), = recorder.records
    assert recorded.shape == (2, num_heads, 7, 7)
    np.testing.assert_allclose(recorded, keras.ops.convert_to_numpy(scores), atol=1e-6)


def test_attention_pooling_inner_layer_is_recorded():
    inputs = keras.Input((6, 8))
    pooled = L.AttentionPooling(num_heads=2, num_queries=3, name="pool")(inputs)
    model = keras.Model(inputs, pooled)
    _, maps = with_attention_outputs(model)(_inputs((2, 6, 8)))
    assert {k: v.shape for k, v in maps.items()} == {"pool/attention": (2, 2, 3, 6)}


@pytest.mark.parametrize(
    "layer, reason",
    [
        (L.LinearAttention(2, 4, name="linear"), "never forms a full"),
        (L.NystromAttention(2, 4, num_landmarks=2, name="nystrom"), "never forms a full"),
        (L.LowRankAttention(2, 4, projected_length=2, name="low_rank"), "never forms a full"),
        (L.LSHAttention(2, 4, bucket_size=2, seed=1, name="lsh"), "never forms a full"),
        (L.MultiHeadAttention(2, 4, implementation="chunked", name="chunked"),
         "implementation='chunked'"),
    ],
)
def test_layers_without_weights_are_refused(layer, reason):
    inputs = keras.Input((4, 8))
    x = L.MultiHeadAttention(2, 4, name="ok")(inputs, inputs)
    model = keras.Model(inputs, layer(x, x))
    with pytest.raises(ValueError, match=f"layer '{layer.name}'.*{reason}"):
        with capture_attention(model):
            pass
    with capture_attention(model, layer_names=["ok"]) as recorder:
        model(_inputs((1, 4, 8)))
    assert recorder.paths == ["ok"] and len(recorder) == 1


def test_traced_calls_raise():
    model = _encoder_model()
    with capture_attention(model):
        with pytest.raises(RuntimeError, match="eager calls only"):
            model.predict(_inputs(), verbose=0)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with capture_attention(model):
            with pytest.raises(RuntimeError, match="block_a/self_attention"):
                tf.function(model)(_inputs())


def test_hooks_removed_after_the_block():
    model = _encoder_model()
    x = _inputs()
    with capture_attention(model) as recorder:
        model(x)
    model(x)
    assert len(recorder) == 2
    for layer in (model.get_layer("block_a")._self_attention,
                  model.get_layer("block_b")._self_attention):
        assert "_attention_recorder" not in layer.__dict__
    with pytest.raises(RuntimeError):  # an error inside the block also removes the hooks
        with capture_attention(model):
            raise RuntimeError("boom")
    assert "_attention_recorder" not in model.get_layer("block_a")._self_attention.__dict__


def test_argument_errors():
    model = _encoder_model()
    with pytest.raises(ValueError, match="matches no attention layer"):
        with capture_attention(model, layer_names=["nope"]):
            pass
    with pytest.raises(ValueError, match="matches no attention layer"):
        with_attention_outputs(model, layer_names=["nope"])
    with pytest.raises(ValueError, match="is ambiguous"):
        with capture_attention(model, layer_names=["self_attention"]):
            pass
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no attention layer"):
        with capture_attention(keras.Model(inputs, keras.layers.Dense(2)(inputs))):
            pass
    with pytest.raises(TypeError, match="model"), capture_attention("model"):
        pass
