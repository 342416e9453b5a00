import base64

import numpy as np
import pytest

from tests.zoo.captioner.helpers import (
    coloured_square,
    jpeg_bytes,
    png_bytes,
    tiny_captioner,
)
from zoo.serving import run_saved_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # With retrieval, as the shipped captioner: the datastore goes into the graph.
    # With caption endings, so the rule runs inside the graph too, and the copy
    # head's successor feature, as the shipped captioner.
    captioner = tiny_captioner(retrieval_neighbours=2, final_words=("cat", "apple", "pear"),
                               single_words=("cat",), copy_successors=True)
    # Make [END] unlikely so that the random model writes words.
    bias = captioner.parts.head.bias
    bias.assign(bias.numpy() - 4.0 * (np.arange(bias.shape[0]) == 3))
    # ... and mostly generate rather than copy (every retrieved caption ends in [END]).
    captioner.parts.copy.gate.bias.assign([4.0])
    path = tmp_path_factory.mktemp("captioner") / "savedmodel"
    captioner.export(path)
    rng = np.random.default_rng(0)
    files = [
        png_bytes(coloured_square((220, 20, 20), size=30)),
        png_bytes(rng.integers(0, 256, size=(17, 23, 4), dtype=np.uint8)),  # RGBA, not square
        jpeg_bytes(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)),
    ]
    return captioner, path, files


def test_serving_in_tensorflow_alone_equals_python(exported):
    captioner, path, files = exported
    expected = captioner.caption(files)
    assert all(expected)
    encoded = [base64.urlsafe_b64encode(f).decode("ascii") for f in files]
    outputs = run_saved_model(path, {"images": encoded}, signature="serving_base64")
    assert outputs["caption"] == expected


def test_serving_default_takes_raw_bytes(exported):
    import tensorflow as tf

    captioner, path, files = exported
    loaded = tf.saved_model.load(str(path))
    outputs = loaded.signatures["serving_default"](images=tf.constant(files))
    assert [c.decode() for c in outputs["caption"].numpy()] == captioner.caption(files)
