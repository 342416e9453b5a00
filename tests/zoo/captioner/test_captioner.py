import itertools

import numpy as np
import pytest
from keras import ops

from tests.zoo.captioner.helpers import (
    assert_ends_like_training,
    biased_captioner,
    coloured_square,
    datastore_images,
    ending_captioner,
    png_bytes,
    tiny_captioner,
)
from zoo.captioner.backbone import build_backbone
from zoo.captioner.captioner import Captioner
from zoo.captioner.decoding import beam_search
from zoo.captioner.vocabulary import Vocabulary


@pytest.fixture(scope="module", params=[(0, False), (2, False), (2, True)],
                ids=["plain", "retrieval", "successors"])
def captioner(request):
    """A tiny captioner per kind (without retrieval, with 2 retrieved captions,
    and with the copy head's successor feature), shared by the module so its
    decoding functions trace once."""
    neighbours, successors = request.param
    return tiny_captioner(retrieval_neighbours=neighbours, copy_successors=successors)


def _inputs(captioner, images, tokens):
    inputs = {"images": np.asarray(images, "float32"), "tokens": np.asarray(tokens, "int32")}
    if captioner.parts.retrieval is not None:
        inputs["exclude"] = np.full((len(inputs["images"]),), -1, "int32")
    return inputs


def _images(count=2, size=16, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, size, size, 3)).astype("float32")


def _log_probs(captioner, image, tokens, block_repeats=True):
    """Teacher-forced log-probabilities `(len(tokens), V)` without the cache; row i
    is the distribution after `tokens[i]`, which is banned there with
    `block_repeats`."""
    logits = ops.convert_to_numpy(captioner.backbone(_inputs(captioner, image[None],
                                                             [tokens])))[0]
    for banned in (Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.unk_id):
        logits[:, banned] = -1e9
    if block_repeats:
        logits[np.arange(len(tokens)), tokens] = -1e9
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                             keepdims=True)) \
        - logits.max(-1, keepdims=True)


@pytest.mark.parametrize("block_repeats", [True, False])
def test_greedy_with_cache_equals_recomputation(captioner, block_repeats):
    images = _images(3)
    cached = ops.convert_to_numpy(beam_search(captioner.parts, images, beam_width=1,
                                              block_repeats=block_repeats))
    for image, row in zip(images, cached):
        tokens = [Vocabulary.start_id]
        expected = []
        for _ in range(captioner.parts.max_length):
            next_id = int(np.argmax(_log_probs(captioner, image, tokens, block_repeats)[-1]))
            expected.append(next_id)
            if next_id == Vocabulary.end_id:
                break
            tokens.append(next_id)
        expected += [Vocabulary.pad_id] * (len(row) - len(expected))
        assert row.tolist() == expected


def test_block_repeats_stops_a_stuttering_model():
    captioner, red = biased_captioner("red")  # "red" beats [END] too
    images = _images(2)
    for width in (1, 3):
        stutter = ops.convert_to_numpy(beam_search(captioner.parts, images, width,
                                                   block_repeats=False))
        assert (stutter == red).all(), "without the rule the model repeats 'red'"
        rows = ops.convert_to_numpy(beam_search(captioner.parts, images, width))
        for row in rows:
            words = row[: list(row).index(Vocabulary.end_id)] if Vocabulary.end_id in row \
                else row
            assert len(words) and words[0] == red
            assert all(a != b for a, b in zip(words, words[1:])), row


def test_captions_end_only_where_training_captions_end():
    captioner = ending_captioner()
    images = _images(4)
    vocabulary = captioner.vocabulary
    for width in (1, 3):
        empty = beam_search(captioner.parts, images, width)
        assert (ops.convert_to_numpy(empty)[:, 0] == Vocabulary.end_id).all()
        assert_ends_like_training(vocabulary, ops.convert_to_numpy(
            beam_search(captioner.parts, images, width, endings=captioner.endings)))
    # The captioner applies the rule itself, and decodes without it once
    # `endings` is None (its traced search reads the current setting).
    assert captioner.caption_pixels(_images(2)) == [
        vocabulary.decode(r) for r in ops.convert_to_numpy(
            beam_search(captioner.parts, _images(2), captioner.beam_width,
                        endings=captioner.endings))]
    captioner.endings = None
    assert captioner.caption_pixels(_images(2)) == ["", ""]


def test_wide_beam_is_exhaustive_search():
    # 2 words + [END] can follow each step; with 3 steps there are 3 + 9 = 12
    # live prefixes at most, so 16 beams search everything: the result must be
    # the best sequence under the same length normalisation, found by brute force.
    captioner = tiny_captioner(vocabulary_words=("red", "cat"))
    parts, alpha = captioner.parts, 0.6
    image = _images(1, seed=3)
    got = ops.convert_to_numpy(beam_search(parts, image, beam_width=16, length_penalty=alpha,
                                           max_length=3))[0].tolist()
    words = (4, 5)
    candidates = []
    for k in range(3):
        candidates += [(*p, Vocabulary.end_id) for p in itertools.product(words, repeat=k)]
    candidates += list(itertools.product(words, repeat=3))
    # No word twice in a row (`block_repeats`, the default).
    candidates = [c for c in candidates if all(a != b for a, b in zip(c, c[1:]))]
    best, best_score = None, -np.inf
    for sequence in candidates:
        log_probs = _log_probs(captioner, image[0], [Vocabulary.start_id, *sequence[:-1]])
        total = sum(log_probs[i, token] for i, token in enumerate(sequence))
        score = total / ((5.0 + len(sequence)) / 6.0) ** alpha
        if score > best_score:
            best, best_score = sequence, score
    assert got == list(best) + [Vocabulary.pad_id] * (3 - len(best))


