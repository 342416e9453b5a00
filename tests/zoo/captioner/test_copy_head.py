"""CopyHead: the pointer-generator output of the retrieval captioner."""

import numpy as np
import pytest
from keras import ops

from zoo.captioner.copy_head import CopyHead


def _inputs(seed=0, batch=2, steps=3, patches=4, words=5, dim=8, vocabulary=7):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(batch, steps, dim)).astype("float32")
    memory = rng.normal(size=(batch, patches + words, dim)).astype("float32")
    mask = np.ones((batch, patches + words), bool)
    mask[0, -2:] = False  # two [PAD] words in the first example
    ids = rng.integers(3, vocabulary, size=(batch, words)).astype("int32")
    ids[0, -2:] = 0
    ids[1, :2] = 5  # a repeated word: its copy weights add up
    logits = rng.normal(size=(batch, steps, vocabulary)).astype("float32")
    return hidden, memory, mask, ids, logits


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_matches_numpy_pointer_generator():
    hidden, memory, mask, ids, logits = _inputs()
    layer = CopyHead(num_patches=4)
    got = ops.convert_to_numpy(layer(hidden, memory, mask, ids, logits))
    wq, wk = (ops.convert_to_numpy(w) for w in (layer.query.kernel, layer.key.kernel))
    wg, bg = (ops.convert_to_numpy(w) for w in (layer.gate.kernel, layer.gate.bias))
    words = memory[:, 4:]
    scores = np.einsum("btd,brd->btr", hidden @ wq, words @ wk) / np.sqrt(8)
    scores = np.where(mask[:, None, 4:], scores, -np.inf)
    attention = _softmax(scores)  # (B, T, R)
    context = np.einsum("btr,brd->btd", attention, words)
    gate = 1.0 / (1.0 + np.exp(-(np.concatenate([hidden, context], -1) @ wg + bg)))
    copied = np.einsum("btr,brv->btv", attention, np.eye(7)[ids])
    expected = np.log(gate * _softmax(logits) + (1 - gate) * copied)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-5)
    # [PAD] (id 0) is never copied in the first example: only generated.
    np.testing.assert_allclose(np.exp(got[0, :, 0]), (gate * _softmax(logits))[0, :, 0],
                               rtol=1e-5)


def test_gate_extremes_give_pure_generation_and_pure_copying():
    hidden, memory, mask, ids, logits = _inputs(seed=1)
    layer = CopyHead(num_patches=4)
    layer(hidden, memory, mask, ids, logits)
    layer.gate.bias.assign([40.0])
    generated = ops.convert_to_numpy(layer(hidden, memory, mask, ids, logits))
    np.testing.assert_allclose(generated, np.log(_softmax(logits)), atol=1e-5)
    layer.gate.bias.assign([-40.0])
    copied = np.exp(ops.convert_to_numpy(layer(hidden, memory, mask, ids, logits)))
    never = np.ones((2, 7), bool)
    never[np.arange(2)[:, None], ids] = False
    never[0, 0] = True  # the [PAD] ids are masked
    assert np.all(copied.transpose(1, 0, 2)[:, never] < 1e-9)


def test_accepts_ids_per_neighbour_and_checks_sizes():
    hidden, memory, mask, ids, logits = _inputs()
    layer = CopyHead(num_patches=4)
    flat = ops.convert_to_numpy(layer(hidden, memory, mask, ids, logits))
    # Ids given per neighbour, (B, 1, 5), flatten to the same R = 5 words.
    nested = ops.convert_to_numpy(layer(hidden, memory, mask, ids[:, None], logits))
    np.testing.assert_allclose(nested, flat)
    with pytest.raises(ValueError, match="memory \\(B, 3 \\+ R, 8\\)"):
        CopyHead(num_patches=3)(hidden, memory, mask, ids, logits)
    with pytest.raises(ValueError, match="num_patches=-1"):
        CopyHead(num_patches=-1)


def _successor_inputs():
    """Two retrieved captions of 3 words per example (R = 6) and input tokens
    that match some retrieved words' predecessors."""
    hidden, memory, mask, _, logits = _inputs(words=6)
    ids = np.array([[4, 5, 3, 6, 4, 0],    # "4 5 [END]", "6 4 [PAD]"
                    [5, 6, 4, 5, 4, 3]], "int32")
    mask = np.concatenate([np.ones((2, 4), bool), ids != 0], axis=1)
    tokens = np.array([[2, 4, 6], [2, 5, 1]], "int32")  # [START] (2) first
    return hidden, memory, mask, ids, logits, tokens


