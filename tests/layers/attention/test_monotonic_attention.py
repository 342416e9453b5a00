import keras
import numpy as np
import pytest

from keras_attention.layers import MonotonicAttention
from keras_attention.testing import assert_all_close, run_attention_layer_test, run_layer_test


# The helper's score check calls the layer at inference (hard alignments) and expects
# every valid row to sum to one. Hard rows are one-hot exactly when some allowed key
# at or after the previous one has p >= 0.5. Both configurations guarantee that at
# initialisation: with normalize=True the energy is g v/||v|| . tanh(...) with
# g = sqrt(1/units), so |energy| <= 1 and p >= sigmoid(2 - 1) > 0.5 everywhere; with a
# zero kernel the Luong energy is exactly the bias 2. The expected (training)
# alignments, whose rows sum to less than one, are checked against NumPy below and
# through run_layer_test in test_parallel_mode_layer_checks.
@pytest.mark.parametrize(
    "kwargs",
    [
        {"units": 8, "normalize": True, "score_bias_init": 2.0},
        {"score": "luong", "scale": True, "score_bias_init": 2.0,
         "kernel_initializer": "zeros"},
    ],
    ids=["bahdanau", "luong"],
)
def test_layer_checks(kwargs):
    run_attention_layer_test(MonotonicAttention, kwargs)