def test_caption_accepts_paths_bytes_and_arrays(tmp_path, captioner):
    square = coloured_square((200, 10, 10), size=20)
    path = tmp_path / "square.png"
    path.write_bytes(png_bytes(square))
    from_path = captioner.caption(str(path))
    assert captioner.caption(png_bytes(square)) == from_path
    assert captioner.caption(square) == from_path
    assert captioner.caption(square.astype("float32") / 255.0) == from_path
    batch = captioner.caption([path, square, np.stack([square])[0]])
    assert batch == from_path * 3
    assert all(w in captioner.vocabulary.words for w in from_path[0].split())
    assert captioner.caption(np.stack([square, square])) == from_path * 2


def test_caption_greedy_and_beam_widths(captioner):
    pixels = _images(2)
    greedy = captioner.caption_pixels(pixels, beam_width=1)
    assert len(greedy) == 2 and all(isinstance(c, str) for c in greedy)
    assert len(captioner.caption_pixels(pixels, beam_width=2, batch_size=1)) == 2


@pytest.mark.parametrize("image, error, match", [
    (np.zeros((4, 4)), ValueError, "shape=\\(4, 4\\)"),
    (np.zeros((4, 4, 2), "uint8"), ValueError, "3 or 4"),
    (np.zeros((4, 4, 3), "int64"), ValueError, "dtype=int64"),
    ("/nonexistent/cat.png", FileNotFoundError, "cat.png"),
    (b"garbage", ValueError, "must be a PNG or JPEG image but it is not an image file"),
    ([], ValueError, "must not be empty"),
])
def test_caption_bad_images(image, error, match, captioner):
    with pytest.raises(error, match=match):
        captioner.caption(image)


def test_bad_arguments(captioner):
    with pytest.raises(ValueError, match="beam_width=0"):
        captioner.caption(_images(1)[0], beam_width=0)
    with pytest.raises(ValueError, match="layer=5"):
        captioner.attention_maps(_images(1)[0], layer=5)
    with pytest.raises(ValueError, match="`image` must be one image"):
        captioner.attention_maps(_images(2))
    with pytest.raises(ValueError, match="vocabulary has 6"):
        Captioner(captioner.backbone, Vocabulary(["a", "b"]))
    with pytest.raises(TypeError, match="Vocabulary"):
        Captioner(captioner.backbone, ["a"])


def test_attention_maps(captioner):
    image = _images(1)[0]
    result = captioner.attention_maps(image, beam_width=1)
    words = result["words"]
    assert result["caption"] == " ".join(words) == captioner.caption(image, beam_width=1)[0]
    assert result["maps"].shape == (len(words), 4, 4)
    np.testing.assert_allclose(result["maps"].sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert result["image"].shape == (16, 16, 3)
    mean = captioner.attention_maps(image, beam_width=1, layer="mean")
    assert mean["maps"].shape == result["maps"].shape
    if captioner.parts.retrieval is None:
        assert "neighbours" not in result
        return
    assert result["retrieved_share"].shape == (len(words),)
    assert np.all((result["retrieved_share"] >= 0) & (result["retrieved_share"] <= 1))
    captions = [c for c, _ in result["neighbours"]]
    similarity = [s for _, s in result["neighbours"]]
    assert len(captions) == 2 and similarity[0] >= similarity[1]
    assert set(captions) <= {"red cat", "green apple", "blue pear", "red apple", "cat",
                             "pear pear"}


def test_retrieval_finds_a_datastore_image_itself():
    captioner = tiny_captioner(retrieval_neighbours=2)
    images = datastore_images()
    result = captioner.attention_maps(images[3])
    assert result["neighbours"][0][0] == "red apple"  # "a" is not in the vocabulary
    assert result["neighbours"][0][1] == pytest.approx(1.0, abs=1e-5)


def test_image_features(captioner):
    assert captioner.image_features(_images(3), batch_size=2).shape == (3, 16)


def test_build_backbone_checks_sizes():
    with pytest.raises(ValueError, match="patch_size=6"):
        build_backbone(10, image_size=24, patch_size=6)
    with pytest.raises(ValueError, match="image_size=20"):
        build_backbone(10, image_size=20, patch_size=8)
    with pytest.raises(ValueError, match="hidden_dim=30"):
        build_backbone(10, hidden_dim=30, num_heads=3)


def test_backbone_under_xla_matches_eager(captioner):
    inputs = _inputs(captioner, _images(2), [[2, 4, 5], [2, 6, 3]])
    eager = ops.convert_to_numpy(captioner.backbone(inputs))
    model = captioner.backbone
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict_on_batch(inputs), eager, atol=1e-5)