def test_successors_by_hand():
    hidden, memory, mask, ids, logits, tokens = _successor_inputs()
    layer = CopyHead(num_patches=4, caption_length=3)
    follows = ops.convert_to_numpy(layer.successors(ids, tokens))
    # Example 0: [START] precedes words 0 and 3; "4" precedes word 1 and the
    # [PAD] word 5 (masked in the copy attention); "6" precedes word 4.
    np.testing.assert_array_equal(follows[0], [[1, 0, 0, 1, 0, 0],
                                               [0, 1, 0, 0, 0, 1],
                                               [0, 0, 0, 0, 1, 0]])
    # Example 1: "5" precedes words 1 and 4; no retrieved word follows "1".
    np.testing.assert_array_equal(follows[1], [[1, 0, 0, 1, 0, 0],
                                               [0, 1, 0, 0, 1, 0],
                                               [0, 0, 0, 0, 0, 0]])


def test_successor_feature_matches_numpy():
    hidden, memory, mask, ids, logits, tokens = _successor_inputs()
    layer = CopyHead(num_patches=4, caption_length=3)
    layer(hidden, memory, mask, ids, logits, tokens)
    layer.successor_bonus.assign(1.7)
    got = ops.convert_to_numpy(layer(hidden, memory, mask, ids, logits, tokens))
    follows = ops.convert_to_numpy(layer.successors(ids, tokens))
    wq, wk = (ops.convert_to_numpy(w) for w in (layer.query.kernel, layer.key.kernel))
    wg, bg = (ops.convert_to_numpy(w) for w in (layer.gate.kernel, layer.gate.bias))
    assert wg.shape == (2 * 8 + 1, 1)
    words = memory[:, 4:]
    scores = np.einsum("btd,brd->btr", hidden @ wq, words @ wk) / np.sqrt(8) + 1.7 * follows
    attention = _softmax(np.where(mask[:, None, 4:], scores, -np.inf))
    context = np.einsum("btr,brd->btd", attention, words)
    on_successors = (attention * follows).sum(-1, keepdims=True)
    gate = 1.0 / (1.0 + np.exp(-(np.concatenate([hidden, context, on_successors], -1) @ wg
                                 + bg)))
    copied = np.einsum("btr,brv->btv", attention, np.eye(7)[ids])
    expected = np.log(gate * _softmax(logits) + (1 - gate) * copied)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_large_successor_bonus_copies_the_next_word():
    hidden, memory, mask, ids, logits, tokens = _successor_inputs()
    layer = CopyHead(num_patches=4, caption_length=3)
    layer(hidden, memory, mask, ids, logits, tokens)
    layer.query.kernel.assign(np.zeros((8, 8), "float32"))  # equal scores otherwise
    layer.successor_bonus.assign(30.0)
    layer.gate.bias.assign([-40.0])  # copy only
    probs = np.exp(ops.convert_to_numpy(layer(hidden, memory, mask, ids, logits, tokens)))
    # Example 0: after [START] the first words "4" and "6" share the copy;
    # after "4" its successor "5"; after "6" its successor "4".
    np.testing.assert_allclose(probs[0, 0, [4, 6]], [0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(probs[0, 1, 5], 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[0, 2, 4], 1.0, atol=1e-5)
    # Example 1: after "5" both successors are "6" and "4"; after "1", which
    # no retrieved word follows, the copy is spread over all six words.
    np.testing.assert_allclose(probs[1, 1, [6, 4]], [0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(probs[1, 2, [3, 4, 5, 6]], [1 / 6, 2 / 6, 2 / 6, 1 / 6],
                               atol=1e-5)


def test_successor_config_and_errors():
    hidden, memory, mask, ids, logits, tokens = _successor_inputs()
    layer = CopyHead(num_patches=4, caption_length=3, name="copy")
    config = layer.get_config()
    assert config["caption_length"] == 3 and config["num_patches"] == 4
    assert CopyHead.from_config(config).caption_length == 3
    assert CopyHead(num_patches=4).get_config()["caption_length"] is None
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="caption_length"):
            CopyHead(num_patches=4, caption_length=bad)
    with pytest.raises(ValueError, match="needs `tokens`"):
        CopyHead(num_patches=4, caption_length=3)(hidden, memory, mask, ids, logits)
    with pytest.raises(ValueError, match="K \\* 4"):
        CopyHead(num_patches=4, caption_length=4)(hidden, memory, mask, ids, logits, tokens)
    # Without caption_length the tokens are ignored.
    plain = CopyHead(num_patches=4)
    np.testing.assert_allclose(
        ops.convert_to_numpy(plain(hidden, memory, mask, ids, logits, tokens)),
        ops.convert_to_numpy(plain(hidden, memory, mask, ids, logits)))
