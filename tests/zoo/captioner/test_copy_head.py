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
