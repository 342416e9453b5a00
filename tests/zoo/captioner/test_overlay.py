import numpy as np

from zoo.captioner.overlay import draw_attention_overlay, upsample_map


def test_upsample_map_bilinear_and_peak_normalised():
    grid = np.array([[0.0, 1.0], [0.0, 0.0]])
    up = upsample_map(grid, 4)
    assert up.shape == (4, 4)
    assert up.max() == 1.0 and up[0, 3] == 1.0 and up[3, 0] == 0.0
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
    assert upsample_map(np.zeros((2, 2)), 3).max() == 0.0


def test_draw_attention_overlay(tmp_path):
    result = {"caption": "a red cat", "words": ["a", "red", "cat"],
              "maps": np.full((3, 4, 4), 1 / 16, "float32"),
              "image": np.ones((16, 16, 3), "float32")}
    path = draw_attention_overlay(result, tmp_path / "overlay.png", columns=2)
    assert (tmp_path / "overlay.png").read_bytes().startswith(b"\x89PNG")
    assert path == tmp_path / "overlay.png"


def test_draw_attention_overlay_with_retrieval(tmp_path):
    result = {"caption": "red cat", "words": ["red", "cat"],
              "maps": np.full((2, 4, 4), 1 / 16, "float32"),
              "image": np.ones((16, 16, 3), "float32"),
              "neighbours": [("red cat", 0.97), ("blue cat", 0.6)],
              "retrieved_share": np.array([0.62, 0.1], "float32")}
    draw_attention_overlay(result, tmp_path / "overlay.png")
    from PIL import Image

    with Image.open(tmp_path / "overlay.png") as image:
        assert image.size == (600, 240)
