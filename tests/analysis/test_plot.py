import numpy as np
import pytest
from PIL import Image

from keras_attention.analysis import plot_attention

pytest.importorskip("matplotlib")


def _image_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def _maps(*shape):
    rng = np.random.default_rng(0)
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])


def test_single_map_with_tokens(tmp_path):
    path = plot_attention(_maps(4, 4), x_labels=["the", "cat", "sat", "."],
                          path=tmp_path / "one.png", title="one map")
    assert path == str(tmp_path / "one.png")
    assert _image_size(path) == (300, 300)


def test_one_panel_per_head(tmp_path):
    path = plot_attention(_maps(3, 5, 6), x_labels=list("abcdef"), y_labels=list("vwxyz"),
                          path=str(tmp_path / "heads.png"))
    assert _image_size(path) == (900, 300)  # 3 columns, 1 row


def test_one_panel_per_layer_on_a_grid(tmp_path):
    layers = [_maps(1, 2, 4, 4) for _ in range(5)]  # batch of one, heads averaged
    path = plot_attention(layers, path=tmp_path / "layers.png")
    assert _image_size(path) == (1200, 600)  # 4 columns, 2 rows


def test_max_panels_panel_size_and_dpi(tmp_path):
    path = plot_attention(_maps(6, 3, 3), path=tmp_path / "few.png", max_panels=2,
                          panel_size=2.0, dpi=50)
    assert _image_size(path) == (200, 100)


@pytest.mark.parametrize(
    "weights, kwargs, error, match",
    [
        (_maps(4, 4), {"x_labels": ["a"]}, ValueError, "x_labels"),
        (_maps(4, 5), {"y_labels": ["a", "b"]}, ValueError, "y_labels"),
        (_maps(2, 1, 4, 4), {}, ValueError, "shape"),
        ([_maps(2, 1, 4, 4)], {}, ValueError, "select one item"),
        ([_maps(4, 4), _maps(3, 3)], {}, ValueError, "same"),
        ([], {}, ValueError, "empty"),
        (_maps(4,), {}, ValueError, "shape"),
        (_maps(4, 4), {"max_panels": 0}, ValueError, "max_panels"),
        (_maps(4, 4), {"panel_size": -1}, ValueError, "panel_size"),
        (_maps(4, 4), {"path": 3}, TypeError, "path"),
    ],
)
def test_errors(tmp_path, weights, kwargs, error, match):
    kwargs.setdefault("path", tmp_path / "bad.png")
    with pytest.raises(error, match=match):
        plot_attention(weights, **kwargs)
    assert not (tmp_path / "bad.png").exists()
