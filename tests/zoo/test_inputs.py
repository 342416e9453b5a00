"""The shared input checks, and the task methods of the shipped models refusing empty,
wrong-type, wrong-shape and corrupt inputs with one-line errors that name the input."""

import io

import numpy as np
import pytest

from tests.zoo.conftest import load_once, needs_checkpoint
from zoo import inputs


def _png(size=(8, 8), fmt="PNG"):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("call, error, message", [
    (lambda: inputs.check_text(" \t\n", "x"), ValueError,
     r"^`x` must not be empty or whitespace only. Received: x=' \\t\\n'$"),
    (lambda: inputs.check_text(3, "x"), TypeError,
     "^`x` must be a string. Received: x=3 of type int$"),
    (lambda: inputs.check_texts("one", "xs"), TypeError, "list of strings, not one value"),
    (lambda: inputs.check_texts(None, "xs"), TypeError, "Received: xs=None"),
    (lambda: inputs.check_texts([], "xs"), ValueError,
     r"^`xs` must not be empty. Received: xs=\[\]$"),
    (lambda: inputs.check_texts(["a", b"b"], "xs"), TypeError, r"`xs\[1\]` must be a string"),
    (lambda: inputs.check_file(3, "f"), TypeError, "`f` must be a file path. Received: f=3"),
    (lambda: inputs.check_file("/nowhere/x.png", "f", "image file"), FileNotFoundError,
     "^`f` must be an existing image file; there is none. Received: f='/nowhere/x.png'$"),
    (lambda: inputs.check_output_path("", "--out"), ValueError, "`--out` must not be empty"),
    (lambda: inputs.check_output_path("m.jpg", "--out", ".png"), ValueError,
     "^`--out` must be a .png file. Received: --out='m.jpg'$"),
    (lambda: inputs.check_output_path("/nowhere/m.png", "--out"), FileNotFoundError,
     "^The folder of `--out` does not exist: /nowhere. Received: --out='/nowhere/m.png'$"),
    (lambda: inputs.check_image_bytes(b"", "im"), ValueError,
     "^`im` must be a PNG or JPEG image but it is empty. Received: 0 bytes starting b''$"),
    (lambda: inputs.check_image_bytes(b"<svg/>", "im"), ValueError, "it is not an image file"),
    (lambda: inputs.check_image_bytes(_png(fmt="GIF"), "im"), ValueError, "it is a GIF image"),
    (lambda: inputs.check_image_bytes(_png((64, 64))[:60], "im"), ValueError,
     "truncated or corrupt|not an image file"),
])
def test_checks_raise_one_line(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_checks_return_what_they_accept(tmp_path):
    assert inputs.check_texts(("a", "b c"), "xs") == ["a", "b c"]
    png, jpeg = _png(), _png(fmt="JPEG")
    assert inputs.check_image_bytes(png, "im") == png
    assert inputs.check_image_bytes(bytearray(jpeg), "im") == jpeg
    (tmp_path / "a.png").write_bytes(png)
    assert inputs.check_image(tmp_path / "a.png", "im") == png
    assert inputs.check_output_path(tmp_path / "b.png", "--out", ".png") == str(tmp_path / "b.png")


TRANSLATOR, CAPTIONER = "translator_en_es", "captioner_tuxpaint_openclipart"
RECOMMENDER, FORECASTER = "recommender_ml100k_sasrec", "forecaster_electricity"


def _case(model, call, error, message):
    return pytest.param(model, call, error, message, marks=needs_checkpoint(model))


METHOD_CASES = [
    _case(TRANSLATOR, lambda m: m.translate([]), ValueError, r"`sentences` must not be empty"),
    _case(TRANSLATOR, lambda m: m.translate(None), TypeError, "Received: sentences=None"),
    _case(TRANSLATOR, lambda m: m.translate(["Hi.", " "]), ValueError,
          r"`sentences\[1\]` must not be empty or whitespace only"),
    _case(TRANSLATOR, lambda m: m.translate(["\u4f60\u597d"]), ValueError,
          r"`sentences\[0\]` has no word or subword the translator knows"),
    _case(TRANSLATOR, lambda m: m.translate(["Hi."], beam_size=0), ValueError,
          "`beam_size` must be a positive integer. Received: beam_size=0"),
    _case(TRANSLATOR, lambda m: m.attention_maps(""), ValueError, "`sentence` must not be empty"),
    _case(TRANSLATOR, lambda m: m.attention_maps(["Hi."]), TypeError,
          "`sentence` must be a string"),
    _case(CAPTIONER, lambda m: m.caption(""), ValueError, "`images` must not be empty"),
    _case(CAPTIONER, lambda m: m.caption(["  "]), ValueError, r"`images\[0\]` must not be empty"),
    _case(CAPTIONER, lambda m: m.caption(b""), ValueError, "`images` must be a PNG or JPEG "
          "image but it is empty"),
    _case(CAPTIONER, lambda m: m.caption([_png(), b"GIF89a"]), ValueError,
          r"`images\[1\]` must be a PNG or JPEG image but it is not an image file"),
    _case(CAPTIONER, lambda m: m.caption(np.zeros((4, 4))), ValueError,
          r"`images` must be an image file, encoded bytes or an array of shape .*shape=\(4, 4\)"),
    _case(CAPTIONER, lambda m: m.caption(None), ValueError, r"`images` .* shape=\(\)"),
    _case(CAPTIONER, lambda m: m.attention_maps(b"x"), ValueError, "`image` must be a PNG"),
    _case(CAPTIONER, lambda m: m.attention_maps([_png(), _png()]), ValueError,
          "`image` must be one image. Received: 2 images"),
    _case(RECOMMENDER, lambda m: m.recommend([]), ValueError, "at least one known item id"),
    _case(RECOMMENDER, lambda m: m.recommend("50,181"), TypeError, "list of item ids"),
    _case(RECOMMENDER, lambda m: m.recommend(["50"], user_features={"age": 31}), ValueError,
          "takes no user features.*Received: user_features={'age': 31}"),
    _case(RECOMMENDER, lambda m: m.recommend_batch([["50"]], user_features=[{"age": 31}]),
          ValueError, "takes no user features"),
    _case(RECOMMENDER, lambda m: m.explain(["50"], user_features={"age": 31}), ValueError,
          "takes no user features"),
    _case(FORECASTER, lambda m: m.forecast("1,2,3"), TypeError,
          "`history` must be an array of numbers. Received: history='1,2,3'"),
    _case(FORECASTER, lambda m: m.forecast([["a"]] * 400), TypeError,
          "`history` must be an array of numbers"),
    _case(FORECASTER, lambda m: m.forecast([]), ValueError, "at least 336 time steps"),
    _case(FORECASTER, lambda m: m.forecast(np.ones((400, 2))), ValueError, r"shape=\(400, 2\)"),
    _case(FORECASTER, lambda m: m.forecast(np.ones((400, 1)), end_time=" "), ValueError,
          "`end_time` must be"),
]


@pytest.mark.parametrize("model, call, error, message", METHOD_CASES)
def test_task_methods_refuse_bad_input(model, call, error, message):
    with pytest.raises(error, match=message) as info:
        call(load_once(model))
    assert "\n" not in str(info.value) and "Received: " in str(info.value)
