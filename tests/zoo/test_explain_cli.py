"""`keras-attention explain` on the shipped checkpoints and a tiny forecaster."""

import pathlib
import re

import pytest

from tests.zoo.conftest import needs_checkpoint
from tests.zoo.forecaster.conftest import series_csv, write_tiny_checkpoint
from zoo import cli

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

STAMPS = pathlib.Path("/usr/share/tuxpaint/stamps")


def _png_size(path):
    with PIL.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@needs_checkpoint("translator_en_es")
@pytest.mark.parametrize("heads, size", [(False, (900, 300)), (True, (1200, 300))])
def test_explain_translator(tmp_path, capsys, cached_load, heads, size):
    out = tmp_path / "m.png"
    argv = ["explain", "translator_en_es", "Where is the library?", "--out", str(out)]
    assert cli.main(argv + (["--heads"] if heads else [])) == 0
    printed = capsys.readouterr().out
    assert f"written to {out}" in printed
    assert "biblioteca" in printed
    # 3 decoder layers (heads averaged) or the 4 heads of the last one, 300 px each.
    assert _png_size(out) == size


@needs_checkpoint("recommender_ml100k_sasrec")
def test_explain_recommender(tmp_path, capsys, cached_load, monkeypatch):
    import keras_attention.analysis
    from zoo.recommender import data

    # The plot names MovieLens items by title (read from the recbole wheel, faked here).
    titles = {"50": "Star Wars (1977)", "181": "Return of the Jedi (1983)"}
    monkeypatch.setattr(data, "movielens_titles", lambda: titles)
    plot, labels = keras_attention.analysis.plot_attention, []

    def recording_plot(*args, **kwargs):
        labels.append(kwargs["x_labels"])
        return plot(*args, **kwargs)

    monkeypatch.setattr(keras_attention.analysis, "plot_attention", recording_plot)
    out = tmp_path / "r.png"
    assert cli.main(["explain", "recommender_ml100k_sasrec", "50, 181,172", "--out",
                     str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 history item(s) in 2 block(s)" in printed
    assert labels == [["Star Wars (1977)", "Return of the Jedi (1983)", "172"]]
    assert _png_size(out) == (600, 300)  # one panel per block


@needs_checkpoint("captioner_tuxpaint_openclipart")
def test_explain_captioner(tmp_path, capsys, cached_load):
    if not STAMPS.is_dir():
        pytest.skip("Tux Paint stamps are not installed (apt-get install tuxpaint-stamps)")
    image = next(iter(sorted(STAMPS.rglob("*.png"))), None)
    if image is None:
        pytest.skip("no PNG stamp found")
    out = tmp_path / "c.png"
    assert cli.main(["explain", "captioner_tuxpaint_openclipart", str(image), "--out",
                     str(out)]) == 0
    printed = capsys.readouterr().out
    words = int(re.search(r"attention of (\d+) word", printed).group(1))
    # The captioner's overlay: the image and one panel per word, 5 per row, 200 px.
    panels = 1 + words
    columns = min(panels, 5)
    rows = -(-panels // columns)
    assert _png_size(out) == (columns * 200, rows * 200 + 40)


def test_explain_forecaster(tmp_path, capsys):
    directory = write_tiny_checkpoint(tmp_path / "forecaster_electricity")
    csv_path = series_csv(tmp_path / "history.csv", 60)
    out = tmp_path / "f.png"
    assert cli.main(["explain", "forecaster_electricity", str(csv_path), "--checkpoint",
                     str(directory), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "over 7 past patch(es) of 2 channel(s)" in printed
    assert _png_size(out) == (300, 300)  # one panel: block rows and rollout per channel


@needs_checkpoint("recommender_ml100k_sasrec")
def test_explain_recommender_unknown_item(tmp_path, capsys, cached_load):
    out = tmp_path / "r.png"
    assert cli.main(["explain", "recommender_ml100k_sasrec", "50,not_an_item", "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err
    assert "not in the catalogue" in err and "not_an_item" in err
    assert not out.exists()


def test_explain_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["explain", "translator_en_es", "Hello", "--checkpoint",
                     str(tmp_path / "none"), "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "python -m recipes.train_translator" in err
