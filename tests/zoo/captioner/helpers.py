"""Helpers of the captioner tests: tiny images, SVG text, a tiny random captioner."""

import pathlib

import numpy as np
import pytest

TUXPAINT_ROOT = pathlib.Path("/usr/share/tuxpaint/stamps")

requires_stamps = pytest.mark.skipif(
    not TUXPAINT_ROOT.is_dir(),
    reason="needs the Tux Paint stamps: run .ci/install_caption_data "
    "(apt-get install tuxpaint-stamps-default)",
)


def png_bytes(array):
    """Encoded PNG of a uint8 `(H, W, 3|4)` array."""
    import tensorflow as tf

    return tf.io.encode_png(np.asarray(array, dtype="uint8")).numpy()


def jpeg_bytes(array):
    import tensorflow as tf

    return tf.io.encode_jpeg(np.asarray(array, dtype="uint8"), quality=100).numpy()


def coloured_square(colour, size=24, background=(255, 255, 255)):
    """An RGB image: a centred square of `colour` on `background`."""
    image = np.empty((size, size, 3), dtype="uint8")
    image[...] = background
    q = size // 4
    image[q:-q, q:-q] = colour
    return image


SVG_TEMPLATE = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     xmlns:cc="http://creativecommons.org/ns#" width="40" height="20">
  <metadata><rdf:RDF><cc:Work>
    <dc:title>{title}</dc:title>{description}
  </cc:Work></rdf:RDF></metadata>
  <rect x="0" y="0" width="40" height="20" fill="#ff0000"/>
</svg>
"""


def svg_text(title, description=None):
    extra = f"\n    <dc:description>{description}</dc:description>" if description else ""
    return SVG_TEMPLATE.format(title=title, description=extra)


WORDS = frozenset(
    ["a", "an", "the", "red", "green", "blue", "cat", "apple", "pear", "box", "dog", "flag", "of", "naval", "semaphore", "guitar", "acoustic", "star", "map", "australia", "victoria", "button", "round", "with"]
)


def tiny_captioner(vocabulary_words=("red", "green", "blue", "cat", "apple", "pear"),
                   image_size=16, beam_width=3, seed=0, retrieval_neighbours=0,
                   final_words=None, single_words=None, copy_successors=False):
    """A randomly initialised small captioner (float32).

    With `retrieval_neighbours`, its datastore holds 6 random images whose
    captions are `DATASTORE_CAPTIONS` (and `copy_successors` goes to the
    backbone). `final_words` and `single_words` give
    the vocabulary its caption endings (see `Vocabulary`).
    """
    import keras

    from zoo.captioner.backbone import build_backbone
    from zoo.captioner.captioner import Captioner
    from zoo.captioner.vocabulary import Vocabulary

    keras.utils.set_random_seed(seed)
    vocabulary = Vocabulary(list(vocabulary_words), final_words, single_words)
    length = 6
    backbone = build_backbone(len(vocabulary), image_size=image_size, patch_size=4,
                              hidden_dim=16, num_heads=2, intermediate_dim=16,
                              encoder_layers=1, decoder_layers=2, max_caption_length=length,
                              dropout=0.0, retrieval_neighbours=retrieval_neighbours,
                              fusion_layers=1 if retrieval_neighbours else 0,
                              datastore_size=len(DATASTORE_CAPTIONS),
                              copy_successors=copy_successors)
    if retrieval_neighbours:
        images = datastore_images(image_size)
        ids = np.stack([vocabulary.encode(c, length + 1)[1:] for c in DATASTORE_CAPTIONS])
        backbone.get_layer("retrieval").set_datastore(images, ids)
    return Captioner(backbone, vocabulary, beam_width=beam_width, length_penalty=0.6)


DATASTORE_CAPTIONS = ("red cat", "green apple", "blue pear", "a red apple", "cat", "pear pear")


def datastore_images(image_size=16):
    """The 6 uint8 images of the tiny captioner's datastore."""
    return np.random.default_rng(7).integers(0, 256, size=(6, image_size, image_size, 3),
                                             dtype=np.uint8)


def biased_captioner(word="red", **kwargs):
    """A tiny captioner (no retrieval; `kwargs` go to `tiny_captioner`) whose
    head bias makes `word` (or a token such as "[END]") beat every other token
    at every step; returns it and the word's id."""
    from keras import ops

    captioner = tiny_captioner(retrieval_neighbours=0, **kwargs)
    head = captioner.parts.head
    bias = ops.convert_to_numpy(head.bias).copy()
    word_id = captioner.vocabulary.words.index(word)
    bias[word_id] += 50.0
    head.bias.assign(bias)
    return captioner, word_id


def ending_captioner():
    """`biased_captioner("[END]")` whose vocabulary lets captions end after "cat"
    or "pear", and lets only "cat" stand alone: without the ending rule every
    caption is empty."""
    captioner, _ = biased_captioner("[END]", final_words=("cat", "pear"),
                                    single_words=("cat",))
    return captioner


def assert_ends_like_training(vocabulary, rows):
    """Every row of ids of `ending_captioner` holds words and, where it ends by
    `[END]` rather than the length limit, ends on "cat" or "pear", with "cat"
    the only one-word caption."""
    for row in rows:
        words = vocabulary.decode(row).split()
        assert words, row
        if vocabulary.end_id in row:
            assert words[-1] in ("cat", "pear"), row
            assert len(words) > 1 or words == ["cat"], row