def test_parallel_mode_layer_checks():
    """Expected alignments at inference too: save, XLA, mixed precision, training."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    ctx = rng.normal(size=(2, 5, 4)).astype("float32")
    value_mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    kwargs = {"units": 4, "mode": "parallel", "score_bias_init": -1.0}
    run_layer_test(MonotonicAttention, kwargs, [x, ctx], {"value_mask": value_mask},
                   expected_output_shape=(2, 6, 4))


# ---------------------------------------------------------------------- NumPy reference
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_energy(query, key, w, score):
    if score == "bahdanau":
        hidden = (query @ w["query"])[:, :, None] + (key @ w["key"])[:, None]
        v = w["v"]
        if w.get("g") is not None:
            v = w["g"] * v / np.linalg.norm(v)
            hidden = hidden + w["b"]
        energy = np.tanh(hidden) @ v
    else:
        energy = np.einsum("btf,bsf->bts", query, key @ w["key"])
        if w.get("g") is not None:
            energy = energy * w["g"]
    return energy + w["r"]


def _numpy_expected(p, mask, previous):
    """alpha_{i,j} = p_{i,j} sum_{k<=j} alpha_{i-1,k} prod_{l=k}^{j-1} (1 - p_{i,l}),
    with naive loops; rows without an allowed key are skipped."""
    b, t, s = p.shape
    p = np.where(mask, p, 0.0)
    out = np.zeros((b, t, s))
    for n in range(b):
        state = previous[n].astype("float64")
        for i in range(t):
            if not mask[n, i].any():
                continue
            alpha = np.zeros(s)
            for j in range(s):
                total = 0.0
                for k in range(j + 1):
                    total += state[k] * np.prod(1.0 - p[n, i, k:j])
                alpha[j] = p[n, i, j] * total
            out[n, i] = state = alpha
    return out


def _numpy_hard(p, mask, start=0):
    """Hard monotonic attention with explicit loops: scan from the previous index,
    stop at the first allowed key with p >= 0.5; none -> zeros from then on."""
    b, t, s = p.shape
    out = np.zeros((b, t, s))
    for n in range(b):
        index = start
        for i in range(t):
            if index is None or not mask[n, i].any():
                continue
            chosen = None
            for j in range(index, s):
                if mask[n, i, j] and p[n, i, j] >= 0.5:
                    chosen = j
                    break
            index = chosen
            if chosen is not None:
                out[n, i, chosen] = 1.0
    return out


def _set_weights(layer, rng, scale=0.5):
    w = {}
    for name, attr in (("query", "_query_dense"), ("key", "_key_dense")):
        if hasattr(layer, attr):
            val = (rng.normal(size=getattr(layer, attr).kernel.shape) * scale).astype("float32")
            getattr(layer, attr).kernel.assign(val)
            w[name] = val
    for name, attr, size in (("v", "attention_v", 1.0), ("b", "attention_b", 0.3)):
        var = getattr(layer, attr, None)
        if var is not None:
            val = (rng.normal(size=var.shape) * size).astype("float32")
            var.assign(val)
            w[name] = val
    if layer.attention_g is not None:
        layer.attention_g.assign(np.float32(1.3))
        w["g"] = np.float32(1.3)
    layer.score_bias.assign(np.float32(-0.4))
    w["r"] = np.float32(-0.4)
    return w


def _inputs(rng, b=2, t=4, s=6, f=5):
    query = rng.normal(size=(b, t, f)).astype("float32")
    key = rng.normal(size=(b, s, f)).astype("float32")
    value = rng.normal(size=(b, s, 3)).astype("float32")
    return query, key, value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"units": 4},
        {"units": 4, "normalize": True},
        {"score": "luong"},
        {"score": "luong", "scale": True},
    ],
    ids=["bahdanau", "bahdanau-normalized", "luong", "luong-scaled"],
)
@pytest.mark.parametrize("soft_start", [False, True])
def test_expected_alignment_golden_against_naive_recurrence(kwargs, soft_start):
    rng = np.random.default_rng(1)
    query, key, value = _inputs(rng)
    layer = MonotonicAttention(**kwargs)
    layer(query, value, key=key)
    w = _set_weights(layer, rng)
    mask = rng.random((2, 4, 6)) > 0.2
    mask[0, 1] = False  # a skipped row: the state carries over
    value_mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    previous = np.zeros((2, 6), "float32")
    previous[:, 0] = 1.0
    call = {}
    if soft_start:
        previous = rng.random((2, 6)).astype("float32")
        previous /= previous.sum(-1, keepdims=True)
        call["previous_alignment"] = previous
    out, scores = layer(query, value, key=key, attention_mask=mask, value_mask=value_mask,
                        training=True, return_attention_scores=True, **call)
    full_mask = mask & value_mask[:, None]
    p = _sigmoid(_numpy_energy(query, key, w, kwargs.get("score", "bahdanau")))
    ref = _numpy_expected(p, full_mask, previous)
    scores = keras.ops.convert_to_numpy(scores)
    assert scores.shape == (2, 1, 4, 6)
    np.testing.assert_allclose(scores[:, 0], ref, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref @ value, atol=1e-5)
    assert np.all(scores.sum(-1) <= 1.0 + 1e-5)


@pytest.mark.parametrize("score", ["bahdanau", "luong"])
def test_hard_alignment_golden_against_naive_loop(score):
    rng = np.random.default_rng(13)
    query, key, value = _inputs(rng, t=6, s=7)
    layer = MonotonicAttention(score=score)
    layer(query, value, key=key)
    w = _set_weights(layer, rng, scale=1.0)
    mask = rng.random((2, 6, 7)) > 0.3
    mask[1, 2] = False
    out, scores = layer(query, value, key=key, attention_mask=mask,
                        return_attention_scores=True)
    p = _sigmoid(_numpy_energy(query, key, w, score))
    assert np.min(np.abs(p - 0.5)) > 1e-3, "test data too close to the threshold"
    ref = _numpy_hard(p, mask)
    assert 0 < ref.sum() < 12, "the case should both choose keys and run off the end"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scores)[:, 0], ref)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref @ value, atol=1e-6)


def _hand_set_layer(energies):
    """Luong layer whose energies equal `energies` (B, T, S) exactly: W = I, r = 0,
    keys = one-hot rows, queries = the energies."""
    b, t, s = energies.shape
    keys = np.broadcast_to(np.eye(s, dtype="float32"), (b, s, s))
    layer = MonotonicAttention(score="luong")
    layer(energies, keys)
    layer._key_dense.kernel.assign(np.eye(s, dtype="float32"))
    layer.score_bias.assign(0.0)
    return layer, keys


def test_hard_alignment_hand_set_case():
    e = 6.0  # p = sigmoid(+-6): far from the 0.5 threshold
    energies = np.array(
        [
            [[-e, e, -e, e, -e],  # from 0: first p >= .5 at 1
             [e, -e, -e, e, e],  # from 1: 0 is behind, first at 3
             [e, e, e, -e, -e],  # from 3: none -> zeros, off the end
             [e, e, e, e, e]],  # stays off the end
            [[-e, e, e, -e, -e],  # key 1 is masked: 2
             [e, e, e, e, e],  # masked query row: skipped, state stays at 2
             [-e, -e, e, -e, e],  # from 2: may stay at 2
             [-e, -e, -e, -e, e]],  # from 2: 4
        ],
        "float32",
    )
    layer, keys = _hand_set_layer(energies)
    value_mask = np.array([[True] * 5, [True, False, True, True, True]])
    query_mask = np.array([[True] * 4, [True, False, True, True]])
    out, scores = layer(energies, keys, query_mask=query_mask, value_mask=value_mask,
                        return_attention_scores=True)
    expected = np.zeros((2, 4, 5))
    expected[0, 0, 1] = expected[0, 1, 3] = 1.0
    expected[1, 0, 2] = expected[1, 2, 2] = expected[1, 3, 4] = 1.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scores)[:, 0], expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected)

    # Saturated choose probabilities (p exactly 0 or 1 in float32): the expected
    # alignment equals the hard one and stays finite.
    layer_sat, _ = _hand_set_layer(energies * 10.0)
    _, soft = layer_sat(energies * 10.0, keys, query_mask=query_mask,
                        value_mask=value_mask, training=True, return_attention_scores=True)
    soft = keras.ops.convert_to_numpy(soft)[:, 0]
    assert np.all(np.isfinite(soft))
    np.testing.assert_allclose(soft, expected, atol=1e-6)


def test_expected_alignment_keeps_mass_after_near_certain_keys():
    """The paper's cumprod form loses the carried mass behind a key with p ~ 1
    (its cumulative product underflows); the log-space form is exact."""
    from keras_attention.layers.attention.monotonic_attention import expected_alignment

    energy = np.array([[40.0, 25.0, -0.8, 0.4, 30.0, -1.5, 0.2],
                       [-40.0, 3.0, 16.0, -2.0, 0.5, 1.0, -0.3]], "float32")
    previous = np.array([[0.0, 0.0, 0.5, 0.3, 0.0, 0.2, 0.0],
                         [0.6, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0]], "float32")
    p = 1.0 / (1.0 + np.exp(-energy.astype("float64")))
    ref = np.zeros_like(p)
    for n in range(2):
        for j in range(7):
            ref[n, j] = p[n, j] * sum(previous[n, k] * np.prod(1.0 - p[n, k:j])
                                      for k in range(j + 1))
    log_keep = -np.logaddexp(0.0, energy)  # log(1 - p) = -softplus(energy)
    args = [p.astype("float32"), log_keep.astype("float32"), previous]
    got = keras.ops.convert_to_numpy(expected_alignment(*args))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert got[0, 2] > 0.1, "mass behind the near-certain keys was lost"
    if keras.backend.backend() == "tensorflow":  # unknown length: the (S, S) fallback
        import tensorflow as tf

        spec = tf.TensorSpec((None, None), "float32")
        fn = tf.function(expected_alignment, input_signature=[spec] * 3)
        np.testing.assert_allclose(fn(*args).numpy(), ref, rtol=1e-5, atol=1e-7)


def test_extreme_energies_train_without_nan():
    rng = np.random.default_rng(3)
    query, key, value = _inputs(rng)
    layer = MonotonicAttention(score="luong", mode="parallel")
    q_in, v_in, k_in = keras.Input((4, 5)), keras.Input((6, 3)), keras.Input((6, 5))
    model = keras.Model([q_in, v_in, k_in], layer(q_in, v_in, key=k_in))
    layer._key_dense.kernel.assign(rng.normal(size=(5, 5)).astype("float32") * 40.0)
    out = keras.ops.convert_to_numpy(model([query, value, key]))
    assert np.all(np.isfinite(out))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    history = model.fit([query, value, key], np.zeros((2, 4, 3), "float32"), epochs=2,
                        verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for weight in layer.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(weight)))


@pytest.mark.parametrize("training", [True, False], ids=["expected", "hard"])
def test_step_by_step_decoding_matches_full_call(training):
    rng = np.random.default_rng(4)
    query, key, value = _inputs(rng, t=5, s=7)
    layer = MonotonicAttention(units=4, score_bias_init=0.5)
    full, full_scores = layer(query, value, key=key, training=training,
                              return_attention_scores=True)
    previous = None
    outputs, alignments = [], []
    for i in range(5):
        out, scores = layer(query[:, i:i + 1], value, key=key, training=training,
                            previous_alignment=previous, return_attention_scores=True)
        previous = scores[:, 0, -1]  # (B, S)
        outputs.append(keras.ops.convert_to_numpy(out))
        alignments.append(keras.ops.convert_to_numpy(scores))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1),
                               keras.ops.convert_to_numpy(full), atol=1e-6)
    np.testing.assert_allclose(np.concatenate(alignments, axis=2),
                               keras.ops.convert_to_numpy(full_scores), atol=1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["expected", "hard"])
def test_scan_over_steps_matches_unrolled_loop(training, monkeypatch):
    """Long (or dynamic) query lengths run the same step in `keras.ops.scan`."""
    from keras_attention.layers.attention import monotonic_attention

    rng = np.random.default_rng(8)
    query, key, value = _inputs(rng, t=5, s=7)
    mask = rng.random((2, 5, 7)) > 0.2
    mask[1, 3] = False
    layer = MonotonicAttention(units=4, score_bias_init=0.3)
    kw = {"key": key, "attention_mask": mask, "training": training,
          "return_attention_scores": True}
    unrolled = layer(query, value, **kw)
    monkeypatch.setattr(monotonic_attention, "UNROLL_MAX_STEPS", 0)
    assert_all_close(layer(query, value, **kw), unrolled, 1e-6, 1e-6, "scan path")


def test_dynamic_lengths_in_a_functional_model():
    """Unknown T and S at trace time (scan over steps, associative log-cumsum-exp)."""
    rng = np.random.default_rng(9)
    query, key, value = _inputs(rng, t=5, s=7)
    layer = MonotonicAttention(score="luong", mode="parallel")
    expected = layer(query, value, key=key)
    q_in, v_in, k_in = keras.Input((None, 5)), keras.Input((None, 3)), keras.Input((None, 5))
    model = keras.Model([q_in, v_in, k_in], layer(q_in, v_in, key=k_in))
    got = model.predict([query, value, key], verbose=0)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), atol=1e-5)


def test_modes():
    rng = np.random.default_rng(5)
    query, key, value = _inputs(rng)
    auto = MonotonicAttention(units=4)
    auto(query, value, key=key)
    weights = auto.get_weights()
    layers = {}
    for mode in ("parallel", "hard"):
        layers[mode] = MonotonicAttention(units=4, mode=mode)
        layers[mode](query, value, key=key)
        layers[mode].set_weights(weights)
    for training in (True, False):
        assert_all_close(layers["parallel"](query, value, key=key, training=training),
                         auto(query, value, key=key, training=True), 1e-6, 1e-6, "parallel")
        assert_all_close(layers["hard"](query, value, key=key, training=training),
                         auto(query, value, key=key, training=False), 1e-6, 1e-6, "hard")


def test_sigmoid_noise_only_while_training_and_seeded():
    rng = np.random.default_rng(6)
    query, key, value = _inputs(rng)
    clean = MonotonicAttention(units=4)
    clean(query, value, key=key)
    noisy = MonotonicAttention(units=4, sigmoid_noise=1.0, seed=3)
    noisy(query, value, key=key)
    noisy.set_weights(clean.get_weights())
    trained = keras.ops.convert_to_numpy(noisy(query, value, key=key, training=True))
    assert np.all(np.isfinite(trained))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(
        clean(query, value, key=key, training=True)))
    assert_all_close(noisy(query, value, key=key), clean(query, value, key=key),
                     1e-6, 1e-6, "noise at inference")


def test_causal_mask_equals_explicit_attention_mask():
    rng = np.random.default_rng(7)
    query, key, value = _inputs(rng, t=4, s=6)
    layer = MonotonicAttention(units=4)
    causal = np.arange(6)[None, :] <= np.arange(4)[:, None] + 2
    mask = np.broadcast_to(causal, (2, 4, 6))
    for training in (True, False):
        assert_all_close(layer(query, value, key=key, use_causal_mask=True, training=training),
                         layer(query, value, key=key, attention_mask=mask, training=training),
                         1e-6, 1e-6, f"training={training}")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"score": "dot"}, ValueError, "score"),
        ({"units": 0}, ValueError, "units"),
        ({"score": "luong", "units": 4}, ValueError, "units"),
        ({"score": "luong", "normalize": True}, ValueError, "normalize"),
        ({"scale": True}, ValueError, "scale"),
        ({"sigmoid_noise": -1.0}, ValueError, "sigmoid_noise"),
        ({"sigmoid_noise": "high"}, TypeError, "sigmoid_noise"),
        ({"score_bias_init": None}, TypeError, "score_bias_init"),
        ({"mode": "recursive"}, ValueError, "mode"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        MonotonicAttention(**kwargs)


def test_previous_alignment_shape_error():
    x = np.zeros((2, 3, 4), "float32")
    with pytest.raises(ValueError, match="previous_alignment"):
        MonotonicAttention()(x, x, previous_alignment=np.zeros((2, 4), "float32"))
