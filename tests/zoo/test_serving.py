import pytest

from zoo import serving

tf = pytest.importorskip("tensorflow")


class _Tiny(tf.Module):
    """Upper-cases strings and computes 2 * x + 1, with TensorFlow only."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None, 2], tf.float32, name="x"),
        ]
    )
    def serve(self, text, x):
        return {"upper": tf.strings.upper(text, encoding="utf-8"), "y": 2.0 * x + 1.0}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_saved_model")
    module = _Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_run_saved_model(saved_model):
    outputs = serving.run_saved_model(
        saved_model,
        {"text": ["café", "tea"], "x": ([[1, 2], [0.5, -3]], "float32")},
    )
    assert outputs == {"upper": ["CAFÉ", "TEA"], "y": [[3.0, 5.0], [2.0, -5.0]]}


def test_failure_in_process_raises(saved_model):
    with pytest.raises(RuntimeError) as info:
        serving.run_saved_model(saved_model, {"text": ["a"], "x": [[1.0, 2.0]]}, signature="nope")
    message = str(info.value)
    assert str(saved_model) in message
    assert "no signature 'nope'" in message
    assert "serving_default" in message


def test_argument_errors(tmp_path, saved_model):
    with pytest.raises(FileNotFoundError, match="SavedModel folder not found"):
        serving.run_saved_model(tmp_path / "missing", {"x": [1.0]})
    with pytest.raises(TypeError, match="`inputs` must be a dict"):
        serving.run_saved_model(saved_model, [1.0])
    with pytest.raises(ValueError, match=r"\(values, dtype_name\).*Received: x="):
        serving.run_saved_model(saved_model, {"x": (1.0, 2.0)})
